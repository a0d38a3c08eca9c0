"""What the runtime sees of a container's cgroup, whatever the cgroup version.

Layout, per hierarchy (v1: each of memory/cpu/cpuacct/pids that is needed; v2: the one tree):

    <parent>/<name>/<host pid>-<host start time>/<container id>/     limits live here
                                                              x<exec id>/  per-exec accounting
                                                              init/        v2 only, see v2.py

The per-host-process level lets `reap_stale` tell whose cgroups are orphans (pid dead, or reused:
the start time no longer matches) without any state file.
"""

from __future__ import annotations

import abc
import atexit
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import ClassVar, Self

import attrs

from ...errors import CgroupError
from . import _fs
from .detect import CgroupHost
from .limits import Limits

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TAG_RE = re.compile(r"^(\d+)-(\d+)$")

# Called on each level of the per-host path (parent, <name>, <tag>) before the next one is made:
# (dir fd, is the parent) -> None. v1 fixes memory.use_hierarchy there, v2 enables controllers.
Prepare = Callable[[int, bool], None]


@attrs.frozen
class ExecUsage:
    """What one exec consumed (its whole process tree)."""

    cpu_ns: int  # user + system CPU time
    memory_peak: int | None  # high-water mark of charged memory, bytes (None: kernel lacks it)
    oom_killed: bool  # the kernel's OOM killer killed a process of this exec
    pids_limit_hit: bool = False  # a fork failed on the container's pids limit during the exec


@attrs.frozen
class CgroupStats:
    """A container's resource use now; None where the container has no cgroup for it."""

    memory_current: int | None
    memory_peak: int | None
    cpu_ns: int | None
    pids_current: int | None


def host_tag() -> str:
    """This process's directory name: pid plus start time, so a recycled pid is not mistaken."""
    pid = os.getpid()
    return f"{pid}-{_fs.process_start_time(pid)}"


def check_name(name: str) -> str:
    """``name`` itself if it can be a cgroup directory name (1 to 128 of letters, digits, ``_.-``,
    not ``.`` or ``..``), else `ValueError`."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"not a usable cgroup name: {name!r} (letters, digits, '_.-', at most 128)"
        )
    return name


def is_stale(tag: str) -> bool:
    """A host directory whose process is gone (or whose pid now belongs to another process)."""
    match = _TAG_RE.match(tag)
    if not match:
        return False  # not ours to judge
    pid, start = match.groups()
    return _fs.process_start_time(int(pid)) != start


class HostDirs:
    """This process's `<parent>/<name>/<tag>` directory fds, made on first use, one per hierarchy.

    Kept open for the life of the process so creating a container is one mkdir per hierarchy.
    A forked child gets its own tag (and so its own dirs) because the key includes the pid.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _cache: ClassVar[dict[tuple[str, str, str], int]] = {}

    @classmethod
    def get(cls, host: CgroupHost, parent: str, prepare_level: Prepare) -> int:
        """The fd of this process's directory under ``parent``, made (each level set up with
        ``prepare_level``) on the first call and kept open after. The first call also removes what
        dead processes left behind."""
        tag = host_tag()
        key = (parent, host.name, tag)
        with cls._lock:
            fd = cls._cache.get(key)
            if fd is None:
                if not cls._cache:
                    remove_empty_stale(host)
                fd = cls._make(host, parent, tag, prepare_level)
                if not cls._cache:
                    atexit.register(cls.remove_own)
                cls._cache[key] = fd
            return fd

    @classmethod
    def remove_own(cls) -> None:
        """At exit: rmdir this process's `<tag>` dirs (empty once every container was destroyed).
        A busy one is kept, so that a later call (prespawn's exit hook, after it destroyed the
        spares' cgroups) can try again; what still stays is removed by the next process's
        `_make`. Sandkit's `<name>/` dirs stay: others share them."""
        with cls._lock:
            for (parent, name, tag), fd in list(cls._cache.items()):
                if tag != host_tag():
                    continue  # inherited across fork: the parent process removes its own
                try:
                    os.rmdir(os.path.join(parent, name, tag))
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                os.close(fd)
                del cls._cache[(parent, name, tag)]

    @staticmethod
    def _make(host: CgroupHost, parent: str, tag: str, prepare_level: Prepare) -> int:
        parent_fd = _fs.open_dir(parent)
        try:
            prepare_level(parent_fd, True)
            base_fd = _fs.make_dir(parent_fd, host.name, exist_ok=True)
        finally:
            os.close(parent_fd)
        try:
            prepare_level(base_fd, False)
            tag_fd = _fs.make_dir(base_fd, tag, exist_ok=True)
        finally:
            os.close(base_fd)
        prepare_level(tag_fd, False)
        return tag_fd

    @classmethod
    def forget(cls) -> None:
        """Close every cached fd (tests; after the tree was reaped from outside)."""
        with cls._lock:
            for fd in cls._cache.values():
                os.close(fd)
            cls._cache.clear()


