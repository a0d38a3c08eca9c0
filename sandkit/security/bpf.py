"""A tiny assembler for classic BPF as seccomp runs it: labels instead of offsets, and long jumps.

A classic BPF conditional jump has 8-bit forward offsets (``jt``/``jf`` <= 255), while a seccomp
program for ~300 syscalls is longer than that. Code is written against labels; ``assemble`` lays it
out and, wherever a conditional target is too far, jumps to a nearby ``ja`` (32-bit offset) instead,
repeating until every offset fits (each insertion can only push other targets further, so this
converges). ``validate`` re-checks the result the way the kernel will, and ``run`` interprets it, so
tests can check what a program decides without installing it.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Sequence

import attrs

# Opcode parts from <linux/bpf_common.h>: the subset seccomp accepts and this compiler emits.
LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = u32 at offset k of seccomp_data
ALU_AND_K = 0x04 | 0x50  # BPF_ALU | BPF_AND | BPF_K
JA = 0x05  # BPF_JMP | BPF_JA: unconditional, 32-bit offset in k
JEQ = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
JGT = 0x05 | 0x20
JGE = 0x05 | 0x30
JSET = 0x05 | 0x40
RET_K = 0x06  # BPF_RET | BPF_K
_CONDITIONAL = (JEQ, JGT, JGE, JSET)

MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer filters
MAX_JUMP = 255
SECCOMP_DATA_SIZE = 64  # struct seccomp_data: nr, arch, instruction_pointer, args[6]

# struct sock_filter in host byte order: u16 code, u8 jt, u8 jf, u32 k.
_SOCK_FILTER = struct.Struct("=HBBI")


class BPFError(ValueError):
    """A program the kernel would refuse (a compiler bug, or a profile too large to compile)."""


@attrs.frozen
class Insn:
    """One instruction before layout: an opcode and its constant ``k``; a conditional jump names its
    targets ``jt``/``jf`` as labels, which `Assembler.assemble` turns into offsets."""

    code: int
    k: int = 0
    jt: str | None = None  # label names; None = not a jump
    jf: str | None = None


@attrs.frozen
class Label:
    """A place in the code that jumps can name; it takes no room in the program."""

    name: str


Item = Insn | Label
# Label name -> the address of the next instruction; id(insn) -> its own address.
_Addresses = dict[str | int, int]


@attrs.define
class Assembler:
    """Collects instructions and labels in order, then lays them out with `assemble`."""

    items: list[Item] = attrs.field(factory=list)
    _count: int = 0

    def new_label(self) -> str:
        """A label name not used before in this program (place it with `place`)."""
        self._count += 1
        return f"L{self._count}"

    def place(self, label: str) -> None:
        """Put ``label`` here: jumps to it go to the next instruction added."""
        self.items.append(Label(label))

    def load(self, offset: int) -> None:
        """Load the 32-bit word at byte ``offset`` of struct seccomp_data into the accumulator."""
        self.items.append(Insn(LD_W_ABS, offset))

    def and_(self, mask: int) -> None:
        """AND the accumulator with ``mask`` (truncated to 32 bits)."""
        self.items.append(Insn(ALU_AND_K, mask & 0xFFFFFFFF))

    def ret(self, value: int) -> None:
        """Return ``value`` (a SECCOMP_RET_* action) from the filter."""
        self.items.append(Insn(RET_K, value))

    def jump(self, code: int, k: int, jt: str, jf: str) -> None:
        """A conditional jump (``code`` is JEQ, JGT, JGE or JSET against ``k``) to label ``jt`` when
        it holds, else to ``jf``. Raises `BPFError` for any other opcode."""
        if code not in _CONDITIONAL:
            raise BPFError(f"not a conditional jump: {code:#x}")
        self.items.append(Insn(code, k & 0xFFFFFFFF, jt, jf))

    def assemble(self) -> list[tuple[int, int, int, int]]:
        """Resolve labels to offsets, adding ``ja`` trampolines for targets over 255 away."""
        items = list(self.items)
        while True:
            addr = _addresses(items)
            far = [i for i, it in enumerate(items) if isinstance(it, Insn) and _too_far(it, addr)]
            if not far:
                return _encode_offsets(items, addr)
            items = self._with_trampolines(items, set(far), addr)

    def _with_trampolines(self, items: list[Item], far: set[int], addr: _Addresses) -> list[Item]:
        out: list[Item] = []
        for i, it in enumerate(items):
            if i not in far:
                out.append(it)
                continue
            assert isinstance(it, Insn) and it.jt is not None and it.jf is not None
            pc = addr[id(it)]
            targets = {"jt": it.jt, "jf": it.jf}
            hops: list[Item] = []
            for key, target in targets.items():
                if addr[target] - pc - 1 > MAX_JUMP:
                    hop = self.new_label()
                    targets[key] = hop
                    hops += [Label(hop), Insn(JA, jt=target)]
            out.append(attrs.evolve(it, jt=targets["jt"], jf=targets["jf"]))
            out += hops
        return out


def _addresses(items: Sequence[Item]) -> _Addresses:
    """Label name -> address of the next instruction; id(insn) -> its own address."""
    addr: _Addresses = {}
    pc = 0
    for it in items:
        if isinstance(it, Label):
            addr[it.name] = pc
        else:
            addr[id(it)] = pc
            pc += 1
    return addr


def _too_far(it: Insn, addr: _Addresses) -> bool:
    if it.code not in _CONDITIONAL:
        return False
    pc = addr[id(it)]
    return any(_target(addr, t) - pc - 1 > MAX_JUMP for t in (it.jt, it.jf))


def _encode_offsets(items: Sequence[Item], addr: _Addresses) -> list[tuple[int, int, int, int]]:
    out = []
    for it in items:
        if isinstance(it, Label):
            continue
        pc = addr[id(it)]
        if it.code == JA:
            out.append((JA, 0, 0, _forward(_target(addr, it.jt), pc)))
        elif it.code in _CONDITIONAL:
            jt, jf = _target(addr, it.jt), _target(addr, it.jf)
            out.append((it.code, _forward(jt, pc), _forward(jf, pc), it.k))
        else:
            out.append((it.code, 0, 0, it.k))
    return out


def _target(addr: _Addresses, label: str | None) -> int:
    assert label is not None  # every jump names its labels (Assembler.jump, the trampolines)
    return addr[label]


def _forward(target: int, pc: int) -> int:
    off = target - pc - 1
    if off < 0:
        raise BPFError(f"backward jump at {pc}: classic BPF only jumps forward")
    return off


def pack(program: Iterable[tuple[int, int, int, int]]) -> bytes:
    """The bytes of an array of struct sock_filter, as SECCOMP_SET_MODE_FILTER takes them."""
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in program)


def unpack(blob: bytes) -> list[tuple[int, int, int, int]]:
    """The ``(code, jt, jf, k)`` tuples of a packed sock_filter array (what `pack` makes);
    `BPFError` if ``blob`` is not a whole number of entries."""
    if len(blob) % _SOCK_FILTER.size:
        raise BPFError(f"{len(blob)} bytes is not a whole number of sock_filter entries")
    return [tuple(t) for t in _SOCK_FILTER.iter_unpack(blob)]


def validate(program: Sequence[tuple[int, int, int, int]]) -> None:
    """Refuse what the kernel's seccomp checker would refuse, for the opcodes emitted here."""
    n = len(program)
    if not 0 < n <= MAX_INSNS:
        raise BPFError(f"program has {n} instructions, the kernel takes 1..{MAX_INSNS}")
    for pc, (code, jt, jf, k) in enumerate(program):
        if code == LD_W_ABS:
            if k % 4 or k >= SECCOMP_DATA_SIZE:
                raise BPFError(f"load at {pc}: offset {k} outside struct seccomp_data")
        elif code == JA:
            if pc + 1 + k >= n:
                raise BPFError(f"ja at {pc} jumps past the end")
        elif code in _CONDITIONAL:
            if max(jt, jf) > MAX_JUMP or pc + 1 + max(jt, jf) >= n:
                raise BPFError(f"jump at {pc} jumps past the end")
        elif code not in (ALU_AND_K, RET_K):
            raise BPFError(f"opcode {code:#x} at {pc} is not allowed in a seccomp filter")
    if program[-1][0] != RET_K:
        raise BPFError("the last instruction must be a return")


def run(program: Sequence[tuple[int, int, int, int]], data: bytes) -> int:
    """Interpret ``program`` over a packed struct seccomp_data; returns the SECCOMP_RET_* value."""
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == LD_W_ABS:
            acc = int.from_bytes(data[k : k + 4], sys.byteorder)
        elif code == ALU_AND_K:
            acc &= k
        elif code == RET_K:
            return k
        elif code == JA:
            pc += k
        else:
            taken = {
                JEQ: acc == k,
                JGT: acc > k,
                JGE: acc >= k,
                JSET: bool(acc & k),
            }[code]
            pc += jt if taken else jf
