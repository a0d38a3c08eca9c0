"""cgroup v1 (and hybrid hosts): one directory per controller hierarchy.

Only hierarchies a container needs are touched: each costs a mkdir at create, a migration when
the init joins, and a rmdir at the end. Per-exec cgroups live only in memory and cpuacct (what
`usage()` reads); the exec stays in the container's cpu and pids cgroups, so their limits hold.

Memory limits are hierarchical only with memory.use_hierarchy=1. Since Linux 5.x (memcg v1's
use_hierarchy deprecation) it is always 1 and cannot be cleared; on older kernels the root's
default was 0 and children inherit it, so we set it on sandkit's own top directory, before it
has children. With it, an exec's memory is charged to the container too and the container's
limit cannot be escaped by an exec cgroup (which has no limit of its own).
"""

from __future__ import annotations

import os

from ...errors import CgroupError
from . import _fs
from .base import (
    CgroupStats,
    ContainerCgroup,
    ExecCgroup,
    ExecUsage,
    HostDirs,
    reap_stale_under,
    write_limit,
)
from .detect import CgroupHost
from .limits import CFS_PERIOD_US, UNLIMITED


def _prepare(dir_fd: int, is_top: bool) -> None:
    """Make sure memory accounting is hierarchical below sandkit's directory (see module doc)."""
    if is_top or _fs.read_int(dir_fd, "memory.use_hierarchy") != 0:
        return
    try:
        _fs.write(dir_fd, "memory.use_hierarchy", "1")
    except OSError as e:
        raise CgroupError(
            "memory.use_hierarchy is 0 under sandkit's cgroup and cannot be set (it already has "
            f"children: {e.strerror}); remove /sys/fs/cgroup/memory/sandkit and retry"
        ) from e


class _Dirs:
    """Open directory fds of one cgroup across hierarchies, keyed by mount point (co-mounted
    controllers such as "cpu,cpuacct" share one directory)."""

    def __init__(self, host: CgroupHost) -> None:
        self.host = host
        self.by_mount: dict[str, int] = {}

    def fd(self, controller: str) -> int | None:
        return self.by_mount.get(self.host.parents.get(controller, ""))

    def make(self, controllers: set[str], parent_fd_of: dict[str, int], name: str) -> None:
        for ctrl in sorted(controllers):
            mount = self.host.parents[ctrl]
            if mount not in self.by_mount:
                self.by_mount[mount] = _fs.make_dir(parent_fd_of[mount], name)

    def close(self) -> None:
        for fd in self.by_mount.values():
            os.close(fd)
        self.by_mount.clear()


class V1ExecCgroup(ExecCgroup):
    """One exec's accounting cgroups under its container's, in the memory and cpuacct hierarchies of
    cgroup v1."""

    def __init__(self, container: V1ContainerCgroup, name: str) -> None:
        self._name = name
        self._parents = dict(container._dirs.by_mount)
        self._dirs = _Dirs(container.host)
        try:
            self._dirs.make(
                {"memory", "cpuacct"} & set(container.host.parents), self._parents, name
            )
        except BaseException:
            self._close()
            raise

    def fds(self) -> list[int]:
        return list(self._dirs.by_mount.values())

    def usage(self) -> ExecUsage:
        mem, cpu = self._dirs.fd("memory"), self._dirs.fd("cpuacct")
        oom = _fs.read_keyed(mem, "memory.oom_control").get("oom_kill", 0) if mem is not None else 0
        return ExecUsage(
            cpu_ns=(_fs.read_int(cpu, "cpuacct.usage") or 0) if cpu is not None else 0,
            memory_peak=_fs.read_int(mem, "memory.max_usage_in_bytes") if mem is not None else None,
            oom_killed=oom > 0,
        )

    def _close(self) -> None:
        mounts = list(self._dirs.by_mount)
        self._dirs.close()
        for mount in mounts:
            try:
                os.rmdir(self._name, dir_fd=self._parents[mount])
            except OSError:
                pass  # still busy with background processes: the container's destroy takes it


