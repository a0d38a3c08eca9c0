"""cgroup v2 (unified): one directory per container, controllers enabled level by level.

The "no internal processes" rule shapes the layout: a cgroup that has processes cannot enable
controllers for its children, and a cgroup whose subtree_control is set cannot take processes.

- sandkit's own levels (<name>/, <tag>/) never hold processes, so they can enable controllers.
- The parent (root's mount root, or a user's own delegated cgroup) usually holds processes: if
  enabling controllers there fails with EBUSY and we are its only process, we move ourselves into
  a leaf `<name>-host-<tag>` beside our tree; otherwise the error says how to get a scope of one's
  own.
- A container's init is cloned straight into the container's directory (CLONE_INTO_CGROUP: no
  migration) and that directory is also the root of the container's cgroup namespace. Per-exec
  cgroups must be below that root (with nsdelegate the kernel refuses moves that leave it), and
  they need the memory controller, which the container directory can only enable once it holds
  no process. So the first `exec_cgroup()` moves the init (and anything else there) into an
  `init/` leaf and then enables memory: one migration per container, and only with accounting.
"""

from __future__ import annotations

import errno
import os

from ...errors import CgroupError
from . import _fs
from .base import (
    CgroupStats,
    ContainerCgroup,
    ExecCgroup,
    ExecUsage,
    HostDirs,
    Prepare,
    host_tag,
    is_stale,
    reap_stale_under,
    write_limit,
)
from .detect import CgroupHost
from .limits import CFS_PERIOD_US, UNLIMITED

SPLIT_ATTEMPTS = 50  # rounds of "move everyone to init/, enable memory" racing the init's forks


