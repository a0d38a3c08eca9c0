"""Read Docker's (and the OCI runtime spec's) JSON seccomp profile format into a SeccompProfile.

Handled: ``defaultAction`` / ``defaultErrnoRet``; ``syscalls[]`` with ``names`` (or the older
``name``), ``action``, ``errnoRet``, ``args`` (``index``, ``value``, ``valueTwo``, ``op``), and
``includes``/``excludes`` on ``caps``, ``arches`` and ``minKernel`` (resolved here, as Docker does
when it builds a container's profile). ``architectures``/``archMap`` are not needed: the program is
built for the native architecture only, and everything else is killed. ``SCMP_ACT_NOTIFY`` needs a
listener sandkit does not run, so it is refused.

As in runc: the conditions of one entry must all hold, except that several conditions on the same
argument index become separate alternatives (how profiles write "arg0 is A or B").
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SecurityConfigError
from . import syscalls
from .capabilities import cap_number
from .seccomp import ALLOW, Action, Arg, Op, Rule, SeccompProfile

_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_TRACE": "trace",
    "SCMP_ACT_LOG": "log",
}
_OPS = {
    "SCMP_CMP_EQ": Op.EQ,
    "SCMP_CMP_NE": Op.NE,
    "SCMP_CMP_LT": Op.LT,
    "SCMP_CMP_LE": Op.LE,
    "SCMP_CMP_GT": Op.GT,
    "SCMP_CMP_GE": Op.GE,
    "SCMP_CMP_MASKED_EQ": Op.MASKED_EQ,
}
# Docker's `arches` spell Go's GOARCH names.
_DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def parse_docker_profile(data: Mapping[str, Any], caps: int, kernel: str | None) -> SeccompProfile:
    if not isinstance(data, Mapping) or "defaultAction" not in data:
        raise SecurityConfigError("a Docker seccomp profile is a JSON object with a defaultAction")
    default_errno = data.get("defaultErrnoRet")
    default = _action(data["defaultAction"], default_errno, errno.EPERM)
    arch = _DOCKER_ARCH[syscalls.native_arch()]
    running = _version(kernel or os.uname().release)
    rules: list[Rule] = []
    for i, entry in enumerate(data.get("syscalls") or ()):
        where = f"syscalls[{i}]"
        if not _applies(entry, caps, arch, running, where):
            continue
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        if not names:
            raise SecurityConfigError(f"{where} names no syscall")
        # An entry's errno defaults to the profile's defaultErrnoRet, then EPERM, like runc.
        action = _action(entry.get("action"), entry.get("errnoRet"), default_errno or errno.EPERM)
        for args in _alternatives(entry.get("args") or (), where):
            rules.append(Rule(tuple(names), action, args))
    return SeccompProfile(default, tuple(rules))


def _action(name: Any, errno_ret: Any, fallback_errno: int) -> Action:
    kind = _ACTIONS.get(name) if isinstance(name, str) else None
    if kind is None:
        hint = " (sandkit runs no seccomp listener)" if name == "SCMP_ACT_NOTIFY" else ""
        raise SecurityConfigError(f"unsupported seccomp action {name!r}{hint}")
    if kind == "errno":
        return Action.errno(fallback_errno if errno_ret is None else errno_ret)
    if kind == "trace":
        return Action("trace", 0 if errno_ret is None else int(errno_ret))
    return ALLOW if kind == "allow" else Action(kind)


def _applies(
    entry: Mapping[str, Any], caps: int, arch: str, kernel: tuple[int, ...], where: str
) -> bool:
    inc = entry.get("includes") or {}
    exc = entry.get("excludes") or {}
    try:

        def has(cap: str) -> bool:
            return bool(caps >> cap_number(cap) & 1)

        if not all(has(c) for c in inc.get("caps") or ()):
            return False
        if any(has(c) for c in exc.get("caps") or ()):
            return False
    except SecurityConfigError as e:
        raise SecurityConfigError(f"{where}: {e}") from None
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if arch in (exc.get("arches") or ()):
        return False
    if inc.get("minKernel") and kernel < _version(inc["minKernel"]):
        return False
    return not (exc.get("minKernel") and kernel >= _version(exc["minKernel"]))


def _alternatives(raw_args: Sequence[Mapping[str, Any]], where: str) -> list[tuple[Arg, ...]]:
    args = [_arg(a, f"{where}.args[{j}]") for j, a in enumerate(raw_args)]
    indexes = [a.index for a in args]
    if len(set(indexes)) < len(indexes):
        return [(a,) for a in args]
    return [tuple(args)]


def _arg(raw: Mapping[str, Any], where: str) -> Arg:
    try:
        op = _OPS[raw["op"]]
        value, two = raw.get("value", 0), raw.get("valueTwo", 0)
        if op is Op.MASKED_EQ:  # libseccomp: (arg & value) == valueTwo
            return Arg(raw["index"], op, two, mask=value)
        return Arg(raw["index"], op, value)
    except KeyError as e:
        raise SecurityConfigError(f"{where}: missing or unknown {e}") from None
    except SecurityConfigError as e:
        raise SecurityConfigError(f"{where}: {e}") from None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
