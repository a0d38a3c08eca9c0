"""Seccomp profiles: what a container's processes may ask of the kernel, compiled to classic BPF.

A profile is a default action plus an ordered list of rules; for each syscall the first rule whose
argument conditions all hold decides, and a syscall no rule matches gets the default action.

    SeccompProfile.docker_default()                      # sandkit's default (Docker's, stricter)
    SeccompProfile.docker_default().allow("ptrace")      # builders return a new profile; the
    SeccompProfile.docker_default().deny("mkdir")        #   newest rule is checked first
    SeccompProfile.allowing(["read", "write", "exit_group"])   # allowlist, EPERM for the rest
    SeccompProfile.denying(["mkdir"])                    # denylist, everything else allowed
    SeccompProfile.from_docker_json("profile.json")      # Docker / OCI JSON
    resolve_seccomp(spec) -> bytes | None                # what the `exec` message's `seccomp` takes

The compiled program (see ``_codegen``) checks the architecture (anything else is killed), refuses
x32 syscalls on x86_64, answers ENOSYS for syscall numbers newer than sandkit knows (so libc falls
back to an older call, as it does on an older kernel) when the default is an errno, then finds the
syscall's rules with a binary search.
"""

from __future__ import annotations

import enum
import errno as _errno
import functools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Union

import attrs

from ..errors import SecurityConfigError
from . import syscalls
from .capabilities import DOCKER_DEFAULT_MASK, cap_number


class Op(enum.Enum):
    """How an `Arg` compares a syscall argument with its value; ``MASKED_EQ`` compares ``arg &
    mask``."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    MASKED_EQ = "masked_eq"  # (arg & mask) == value


def _to_int(value: int | str) -> int:
    """Accept ints and "0x..."/decimal strings (JSON has no hex literals)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SecurityConfigError(f"expected an integer, got {value!r}")
    try:
        return value if isinstance(value, int) else int(value, 0)
    except ValueError:
        raise SecurityConfigError(f"expected an integer, got {value!r}") from None


def _errno_number(value: int | str) -> int:
    if isinstance(value, str) and value.upper().startswith("E"):
        try:
            return getattr(_errno, value.upper())
        except AttributeError:
            raise SecurityConfigError(f"unknown errno name {value!r}") from None
    number = _to_int(value)
    if not 0 <= number <= 0xFFFF:
        raise SecurityConfigError(f"errno {number} is out of range 0..65535")
    return number


@attrs.frozen
class Arg:
    """A condition on syscall argument ``index`` (0-5).

    ``width=32`` compares only the low 32 bits: right for arguments the kernel declares as
    ``int``/``unsigned int`` (ioctl's cmd, socket's family), which it truncates, so that setting
    high bits cannot slip a value past a 64-bit compare.
    """

    index: int = attrs.field()
    op: Op = attrs.field(converter=Op)
    value: int = attrs.field(converter=_to_int)
    mask: int | None = attrs.field(default=None, converter=attrs.converters.optional(_to_int))
    width: int = attrs.field(default=64)

    @index.validator
    def _check_index(self, _: Any, index: int) -> None:
        if not 0 <= index <= 5:
            raise SecurityConfigError(f"syscall argument index {index} is out of range 0..5")

    @width.validator
    def _check_width(self, _: Any, width: int) -> None:
        if width not in (32, 64):
            raise SecurityConfigError(f"argument width must be 32 or 64, not {width}")

    def __attrs_post_init__(self) -> None:
        limit = 1 << self.width
        if self.mask is None:
            object.__setattr__(self, "mask", limit - 1)
        # Negative values mean their two's complement (-1 == all ones), as in C.
        for name in ("value", "mask"):
            v = getattr(self, name)
            if not -limit // 2 <= v < limit:
                raise SecurityConfigError(f"{name} {v:#x} does not fit in {self.width} bits")
            object.__setattr__(self, name, v % limit if v < 0 else v)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Arg:
        """``{"arg": 0, "op": "eq", "value": "0x10", "mask": ..., "width": 32}``."""
        return cls(
            data["arg"],
            Op(data["op"]),
            data["value"],
            data.get("mask"),
            data.get("width", 64),
        )


