"""Which cgroup layout this host has, where each controller lives, and whether we may use it.

Read once per host process (a few small /proc reads); no side effects: nothing is created here.
"""

from __future__ import annotations

import os
import re

import attrs

from ...errors import HostUnsupportedError
from .limits import Limits

LIMIT_CONTROLLERS = ("memory", "cpu", "pids")
# v1 splits cpu time accounting into its own controller (often co-mounted as "cpu,cpuacct").
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
DEFAULT_NAME = "sandkit"

WHY_ROOTLESS_V1 = (
    "cgroup v1 cannot be delegated to unprivileged users: memory/cpu/pids limits are not "
    "enforced (rlimits are applied instead); run as root, or on a cgroup v2 host with a "
    "delegated subtree (e.g. `systemd-run --user --scope -p Delegate=yes ...`)"
)


@attrs.frozen
class Hierarchy:
    """One mounted cgroup hierarchy: its mount point, its controllers, and where we sit in it."""

    mountpoint: str
    controllers: frozenset[str]
    own: str  # absolute path of this process's cgroup in this hierarchy


@attrs.frozen
class CgroupHost:
    """The facts `ContainerCgroup` needs: layout version, per-controller placement, permission."""

    version: int  # 1 (v1 or hybrid), 2 (unified), 0 (no usable cgroups)
    # controller -> the directory in which sandkit's own "<name>/" tree is made
    parents: dict[str, str]
    controllers: frozenset[str]  # controllers we may set limits with
    rootless: bool
    why_not: str | None = None  # why limits cannot be enforced, for the user; None when they can
    name: str = DEFAULT_NAME  # sandkit's directory name (tests use their own)

    @property
    def usable(self) -> bool:
        """True when limits can be enforced here (``why_not`` says why they cannot)."""
        return self.why_not is None

    def check(self, limits: Limits, accounting: bool = False) -> None:
        """Raise `HostUnsupportedError` (cause and fix) if these limits cannot be enforced here."""
        if limits.empty and not accounting:
            return
        if self.why_not:
            raise HostUnsupportedError(self.why_not)
        wanted = {
            "memory": limits.wants_memory or accounting,
            "cpu": limits.wants_cpu,  # cpu time is read from cpuacct (v1) or core cpu.stat (v2)
            "pids": limits.wants_pids,
        }
        missing = sorted(c for c, want in wanted.items() if want and c not in self.controllers)
        if missing:
            raise HostUnsupportedError(
                f"the cgroup controller(s) {', '.join(missing)} are not available to sandkit here "
                f"({self._where()}); enable them (cgroup v2: delegate them to this user's cgroup) "
                "or drop those limits"
            )

    def _where(self) -> str:
        return f"cgroup v{self.version} under {sorted(set(self.parents.values())) or 'nowhere'}"


def detect(
    *,
    mountinfo: str | None = None,
    self_cgroup: str | None = None,
    euid: int | None = None,
    name: str = DEFAULT_NAME,
) -> CgroupHost:
    """Inspect this host. The keyword arguments replace /proc reads (tests, fake trees)."""
    if mountinfo is None:
        mountinfo = _slurp("/proc/self/mountinfo")
    if self_cgroup is None:
        self_cgroup = _slurp("/proc/self/cgroup")
    euid = os.geteuid() if euid is None else euid
    own = _own_paths(self_cgroup)
    v1, v2 = _parse_mounts(mountinfo, own)
    if any(c in v1 for c in LIMIT_CONTROLLERS):
        return _v1_host(v1, euid, name)
    if v2 is not None:
        return _v2_host(v2, euid, name)
    return CgroupHost(
        0, {}, frozenset(), euid != 0, "no cgroup filesystem is mounted on this host", name
    )


_cached: dict[int, CgroupHost] = {}


def host() -> CgroupHost:
    """`detect()` once per process and user: the layout does not change while we run, but what
    we may do with it does when a (forked) process drops privileges."""
    euid = os.geteuid()
    if euid not in _cached:
        _cached[euid] = detect()
    return _cached[euid]