class ExecCgroup(abc.ABC):
    """The cgroup(s) one exec runs in, nested in its container's so the container's limits hold."""

    _on_close: Callable[[ExecCgroup], None] | None = None
    # The container's count of forks refused by its pids limit, and that count when this exec
    # began: the limit is the container's, so that is where the kernel counts (pids.events).
    _pids_refused: Callable[[], int] | None = None
    _pids_refused_before: int = 0

    @abc.abstractmethod
    def fds(self) -> list[int]:
        """Directory fds for the protocol's `cgroups` field (the child writes 0 to cgroup.procs)."""

    @abc.abstractmethod
    def usage(self) -> ExecUsage:
        """Read after the exec ended (or any time: then it is usage so far)."""

    def close(self) -> None:
        """Close our fds and rmdir the cgroup if it is empty. Processes the exec left running in
        the background keep it busy; it then goes with the container's `destroy()`. Idempotent."""
        self._close()
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None

    @abc.abstractmethod
    def _close(self) -> None: ...

    def finish(self) -> ExecUsage:
        """`usage()` then `close()`: what the runtime calls when the exec's `exit` arrives."""
        try:
            usage = self.usage()
            if self._pids_refused is not None:
                usage = attrs.evolve(
                    usage, pids_limit_hit=self._pids_refused() > self._pids_refused_before
                )
            return usage
        finally:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContainerCgroup(abc.ABC):
    """One container's cgroup(s): limits, join fds, per-exec children, stats, teardown."""

    def __init__(self, host: CgroupHost, name: str, limits: Limits, accounting: bool) -> None:
        self.host, self.name, self.limits, self.accounting = (
            host,
            check_name(name),
            limits,
            accounting,
        )
        self._destroyed = False
        self._execs: set[ExecCgroup] = set()  # open ones: their fds must close before teardown

    @staticmethod
    def create(
        host: CgroupHost, name: str, limits: Limits, accounting: bool = False
    ) -> ContainerCgroup | None:
        """Make the container's cgroup and write its limits; None when nothing needs one.

        Raises `HostUnsupportedError` when the limits cannot be enforced here (check
        ``host.why_not`` first to fall back to rlimits), `CgroupError` when the kernel refused.
        On failure nothing is left behind.
        """
        if limits.empty and not accounting:
            return None
        host.check(limits, accounting)
        cls: type[ContainerCgroup]
        if host.version == 1:
            from .v1 import V1ContainerCgroup as cls
        else:
            from .v2 import V2ContainerCgroup as cls
        cg = cls(host, name, limits, accounting)
        try:
            cg._build()
        except BaseException as e:
            cg.destroy()
            if isinstance(e, OSError):
                raise CgroupError(f"cannot set up the cgroup of container {name}: {e}") from e
            raise
        return cg

    @abc.abstractmethod
    def _build(self) -> None:
        """mkdir and write the limits (`create` cleans up if this raises)."""

    @abc.abstractmethod
    def join_fds(self) -> list[int]:
        """Directory fds to put the init in: v2 one fd for clone3(CLONE_INTO_CGROUP); v1 one per
        hierarchy, for a child that writes "0" to each's cgroup.procs (or use `add_pid`)."""

    @abc.abstractmethod
    def add_pid(self, pid: int) -> None:
        """Move a host pid (the init, right after spawn) into the container's cgroup(s)."""

    def exec_cgroup(self, exec_id: int) -> ExecCgroup:
        """A child cgroup for one exec (needs ``accounting=True``); `close()`/`finish()` it when
        the exec ends (the container's `destroy()` closes any left open)."""
        if not self.accounting:
            raise ValueError("per-exec cgroups need ContainerCgroup.create(..., accounting=True)")
        if self._destroyed:
            raise CgroupError(f"the cgroup of container {self.name} was already destroyed")
        ex = self._exec_cgroup(f"x{exec_id}")
        self._execs.add(ex)
        ex._on_close = self._execs.discard
        if self.limits.pids is not None:
            ex._pids_refused, ex._pids_refused_before = self._pids_refused, self._pids_refused()
        return ex

    def _pids_refused(self) -> int:
        """How many forks the container's pids limit refused so far (0 where the kernel does
        not count them: pids.events is Linux >= 4.6 on v1)."""
        fd = self._pids_dir()
        return 0 if fd is None else _fs.read_keyed(fd, "pids.events").get("max", 0)

    def _pids_dir(self) -> int | None:
        """The directory fd of the container's pids cgroup, if it has one."""
        return None

    @abc.abstractmethod
    def _exec_cgroup(self, name: str) -> ExecCgroup: ...

    @abc.abstractmethod
    def stats(self) -> CgroupStats:
        """The container's resource use now (memory, CPU time, pids), None for what its cgroup
        does not count."""

    @abc.abstractmethod
    def _teardown(self) -> None:
        """Kill what is left and remove every directory; must tolerate a partial `_build`."""

    def destroy(self) -> None:
        """Kill every process left in the container's cgroups and remove them. Idempotent."""
        if self._destroyed:
            return
        for ex in list(self._execs):
            ex.close()
        try:
            self._teardown()
        except OSError as e:
            raise CgroupError(f"cannot remove the cgroup of container {self.name}: {e}") from e
        self._destroyed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def write_limit(dir_fd: int, file: str, value: str | int) -> None:
    """Write one limit, turning the kernel's refusal into a message that names file and value."""
    try:
        _fs.write(dir_fd, file, value)
    except OSError as e:
        raise CgroupError(
            f"the kernel refused {value!r} for {file}: {os.strerror(e.errno or 0)}"
        ) from e