@attrs.frozen
class Action:
    """What the kernel does with a syscall: a SECCOMP_RET_* value."""

    kind: str = attrs.field()
    data: int = 0

    _BASE: ClassVar[Mapping[str, int]] = MappingProxyType(
        {
            "kill_process": 0x80000000,
            "kill_thread": 0x00000000,
            "trap": 0x00030000,
            "errno": 0x00050000,
            "trace": 0x7FF00000,
            "log": 0x7FFC0000,
            "allow": 0x7FFF0000,
        }
    )

    @kind.validator
    def _check_kind(self, _: Any, kind: str) -> None:
        if kind not in self._BASE:
            raise SecurityConfigError(
                f"unknown seccomp action {kind!r}: one of {sorted(self._BASE)}"
            )

    @classmethod
    def errno(cls, number: int | str = _errno.EPERM) -> Action:
        """Fail the syscall with ``number`` (an int, or a name such as ``"ENOSYS"``);
        `SecurityConfigError` for an unknown name or one over 65535."""
        return cls("errno", _errno_number(number))

    @classmethod
    def parse(cls, text: str) -> Action:
        """``"allow"``, ``"errno:ENOSYS"``, ``"kill_process"``, ``"trap"``, ``"log"``..."""
        kind, _, data = text.partition(":")
        if kind == "errno":
            return cls.errno(data or _errno.EPERM)
        return cls(kind, _to_int(data) if data else 0)

    def encode(self) -> int:
        """The 32-bit SECCOMP_RET_* value the filter returns for this action."""
        return self._BASE[self.kind] | (self.data & 0xFFFF)

    @property
    def refuses(self) -> bool:
        """True when the syscall does not run (errno, trap, kill), False for allow, log and trace."""
        return self.kind not in ("allow", "log", "trace")


ALLOW = Action("allow")
EPERM = Action.errno(_errno.EPERM)
KILL_PROCESS = Action("kill_process")


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


def _args(args: Iterable[Arg]) -> tuple[Arg, ...]:
    return tuple(args)


@attrs.frozen
class Rule:
    """``action`` for the syscalls ``names`` when every condition in ``args`` holds."""

    # Typed converters, not plain `tuple`: mypy cannot tell what a generic converter accepts.
    names: tuple[str, ...] = attrs.field(converter=_names)
    action: Action
    args: tuple[Arg, ...] = attrs.field(default=(), converter=_args)


def _rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(rules)


def _check_names(names: Iterable[str]) -> tuple[str, ...]:
    """Builders refuse names no supported architecture has, so a typo is not a silent no-op."""
    from ._syscall_table import TABLES

    names = tuple(names)
    unknown = [n for n in names if not any(n in t for t in TABLES.values())]
    if unknown:
        raise SecurityConfigError(f"unknown syscall name(s): {', '.join(unknown)}")
    if not names:
        raise SecurityConfigError("name at least one syscall")
    return names