# --- parsing ---------------------------------------------------------------------------------


def _slurp(path: str) -> str:
    with open(path) as f:
        return f.read()


def _own_paths(self_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller or "" (v2) or "name=x": path}."""
    out: dict[str, str] = {}
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        for ctrl in ctrls.split(",") if ctrls else [""]:
            out[ctrl] = path
    return out


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _parse_mounts(
    mountinfo: str, own: dict[str, str]
) -> tuple[dict[str, Hierarchy], Hierarchy | None]:
    """(v1 controller -> hierarchy, the v2 hierarchy or None)."""
    v1: dict[str, Hierarchy] = {}
    v2: list[Hierarchy] = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            v2.append(Hierarchy(mountpoint, frozenset(), _join(mountpoint, root, own.get("", "/"))))
            continue
        ctrls = frozenset(o for o in tail[2].split(",") if o in V1_CONTROLLERS)
        for ctrl in ctrls:
            v1.setdefault(
                ctrl, Hierarchy(mountpoint, ctrls, _join(mountpoint, root, own.get(ctrl, "/")))
            )
    # Prefer the canonical mount when a cgroup2 tree is mounted more than once.
    v2.sort(key=lambda h: (h.mountpoint != "/sys/fs/cgroup", len(h.mountpoint)))
    return v1, (v2[0] if v2 else None)


def _join(mountpoint: str, mount_root: str, own: str) -> str:
    """Our cgroup's directory: the /proc/self/cgroup path is relative to the mount's own root."""
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root) :]
    return os.path.join(mountpoint, own.lstrip("/")).rstrip("/") or "/"


# --- v1 --------------------------------------------------------------------------------------


def _v1_host(v1: dict[str, Hierarchy], euid: int, name: str) -> CgroupHost:
    parents = {c: h.mountpoint for c, h in v1.items()}
    controllers = frozenset(c for c in v1 if c in LIMIT_CONTROLLERS)
    if euid != 0:
        return CgroupHost(1, parents, controllers, True, WHY_ROOTLESS_V1, name)
    unwritable = sorted(c for c, p in parents.items() if not os.access(p, os.W_OK))
    if unwritable:
        why = (
            f"the cgroup v1 hierarchies for {', '.join(unwritable)} are read-only here (a container "
            "without cgroup write access?): limits are not enforced; mount /sys/fs/cgroup read-write"
        )
        return CgroupHost(1, parents, controllers, False, why, name)
    return CgroupHost(1, parents, controllers, False, None, name)


# --- v2 --------------------------------------------------------------------------------------


def _v2_host(h: Hierarchy, euid: int, name: str) -> CgroupHost:
    # Root makes its tree at the top (like Docker's cgroupfs driver): the real root cgroup is
    # exempt from the "no internal processes" rule and has every controller. A user can only
    # use the subtree delegated to it, which is the cgroup it was started in.
    parent = h.mountpoint if euid == 0 else h.own
    controllers = _v2_controllers(parent)
    parents = dict.fromkeys(LIMIT_CONTROLLERS, parent)
    why = _v2_why_not(parent, euid)
    return CgroupHost(2, parents, controllers, euid != 0, why, name)


def _v2_controllers(path: str) -> frozenset[str]:
    try:
        return frozenset(_slurp(os.path.join(path, "cgroup.controllers")).split()) & set(
            LIMIT_CONTROLLERS
        )
    except OSError:
        return frozenset()


def _v2_why_not(parent: str, euid: int) -> str | None:
    needed = ("", "cgroup.procs", "cgroup.subtree_control")
    if all(os.access(os.path.join(parent, f), os.W_OK) for f in needed):
        return None
    if euid == 0:
        return f"the cgroup v2 tree {parent} is read-only here: limits are not enforced; mount it read-write"
    return (
        f"cgroup v2 is not delegated to uid {euid} (cannot write {parent}): memory/cpu/pids limits are "
        "not enforced (rlimits are applied instead); run inside a delegated scope, e.g. "
        "`systemd-run --user --scope -p Delegate=yes python ...`"
    )