def remove_empty_stale(host: CgroupHost) -> None:
    """The `<tag>` trees of host processes that are gone, where empty, in every hierarchy: what
    a process killed before its exit hooks left. One that still holds a process is left alone
    (`reap_stale` kills). Done when a process first makes a `<tag>` of its own."""
    for parent in sorted(set(host.parents.values())):
        for base_fd, tag in _stale_tags(parent, host.name):
            _fs.remove_if_empty(base_fd, tag)


def reap_stale_under(parent: str, name: str, use_kill_file: bool) -> list[str]:
    """Remove `<parent>/<name>/<tag>` trees of dead host processes; returns the paths removed."""
    removed = []
    for base_fd, tag in _stale_tags(parent, name):
        _fs.remove_tree(base_fd, tag, use_kill_file)
        removed.append(os.path.join(parent, name, tag))
    return removed


def _stale_tags(parent: str, name: str) -> Iterator[tuple[int, str]]:
    """(fd of `<parent>/<name>`, tag) of each `<tag>` there whose host process is gone."""
    try:
        base_fd = _fs.open_dir(os.path.join(parent, name))
    except FileNotFoundError:
        return
    try:
        for tag in _fs.subdirs(base_fd):
            if is_stale(tag):
                yield base_fd, tag
    finally:
        os.close(base_fd)