def _enable(dir_fd: int, controllers: frozenset[str] | set[str]) -> None:
    """Add controllers to a cgroup's subtree_control (a no-op write is avoided: it is not free)."""
    missing = set(controllers) - set(_fs.read(dir_fd, "cgroup.subtree_control").split())
    if missing:
        _fs.write(dir_fd, "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


def _preparer(host: CgroupHost) -> Prepare:
    def prepare(dir_fd: int, is_top: bool) -> None:
        try:
            _enable(dir_fd, host.controllers)
        except OSError as e:
            if not (is_top and e.errno == errno.EBUSY):
                raise
            _leave_parent(host, dir_fd)
            _enable(dir_fd, host.controllers)

    return prepare


def _leave_parent(host: CgroupHost, parent_fd: int) -> None:
    """Empty our parent cgroup of ourselves so it may enable controllers (no internal processes)."""
    members = set(_fs.pids(parent_fd))
    if members - {os.getpid()} or not members:
        raise CgroupError(
            f"cannot enable {'/'.join(sorted(host.controllers))} for sandkit's cgroups: the cgroup "
            f"{host.parents['memory']} holds other processes ({len(members)}), and cgroup v2 lets "
            "only a cgroup without processes hand controllers to its children; run this program in "
            "its own delegated scope, e.g. `systemd-run --user --scope -p Delegate=yes python ...`"
        )
    leaf = _fs.make_dir(parent_fd, f"{host.name}-host-{host_tag()}", exist_ok=True)
    try:
        _fs.write(leaf, "cgroup.procs", os.getpid())
    finally:
        os.close(leaf)


class V2ExecCgroup(ExecCgroup):
    """One exec's accounting cgroup, a child of its container's in the unified (v2) tree."""

    def __init__(self, parent_fd: int, name: str) -> None:
        self._parent_fd, self._name = parent_fd, name
        self._fd: int | None = _fs.make_dir(parent_fd, name)

    def fds(self) -> list[int]:
        return [] if self._fd is None else [self._fd]

    def usage(self) -> ExecUsage:
        if self._fd is None:
            raise CgroupError("usage() after close()")
        return ExecUsage(
            cpu_ns=_fs.read_keyed(self._fd, "cpu.stat").get("usage_usec", 0) * 1000,
            memory_peak=_fs.read_int(self._fd, "memory.peak"),  # Linux >= 5.19
            oom_killed=_fs.read_keyed(self._fd, "memory.events").get("oom_kill", 0) > 0,
        )

    def _close(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        try:
            os.rmdir(self._name, dir_fd=self._parent_fd)
        except OSError:
            pass  # still busy with background processes: the container's destroy takes it


class V2ContainerCgroup(ContainerCgroup):
    """A container's cgroup in the unified (v2) tree, with its limits and, for accounting, a child
    for the init."""

    _fd: int | None = None
    _init_fd: int | None = None

    def _build(self) -> None:
        parent = self.host.parents["memory"]
        self._tag_fd = HostDirs.get(self.host, parent, _preparer(self.host))
        self._fd = _fs.make_dir(self._tag_fd, self.name)
        self._write_limits(self._fd)

    def _write_limits(self, fd: int) -> None:
        lim = self.limits
        if lim.memory is not None:
            write_limit(fd, "memory.max", lim.memory)
            swap = lim.swap_only()
            # memory.swap.max is missing when the kernel was booted without swap accounting.
            if swap is not None and os.access("memory.swap.max", os.F_OK, dir_fd=fd):
                write_limit(fd, "memory.swap.max", "max" if swap == UNLIMITED else swap)
        if lim.cpus is not None:
            write_limit(fd, "cpu.max", f"{lim.cpu_quota_us()} {CFS_PERIOD_US}")
        if lim.cpu_shares is not None:
            write_limit(fd, "cpu.weight", lim.cpu_weight() or 100)
        if lim.pids is not None:
            write_limit(fd, "pids.max", lim.pids)

    def _dir(self) -> int:
        if self._fd is None:
            raise CgroupError(f"the cgroup of container {self.name} was already destroyed")
        return self._fd

    def join_fds(self) -> list[int]:
        return [self._dir()]

    def add_pid(self, pid: int) -> None:
        # After the split the container directory may not hold processes: its leaf takes them.
        _fs.write(self._init_fd if self._init_fd is not None else self._dir(), "cgroup.procs", pid)

    def _exec_cgroup(self, name: str) -> ExecCgroup:
        if self._init_fd is None:
            self._split()
        return V2ExecCgroup(self._dir(), name)

    def _pids_dir(self) -> int | None:
        return self._fd

    def _split(self) -> None:
        """Move every process of the container directory into `init/`, then enable memory."""
        fd = self._dir()
        init_fd = _fs.make_dir(fd, "init", exist_ok=True)
        try:
            for _ in range(SPLIT_ATTEMPTS):
                for pid in _fs.pids(fd):
                    _move(init_fd, pid)
                try:
                    # Only what the kernel offers here (a controller-less tree still gives cpu.stat).
                    _enable(fd, {"memory"} & set(_fs.read(fd, "cgroup.controllers").split()))
                    self._init_fd = init_fd
                    return
                except OSError as e:
                    if e.errno != errno.EBUSY:  # EBUSY: a process was forked into it meanwhile
                        raise
            raise CgroupError(
                f"container {self.name} keeps forking into its cgroup; cannot split it"
            )
        except BaseException:
            if self._init_fd is None:
                os.close(init_fd)
            raise

    def stats(self) -> CgroupStats:
        fd = self._dir()
        return CgroupStats(
            memory_current=_fs.read_int(fd, "memory.current"),
            memory_peak=_fs.read_int(fd, "memory.peak"),
            cpu_ns=_fs.read_keyed(fd, "cpu.stat").get("usage_usec", 0) * 1000,
            pids_current=_fs.read_int(fd, "pids.current"),
        )

    def _teardown(self) -> None:
        for attr in ("_init_fd", "_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        tag_fd = getattr(self, "_tag_fd", None)
        if tag_fd is not None:
            _fs.remove_tree(tag_fd, self.name, use_kill_file=True)


def _move(dest_fd: int, pid: int) -> None:
    try:
        _fs.write(dest_fd, "cgroup.procs", pid)
    except ProcessLookupError:
        pass  # exited meanwhile
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def reap_stale(host: CgroupHost) -> list[str]:
    """Remove the empty cgroup directories that processes now dead left in the v2 tree (their
    containers' and their own leaves); returns their paths."""
    parent = host.parents.get("memory")
    if parent is None:
        return []
    removed = reap_stale_under(parent, host.name, True)
    # Our `<name>-host-<tag>` leaves (see _leave_parent): empty once their process is gone.
    prefix = f"{host.name}-host-"
    for entry in os.listdir(parent):
        if entry.startswith(prefix) and is_stale(entry[len(prefix) :]):
            try:
                os.rmdir(os.path.join(parent, entry))
                removed.append(os.path.join(parent, entry))
            except OSError:
                pass
    return removed
