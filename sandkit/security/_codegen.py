"""Compile a SeccompProfile to classic BPF over struct seccomp_data.

Layout of the program:

    load arch;  != AUDIT_ARCH of the table  -> KILL_PROCESS   (numbers below mean nothing there)
    load nr;    >= 0x40000000 (x86_64)      -> refuse         (x32 ABI: same arch, other numbers)
                >  highest known number     -> ENOSYS         (only when the default is an errno)
    binary search over number intervals that share an outcome; a leaf is either one `ret`
    or the argument checks of one syscall's rules, ending in its own `ret`s.

Every leaf returns, so the accumulator only ever holds the syscall number inside the search tree.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence

import attrs

from . import bpf, syscalls
from .seccomp import Action, Arg, Op, SeccompProfile

_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16
X32_SYSCALL_BIT = 0x40000000


@attrs.frozen
class _Block:
    """The rules of one syscall that has argument conditions (unique per number)."""

    nr: int
    rules: tuple[tuple[tuple[Arg, ...], Action], ...]


Outcome = Action | _Block


def compile_profile(profile: SeccompProfile, arch: str) -> bytes:
    table = syscalls.table(arch)
    asm = bpf.Assembler()
    default = profile.default_action
    refuse = default if default.refuses else Action.errno(errno.EPERM)

    ok = asm.new_label()
    bad = asm.new_label()
    asm.load(_OFF_ARCH)
    asm.jump(bpf.JEQ, syscalls.AUDIT_ARCH[arch], ok, bad)
    asm.place(bad)
    asm.ret(Action("kill_process").encode())
    asm.place(ok)
    asm.load(_OFF_NR)
    if arch == "x86_64":
        # x32 syscalls arrive with AUDIT_ARCH_X86_64 too, under other numbers: a rule for
        # keyctl (250) would not see x32 keyctl (0x40000000 | 250).
        _branch_ret(asm, bpf.JGE, X32_SYSCALL_BIT, refuse)
    top = max(table.values())
    if default.kind == "errno":
        _branch_ret(asm, bpf.JGT, top, Action.errno(errno.ENOSYS))
    _emit_tree(asm, _intervals(_outcomes(profile, table), default, top), default)
    program = asm.assemble()
    bpf.validate(program)
    return bpf.pack(program)


def _branch_ret(asm: bpf.Assembler, code: int, k: int, action: Action) -> None:
    hit, miss = asm.new_label(), asm.new_label()
    asm.jump(code, k, hit, miss)
    asm.place(hit)
    asm.ret(action.encode())
    asm.place(miss)


def _outcomes(profile: SeccompProfile, table: dict[str, int]) -> dict[int, Outcome]:
    """Syscall number -> what happens to it. Names this architecture lacks are skipped (profiles
    list e.g. 32-bit-only calls). Rules after an unconditional one for a syscall can never match."""
    per_nr: dict[int, list[tuple[tuple[Arg, ...], Action]]] = {}
    for rule in profile.rules:
        for name in rule.names:
            nr = table.get(name)
            if nr is None:
                continue
            rules = per_nr.setdefault(nr, [])
            if rules and not rules[-1][0]:
                continue  # already decided unconditionally
            rules.append((rule.args, rule.action))
    out: dict[int, Outcome] = {}
    for nr, rules in per_nr.items():
        if len(rules) == 1 and not rules[0][0]:
            out[nr] = rules[0][1]
        else:
            out[nr] = _Block(nr, tuple(rules))
    return out


def _intervals(
    outcomes: dict[int, Outcome], default: Action, top: int
) -> list[tuple[int, Outcome]]:
    """[(first number, outcome)], merging neighbours with the same plain action; the last
    interval runs to 2**32 - 1."""
    out: list[tuple[int, Outcome]] = []
    for nr in range(top + 2):
        outcome = outcomes.get(nr, default)
        if out and isinstance(outcome, Action) and out[-1][1] == outcome:
            continue
        out.append((nr, outcome))
    return out


def _emit_tree(
    asm: bpf.Assembler, intervals: Sequence[tuple[int, Outcome]], default: Action
) -> None:
    if len(intervals) == 1:
        _emit_outcome(asm, intervals[0][1], default)
        return
    mid = len(intervals) // 2
    left, right = asm.new_label(), asm.new_label()
    asm.jump(bpf.JGE, intervals[mid][0], right, left)
    asm.place(left)
    _emit_tree(asm, intervals[:mid], default)
    asm.place(right)
    _emit_tree(asm, intervals[mid:], default)


def _emit_outcome(asm: bpf.Assembler, outcome: Outcome, default: Action) -> None:
    if isinstance(outcome, Action):
        asm.ret(outcome.encode())
        return
    for args, action in outcome.rules:
        next_rule = asm.new_label()
        for arg in args:
            passed = asm.new_label()
            _emit_arg(asm, arg, passed, next_rule)
            asm.place(passed)
        asm.ret(action.encode())
        asm.place(next_rule)
    asm.ret(default.encode())


# The 64-bit argument is two 32-bit words; which comes first depends on the byte order.
def _word_offsets(index: int) -> tuple[int, int]:
    base = _OFF_ARGS + 8 * index
    return (base, base + 4) if sys.byteorder == "little" else (base + 4, base)


# NE, LT and LE are EQ, GE and GT with the outcomes swapped.
_NEGATED = {Op.NE: Op.EQ, Op.LT: Op.GE, Op.LE: Op.GT}


def _emit_arg(asm: bpf.Assembler, arg: Arg, passed: str, failed: str) -> None:
    """Jump to ``passed`` if the condition holds, else to ``failed`` (unsigned compares)."""
    op = arg.op
    if op in _NEGATED:
        op, passed, failed = _NEGATED[op], failed, passed
    lo_off, hi_off = _word_offsets(arg.index)
    # MASKED_EQ as libseccomp: (arg & mask) == value; a value with bits outside the mask
    # therefore never matches.
    value, mask = arg.value, arg.mask
    assert mask is not None  # Arg.__attrs_post_init__ fills in the full mask
    if arg.width == 64:
        low = asm.new_label()
        asm.load(hi_off)
        hi = value >> 32
        if op is Op.MASKED_EQ:
            asm.and_(mask >> 32)
        if op in (Op.EQ, Op.MASKED_EQ):
            asm.jump(bpf.JEQ, hi, low, failed)
        else:
            # GT/GE: a bigger high word decides; an equal one defers to the low word.
            equal = asm.new_label()
            asm.jump(bpf.JGT, hi, passed, equal)
            asm.place(equal)
            asm.jump(bpf.JEQ, hi, low, failed)
        asm.place(low)
    asm.load(lo_off)
    lo = value & 0xFFFFFFFF
    if op is Op.MASKED_EQ:
        asm.and_(mask & 0xFFFFFFFF)
    code = {Op.EQ: bpf.JEQ, Op.MASKED_EQ: bpf.JEQ, Op.GT: bpf.JGT, Op.GE: bpf.JGE}[op]
    asm.jump(code, lo, passed, failed)