@attrs.frozen
class SeccompProfile:
    """A seccomp policy; immutable and hashable, so its compiled program can be cached."""

    default_action: Action = EPERM
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rules)

    # --- builders: each returns a new profile whose new rule is checked before the others ---

    def allow(self, *names: str, args: Iterable[Arg] = ()) -> SeccompProfile:
        """A new profile that lets the syscalls ``names`` run (when every condition in ``args``
        holds), checked before the existing rules. `SecurityConfigError` for a name no architecture
        has."""
        return self.with_rule(Rule(_check_names(names), ALLOW, args))

    def deny(
        self, *names: str, errno: int | str = _errno.EPERM, args: Iterable[Arg] = ()
    ) -> SeccompProfile:
        """A new profile in which the syscalls ``names`` fail with ``errno`` (when every condition
        in ``args`` holds), checked before the existing rules."""
        return self.with_rule(Rule(_check_names(names), Action.errno(errno), args))

    def with_rule(self, rule: Rule) -> SeccompProfile:
        """A new profile with ``rule`` checked before the existing rules."""
        return attrs.evolve(self, rules=(rule, *self.rules))

    @classmethod
    def allowing(cls, names: Iterable[str], default: Action = EPERM) -> SeccompProfile:
        """An allowlist: ``names`` run, everything else gets ``default`` (EPERM)."""
        return cls(default, (Rule(_check_names(names), ALLOW),))

    @classmethod
    def denying(cls, names: Iterable[str], errno: int | str = _errno.EPERM) -> SeccompProfile:
        """A denylist: ``names`` fail with ``errno``, everything else runs."""
        return cls(ALLOW, (Rule(_check_names(names), Action.errno(errno)),))

    @classmethod
    def docker_default(cls, caps: int | None = None) -> SeccompProfile:
        """sandkit's default profile for a process keeping capability mask ``caps`` (default:
        Docker's default set). Like Docker, more capabilities open the syscalls they govern."""
        return _builtin_profile(DOCKER_DEFAULT_MASK if caps is None else caps)

    @classmethod
    def from_docker_json(
        cls,
        source: Mapping[str, Any] | str | os.PathLike[str],
        caps: int | None = None,
        kernel: str | None = None,
    ) -> SeccompProfile:
        """A profile in Docker's JSON format (a path, JSON text, or the parsed dict), with its
        ``includes``/``excludes`` resolved for ``caps`` (default: Docker's default set) and
        ``kernel`` (default: the running one)."""
        from ._docker_json import parse_docker_profile

        return parse_docker_profile(
            _load_json(source), DOCKER_DEFAULT_MASK if caps is None else caps, kernel
        )

    def compile(self, arch: str | None = None) -> bytes:
        """The BPF program (struct sock_filter array, host byte order). Cached per profile."""
        return _compile_cached(self, arch or syscalls.native_arch())


def _load_json(source: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    text = str(source)
    try:
        if isinstance(source, str) and text.lstrip().startswith("{"):
            return json.loads(text)
        return json.loads(Path(source).read_text())
    except OSError as e:
        raise SecurityConfigError(f"cannot read seccomp profile {text}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SecurityConfigError(f"seccomp profile {text[:80]} is not valid JSON: {e}") from None


@functools.lru_cache(maxsize=64)
def _compile_cached(profile: SeccompProfile, arch: str) -> bytes:
    from ._codegen import compile_profile

    return compile_profile(profile, arch)


@functools.lru_cache(maxsize=16)
def _builtin_profile(caps: int) -> SeccompProfile:
    data = json.loads(Path(__file__).with_name("profiles").joinpath("default.json").read_text())

    def has(names: Iterable[str]) -> Iterable[int]:
        return (caps >> cap_number(n) & 1 for n in names)

    rules = []
    for r in data["rules"]:
        if not all(has(r.get("caps", ()))) or any(has(r.get("unless_caps", ()))):
            continue
        args = tuple(Arg.from_data(a) for a in r.get("when", ()))
        rules.append(Rule(tuple(r["names"]), Action.parse(r["action"]), args))
    allowed = [name for group in data["allow"].values() for name in group]
    rules.append(Rule(tuple(allowed), ALLOW))
    return SeccompProfile(Action.errno(data["default_errno"]), tuple(rules))


@functools.cache
def default_program() -> bytes:
    """The compiled default profile for Docker's default capability set, for this host."""
    return SeccompProfile.docker_default().compile()


SeccompSpec = Union[SeccompProfile, Mapping[str, Any], str, "os.PathLike[str]", None]


def resolve_seccomp(spec: SeccompSpec = "default", caps: int | None = None) -> bytes | None:
    """What a user passed as ``seccomp=`` -> the ``exec`` message's ``seccomp`` bytes.

    ``"default"``: sandkit's default profile (for ``caps``, the process's capability mask);
    ``None`` or ``"unconfined"``: no filter; a ``SeccompProfile``; a Docker JSON profile as a dict,
    JSON text or a file path.
    """
    if spec is None or spec == "unconfined":
        return None
    if spec == "default":
        return default_program() if caps is None else SeccompProfile.docker_default(caps).compile()
    if isinstance(spec, SeccompProfile):
        return spec.compile()
    if isinstance(spec, Mapping | str | os.PathLike):
        return SeccompProfile.from_docker_json(spec, caps=caps).compile()
    raise SecurityConfigError(
        f"seccomp= takes 'default', 'unconfined'/None, a SeccompProfile, or a Docker JSON profile "
        f"(dict or path), not {type(spec).__name__}"
    )