class V1ContainerCgroup(ContainerCgroup):
    """A container's cgroups on cgroup v1 (or hybrid): one directory in each hierarchy that a limit
    or accounting needs."""

    host: CgroupHost

    def _controllers(self) -> set[str]:
        wanted = {
            "memory": self.limits.wants_memory or self.accounting,
            "cpu": self.limits.wants_cpu,
            "cpuacct": self.accounting,
            "pids": self.limits.wants_pids or self.accounting,
        }
        return {c for c, want in wanted.items() if want and c in self.host.parents}

    def _build(self) -> None:
        self._dirs = _Dirs(self.host)
        controllers = self._controllers()
        self._tag_fds = {
            self.host.parents[c]: HostDirs.get(self.host, self.host.parents[c], _prepare)
            for c in controllers
        }
        self._dirs.make(controllers, self._tag_fds, self.name)
        self._write_limits()

    def _write_limits(self) -> None:
        lim, mem, cpu, pids = (
            self.limits,
            self._dirs.fd("memory"),
            self._dirs.fd("cpu"),
            self._dirs.fd("pids"),
        )
        if lim.memory is not None and mem is not None:
            write_limit(mem, "memory.limit_in_bytes", lim.memory)
            total = lim.swap_total()
            # memsw exists only with swap accounting on; without it there is no swap to bound.
            if total is not None and os.access("memory.memsw.limit_in_bytes", os.F_OK, dir_fd=mem):
                write_limit(mem, "memory.memsw.limit_in_bytes", -1 if total == UNLIMITED else total)
        if cpu is not None:
            if lim.cpus is not None:
                write_limit(cpu, "cpu.cfs_period_us", CFS_PERIOD_US)
                write_limit(cpu, "cpu.cfs_quota_us", lim.cpu_quota_us())
            if lim.cpu_shares is not None:
                write_limit(cpu, "cpu.shares", lim.cpu_shares)
        if lim.pids is not None and pids is not None:
            write_limit(pids, "pids.max", lim.pids)

    def join_fds(self) -> list[int]:
        return list(self._dirs.by_mount.values())

    def add_pid(self, pid: int) -> None:
        for fd in self._dirs.by_mount.values():
            _fs.write(fd, "cgroup.procs", pid)

    def _exec_cgroup(self, name: str) -> ExecCgroup:
        return V1ExecCgroup(self, name)

    def _pids_dir(self) -> int | None:
        return self._dirs.fd("pids")

    def stats(self) -> CgroupStats:
        mem, acct, pids = self._dirs.fd("memory"), self._dirs.fd("cpuacct"), self._dirs.fd("pids")
        return CgroupStats(
            memory_current=_fs.read_int(mem, "memory.usage_in_bytes") if mem is not None else None,
            memory_peak=_fs.read_int(mem, "memory.max_usage_in_bytes") if mem is not None else None,
            cpu_ns=_fs.read_int(acct, "cpuacct.usage") if acct is not None else None,
            pids_current=_fs.read_int(pids, "pids.current") if pids is not None else None,
        )

    def _teardown(self) -> None:
        dirs = getattr(self, "_dirs", None)
        if dirs is None:
            return
        # Kill in every hierarchy first (a process may sit in several), then remove.
        for fd in dirs.by_mount.values():
            _fs.kill_tree(fd)
        mounts = list(dirs.by_mount)
        dirs.close()
        for mount in mounts:
            _fs.remove_tree(self._tag_fds[mount], self.name)


def reap_stale(host: CgroupHost) -> list[str]:
    """Remove the empty cgroup directories that processes now dead left in every v1 hierarchy;
    returns their paths."""
    return [
        p
        for mount in sorted(set(host.parents.values()))
        for p in reap_stale_under(mount, host.name, False)
    ]
