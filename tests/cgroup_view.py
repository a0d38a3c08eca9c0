"""The resource limits in force for a process, read from the host's cgroup files (v1 or v2), as
the kernel applies them: whichever tool put the process there. No pytest in here."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

UNLIMITED = None


class Limits(NamedTuple):
    memory: int | None  # bytes
    pids: int | None
    cpu_quota: tuple[int, int] | None  # (quota, period) in microseconds


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount we see."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        fstype, _source, options = rest.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            parts = fields.split()
            found.append((parts[3], parts[4], fstype, set(options.split(","))))
    return found


def cgroup_dir(pid: int, controller: str) -> Path | None:
    """The directory of `pid`'s cgroup for `controller` (a v1 hierarchy naming it, else v2)."""
    memberships = [
        line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    ]
    for root, point, fstype, options in _mounts():
        for _id, controllers, path in memberships:
            v1_match = (
                fstype == "cgroup"
                and controller in controllers.split(",")
                and controller in options
            )
            v2_match = fstype == "cgroup2" and controllers == "" and _v2_has(point, controller)
            if v1_match or v2_match:
                return Path(point) / Path(path).relative_to(root)
    return None


def _v2_has(mountpoint: str, controller: str) -> bool:
    try:
        return controller in (Path(mountpoint) / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _ancestry(pid: int, controller: str) -> list[Path]:
    """`pid`'s cgroup directory and its parents up to the hierarchy's root: a limit on any of
    them holds for the process."""
    leaf = cgroup_dir(pid, controller)
    if leaf is None:
        return []
    dirs = [leaf]
    while dirs[-1].parent != dirs[-1] and (dirs[-1].parent / "cgroup.procs").exists():
        dirs.append(dirs[-1].parent)
    return dirs


def _read(directory: Path, *names: str) -> str | None:
    for name in names:
        if (directory / name).exists():
            return (directory / name).read_text().strip()
    return None


def _number(text: str | None) -> int | None:
    if text is None or text in ("max", "-1"):
        return UNLIMITED
    value = int(text)
    return UNLIMITED if value >= 2**62 else value  # v1 writes "no limit" as a page-rounded 2^63


def _tightest(values: list[int | None]) -> int | None:
    return min((v for v in values if v is not None), default=UNLIMITED)


def _cpu_quota(directory: Path) -> tuple[int, int] | None:
    cpu_max = _read(directory, "cpu.max")
    if cpu_max is not None:
        quota, period = cpu_max.split()
    else:
        quota, period = _read(directory, "cpu.cfs_quota_us"), _read(directory, "cpu.cfs_period_us")
    if _number(quota) is None or period is None:
        return None
    return int(quota), int(period)


def limits_of(pid: int) -> Limits:
    memory = _tightest(
        [_number(_read(d, "memory.max", "memory.limit_in_bytes")) for d in _ancestry(pid, "memory")]
    )
    pids = _tightest([_number(_read(d, "pids.max")) for d in _ancestry(pid, "pids")])
    quotas = [q for q in map(_cpu_quota, _ancestry(pid, "cpu")) if q is not None]
    cpu = min(quotas, key=lambda q: q[0] / q[1], default=None)
    return Limits(memory, pids, cpu)
