"""Capability names, Docker's default set, and the bitmask the init's ``exec`` takes.

Bit N of the mask is capability N (``CAP_CHOWN`` = bit 0), as in the kernel's capability sets.
Names are accepted with or without ``CAP_`` and in any case; ``ALL`` means every capability this
kernel knows.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import SecurityConfigError

# <linux/capability.h>, in number order: the index is the capability's number.
CAP_NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
CAP_NUMBERS: dict[str, int] = {name: nr for nr, name in enumerate(CAP_NAMES)}

# What `docker run` keeps by default (moby's oci/caps defaults).
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip


def last_cap() -> int:
    """The highest capability number the running kernel knows: setting a higher bit fails."""
    try:
        return min(int(Path("/proc/sys/kernel/cap_last_cap").read_text()), len(CAP_NAMES) - 1)
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def all_caps() -> int:
    """The mask of every capability the running kernel knows (what ``ALL`` means)."""
    return (1 << (last_cap() + 1)) - 1


def _is_all(name: str) -> bool:
    return name.strip().upper() in ("ALL", "CAP_ALL")


def cap_number(name: str) -> int:
    """``"net_raw"``, ``"CAP_NET_RAW"`` -> 13."""
    key = name.strip().upper().removeprefix("CAP_")
    try:
        return CAP_NUMBERS[key]
    except KeyError:
        raise SecurityConfigError(
            f"unknown capability {name!r}: use a name from capabilities(7) such as NET_ADMIN "
            "(with or without CAP_), or ALL"
        ) from None


def caps_mask(names: Iterable[str]) -> int:
    """The bitmask of capability ``names`` (any case, with or without ``CAP_``; ``ALL`` for every
    one). Raises `SecurityConfigError` for an unknown name."""
    mask = 0
    for name in names:
        mask |= all_caps() if _is_all(name) else 1 << cap_number(name)
    return mask


def cap_names(mask: int) -> list[str]:
    """The ``CAP_*`` names of the bits set in ``mask``, lowest first."""
    return [f"CAP_{name}" for nr, name in enumerate(CAP_NAMES) if mask >> nr & 1]


DOCKER_DEFAULT_MASK: int = caps_mask(DOCKER_DEFAULT_CAPS)


def resolve_caps(add: Iterable[str] = (), drop: Iterable[str] = ()) -> int:
    """The capability mask of a process: Docker's default set, plus ``add``, minus ``drop``.

    As with ``docker run --cap-add/--cap-drop``: ``add=["ALL"]`` starts from every capability,
    ``drop=["ALL"]`` from none (so ``drop=["ALL"], add=["NET_BIND_SERVICE"]`` keeps just that one).
    Naming one capability in both is refused, since the intent is unclear.
    """
    if isinstance(add, str) or isinstance(drop, str):
        raise SecurityConfigError("cap add/drop take a list of names, not a single string")
    add, drop = list(add), list(drop)
    add_mask = caps_mask(n for n in add if not _is_all(n))
    drop_mask = caps_mask(n for n in drop if not _is_all(n))
    if both := add_mask & drop_mask:
        raise SecurityConfigError(
            f"{', '.join(cap_names(both))} both added and dropped: name each capability in one list"
        )
    if any(map(_is_all, add)):
        base = all_caps()
    elif any(map(_is_all, drop)):
        base = 0
    else:
        base = DOCKER_DEFAULT_MASK
    return (base | add_mask) & ~drop_mask & all_caps()
