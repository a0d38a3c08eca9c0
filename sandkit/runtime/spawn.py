"""Start a container's init: clone3 into new namespaces, write the id maps, exec the init memfd.

The C half (``sandkit/_clone.c``) does the clone and everything the child must do before exec;
this half owns the policy: which namespaces, which id maps, and turning every failure into a
sandkit error that says what to change. On any failure nothing is left behind: the child is
killed and reaped, and every fd made here is closed.

What the init gets (its side of the contract, see docs/protocol.md): fd 3 is ``control``; fds 0,
1 and 2 are /dev/null; no other fd; an empty environment (host secrets stay out); default signal
handling; pid 1 of a new pid namespace, in new mount, ipc, uts and cgroup namespaces (plus net
and user when asked). In user-namespace mode it is uid 0 / gid 0 there.

Id maps in user-namespace mode: the caller's own uid and gid become 0 inside. A rootless caller
with /etc/subuid and /etc/subgid entries (and the setuid helpers newuidmap/newgidmap) also maps
1..65535 to the first ids of its subordinate ranges, as rootless Podman does, so that an image's
own users exist inside (``idmap.py``); without entries the map is that one id, which needs
nothing from the host, and a container run as another user fails with the exact fix. Root maps
its own one id (``"0 0 1"``): root mode does not use a user namespace by default. Callers who
want another mapping pass ``id_maps``; see ``subid_maps``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import attrs

from .. import idmap
from ..errors import ContainerStartError, HostUnsupportedError
from .process import wait_ready

if TYPE_CHECKING:
    from cffi import FFI

    from .._clone_ffi import Lib

INIT_PATH = Path(__file__).resolve().parent.parent / "_init_bin" / "sandkit-init"

_MFD_EXEC = 0x0010  # Linux >= 6.3: ask for an executable memfd (else a vm.memfd_noexec warning)
_F_SEAL_EXEC = 0x0020  # Linux >= 6.3: nobody can chmod the exec bits away (or back)
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

_CHILD_ERROR = struct.Struct("=ii")  # struct sk_child_error: stage, errno
_STAGES = {  # enum sk_stage -> what the child was doing
    1: "waiting for the host to release it",
    2: "becoming root in its new user namespace",
    3: "arranging its file descriptors",
    4: "opening /dev/null for its stdio",
    5: "resetting its signal handling",
    6: "executing the init",
}
_STAGE_EXEC = 6
# enum sk_stage: the steps of a nested clone's helper (sk_child.failed_stage)
_STAGE_JOIN_USERNS = 7
_STAGE_NESTED_CLONE = 8
_STAGE_MAPS = 9

_USERNS_SYSCTLS = (
    "user.max_user_namespaces",
    "kernel.unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns",
)


# --- the init executable, as a sealed memfd -----------------------------------------------------

_memfd_lock = threading.Lock()
_memfd: int | None = None


def init_memfd() -> int:
    """The init executable in a sealed memfd, made once per host process and shared by every
    container (a forked host inherits it and may keep using it). Close-on-exec."""
    global _memfd
    with _memfd_lock:
        if _memfd is None:
            _memfd = sealed_exec_memfd(INIT_PATH)
        return _memfd


def sealed_exec_memfd(path: Path, name: str = "sandkit-init") -> int:
    """A new close-on-exec memfd holding the bytes of ``path``, sealed against any change: the
    container cannot rewrite the binary through /proc/1/exe, nor can anyone else."""
    data = _read_executable(path)
    fd = _memfd_create(name)
    try:
        _write_all(fd, data)
        _add_seals(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_executable(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ContainerStartError(
            f"the container init {path} is missing: sandkit is not built. "
            "Install it from its source tree with `pip install .` (or `pip install -e .`), "
            "which compiles the init with gcc."
        ) from None


def _memfd_create(name: str) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create(name, flags | _MFD_EXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel before 6.3, which has no MFD_EXEC
            raise
    return os.memfd_create(name, flags)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _add_seals(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | _F_SEAL_EXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: no F_SEAL_EXEC before 6.3
            raise
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)


# --- id maps -----------------------------------------------------------------------------------


@attrs.frozen
class IdMaps:
    """What to write to /proc/<pid>/{uid_map,gid_map} ("inside outside count" lines)."""

    uid_map: str
    gid_map: str
    #: write "deny" to /proc/<pid>/setgroups first: the kernel demands it before an
    #: unprivileged caller writes gid_map (else it could drop groups that deny it access).
    deny_setgroups: bool
    #: writes both maps itself (with newuidmap/newgidmap) instead of writing the texts above
    writer: Callable[[int], None] | None = None


def default_id_maps() -> IdMaps:
    """The caller's euid and egid become 0 inside, with its subordinate range when it has one:
    see the module docstring."""
    mapping = idmap.rootless_mapping()
    if mapping is not None:
        return IdMaps(mapping.uid_map, mapping.gid_map, deny_setgroups=False, writer=mapping.write)
    uid, gid = os.geteuid(), os.getegid()
    return IdMaps(f"0 {uid} 1\n", f"0 {gid} 1\n", deny_setgroups=uid != 0)


def subid_maps(user: str = "root", count: int = 65536) -> IdMaps | None:
    """Maps 0..count-1 inside onto ``user``'s first subordinate range in /etc/subuid and
    /etc/subgid, or None when either has no entry. Written directly, so only root can use
    them (others would need the setuid newuidmap helper)."""
    uids, gids = _subid_range(Path("/etc/subuid"), user), _subid_range(Path("/etc/subgid"), user)
    if uids is None or gids is None:
        return None
    (ustart, ucount), (gstart, gcount) = uids, gids
    return IdMaps(f"0 {ustart} {min(count, ucount)}\n", f"0 {gstart} {min(count, gcount)}\n", False)


def _subid_range(path: Path, user: str) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            fields = line.strip().split(":")
            if (
                len(fields) == 3
                and fields[0] == user
                and fields[1].isdigit()
                and fields[2].isdigit()
            ):
                return int(fields[1]), int(fields[2])
    return None


def _write_id_maps(pid: int, maps: IdMaps) -> None:
    if maps.writer is not None:
        maps.writer(pid)
        return
    if maps.deny_setgroups:
        _write_proc(pid, "setgroups", "deny")
    _write_proc(pid, "uid_map", maps.uid_map)
    _write_proc(pid, "gid_map", maps.gid_map)


def _write_proc(pid: int, name: str, text: str) -> None:
    """The kernel takes a map in one write() only."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise ContainerStartError(
            f"cannot write /proc/{pid}/{name} ({text.strip()!r}) for the container's user "
            f"namespace: {e.strerror}. Without privileges only your own uid and gid can be "
            "mapped (one id each); map ranges as root."
        ) from None


# --- the spawned init ---------------------------------------------------------------------------


@attrs.define(eq=False)
class SpawnedInit:
    """A running init, held through its pidfd (immune to pid reuse). The pidfd is pollable:
    it becomes readable when the init has exited, so async code can wait for that and then
    call ``wait()`` without blocking."""

    pid: int
    pidfd: int
    _status: int | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signals the init (SIGKILL by default); a no-op once it has exited or been closed."""
        if self.pidfd < 0 or self._status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def wait(self) -> int:
        """Blocks until the init exits and reaps it. Returns its exit code, or -signo when a
        signal killed it (as subprocess does). Safe to call again and from several threads."""
        with self._lock:
            if self._status is None:
                status = self._reap(0)
                assert status is not None  # a waitid without WNOHANG returns once it exited
                self._status = status
            return self._status

    def poll(self) -> int | None:
        """The exit status if the init has exited (reaping it), else None."""
        with self._lock:
            if self._status is None:
                self._status = self._reap(os.WNOHANG)
            return self._status

    def _reap(self, flags: int) -> int | None:
        if self.pidfd < 0:
            raise ValueError("SpawnedInit is closed")
        result = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | flags)
        if result is None:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status

    def close(self) -> None:
        """Kills the init if it still runs, reaps it, and closes the pidfd. Idempotent."""
        if self.pidfd < 0:
            return
        self.kill()
        self.wait()
        os.close(self.pidfd)
        self.pidfd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn_init(
    control: socket.socket,
    *,
    user_namespace: bool,
    network: bool = False,
    cgroup_fd: int | None = None,
    before_release: Callable[[int], None] | None = None,
    id_maps: IdMaps | None = None,
    parent_userns: int | None = None,
    exec_fd: int | None = None,
    argv: Sequence[str | bytes] = ("sandkit-init",),
    env: Sequence[str | bytes] = (),
    timeout: float = 30.0,
) -> SpawnedInit:
    """Starts the init in new namespaces with ``control`` as its fd 3 and returns once it has
    exec'd (or raises, leaving nothing behind).

    user_namespace: new user namespace, ids mapped by ``id_maps`` (default: see module doc).
    parent_userns: with user_namespace, an fd of /proc/<pid>/ns/user: the new user namespace
        is made a child of that one (not of ours) and maps uid and gid 0 to its 0 ("0 0 1"),
        so that its owner (a network's keeper) has the capabilities over the container's
        namespaces that it needs. It must be ours (owned by our euid) and map 0. When this
        process has a subordinate range (idmap.py), the keeper's maps it too, and so does the
        container: 0..65535 to the same ids of the parent ("0 0 1" and "1 1 65535").
    network: True = a new, empty network namespace (only a down ``lo``); False = the host's.
    cgroup_fd: a cgroup v2 directory fd the init starts in (CLONE_INTO_CGROUP).
    before_release: called with the init's pid after the id maps are written and before it
        may run (e.g. to move it into v1 cgroups); if it raises, the spawn is undone.
    exec_fd, argv, env: what to exec; default the sandkit init memfd, with no environment.
    timeout: seconds to wait for the exec to succeed or fail before giving up.
    """
    if parent_userns is not None and (not user_namespace or id_maps is not None):
        raise ValueError("parent_userns needs user_namespace=True and takes no id_maps")
    exe = init_memfd() if exec_fd is None else exec_fd
    clone = functools.partial(
        _clone,
        control.fileno(),
        exe,
        argv=argv,
        env=env,
        new_user=user_namespace,
        new_net=network,
        cgroup_fd=cgroup_fd,
        userns_fd=parent_userns,
    )
    pid, pidfd, go_fd, err_fd, release = _clone_nested(clone) if parent_userns else clone()
    child = SpawnedInit(pid, pidfd)
    try:
        with contextlib.closing(_Fd(err_fd)), contextlib.closing(_Fd(go_fd)) as go:
            if user_namespace and parent_userns is None:  # else the C helper wrote them
                _write_id_maps(pid, id_maps or default_id_maps())
            if before_release is not None:
                before_release(pid)
            os.write(go.fd, b"\0")
            go.close()  # so a child that dies before reading it does not leave us stuck
            _await_exec(err_fd, timeout)
    except BaseException:
        child.close()
        raise
    finally:
        release()  # the child has exec'd or is gone: its stack and context are free
    return child


class _Fd:
    """An fd closed exactly once (closing() calls close() again at the end)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _await_exec(err_fd: int, timeout: float) -> None:
    """EOF on the error pipe means the exec succeeded (the pipe was close-on-exec)."""
    if not wait_ready(err_fd, timeout=timeout):
        raise ContainerStartError(
            f"the container init neither started nor failed within {timeout:g} s "
            "(is the host overloaded, or the process stopped?)"
        )
    report = os.read(err_fd, _CHILD_ERROR.size)
    if not report:
        return
    if len(report) != _CHILD_ERROR.size:
        raise ContainerStartError("the container init sent a torn error report (a sandkit bug)")
    raise _child_error(*_CHILD_ERROR.unpack(report))


def _child_error(stage: int, err: int) -> ContainerStartError:
    what = _STAGES.get(stage, f"step {stage}")
    msg = f"the container init failed while {what}: {os.strerror(err)} ({errno.errorcode.get(err, err)})"
    if stage == _STAGE_EXEC and err in (errno.ENOEXEC, errno.EACCES, errno.EPERM):
        msg += (
            ". The init binary is not executable here: reinstall sandkit (`pip install .`); "
            "if the host forbids executing memfds, set `sysctl vm.memfd_noexec=0`."
        )
    return ContainerStartError(msg)


# --- the C call ----------------------------------------------------------------------------------


def _lib() -> tuple[FFI, Lib]:
    try:
        from .._clone_ffi import ffi, lib
    except ImportError as e:
        raise ContainerStartError(
            f"sandkit is not built (its C module is missing: {e}). Install it from its source "
            "tree with `pip install .` (or `pip install -e .`)."
        ) from None
    return ffi, lib


_Cloned = tuple[int, int, int, int, Callable[[], None]]


def _clone(
    control_fd: int,
    exec_fd: int,
    *,
    argv: Sequence[str | bytes],
    env: Sequence[str | bytes],
    new_user: bool,
    new_net: bool,
    cgroup_fd: int | None,
    userns_fd: int | None = None,
    nested: tuple[str, bool] | None = None,
) -> tuple[int, int, int, int, Callable[[], None]]:
    """sk_clone(): returns (pid, pidfd, go_fd, err_fd, release) or raises the error clone3
    earned. Call ``release()`` once err_fd reported the exec or the child is reaped."""
    if not argv:
        raise ValueError("argv must not be empty")
    ffi, lib = _lib()
    keep: list[object] = []  # the C strings must outlive the call
    args = ffi.new(
        "struct sk_clone_args *",
        {
            "control_fd": control_fd,
            "exec_fd": exec_fd,
            "cgroup_fd": -1 if cgroup_fd is None else cgroup_fd,
            "new_user": int(new_user),
            "new_net": int(new_net),
            "userns_fd": -1 if userns_fd is None else userns_fd,
            "argv": _c_strings(ffi, argv, keep),
            "envp": _c_strings(ffi, env, keep),
            "nested_map": _c_string(ffi, nested[0] if nested else None, keep),
            "nested_setgroups": int(nested[1]) if nested else 0,
        },
    )
    out: Any = ffi.new("struct sk_child *")  # cffi knows the struct's fields at run time only
    rc = lib.sk_clone(args, out)
    if rc < 0 and out.failed_stage:
        raise _nested_clone_error(out.failed_stage, -rc, userns_fd, cgroup=cgroup_fd is not None)
    if rc < 0:
        raise _clone_error(-rc, new_user=new_user, cgroup=cgroup_fd is not None)
    return out.pid, out.pidfd, out.go_fd, out.err_fd, lambda: lib.sk_release(out)


def _c_string(ffi: FFI, text: str | None, keep: list[object]) -> FFI.CData:
    """A C string kept alive in ``keep``, or NULL."""
    if text is None:
        return ffi.NULL
    string = ffi.new("char[]", text.encode())
    keep.append(string)
    return string


class _NestedMapsRefused(ContainerStartError):
    """The parent user namespace refused the nested container's maps."""


_ONE_ID = ("0 0 1\n", False)


def _clone_nested(clone: Callable[..., _Cloned]) -> _Cloned:
    """``clone(nested=...)`` with the range when we have one; a keeper that maps one id (it
    started before the /etc/subuid entry was added) refuses it, and the container gets its one
    id then (a user other than root fails later, with `idmap.unmapped_fix`)."""
    nested = _nested_map()
    try:
        return clone(nested=nested)
    except _NestedMapsRefused:
        if nested == _ONE_ID:
            raise
        return clone(nested=_ONE_ID)


def _nested_map() -> tuple[str, bool]:
    """The map of a container nested in a network keeper's user namespace: the keeper's
    mapping, seen from inside it (its 0..n-1), for uids and gids alike; and whether setgroups
    stays allowed (with a range, as newgidmap leaves it in the keeper's and in a container that
    is not nested)."""
    mapping = idmap.rootless_mapping()
    if mapping is None:
        return _ONE_ID
    # One line per line of the parent's map: the kernel maps each line through one of them.
    return f"0 0 1\n1 1 {min(mapping.inner_uids, mapping.inner_gids) - 1}\n", True


def _c_strings(ffi: FFI, items: Sequence[str | bytes], keep: list[object]) -> FFI.CData:
    """A NULL-terminated char *[] whose strings are kept alive in ``keep``."""
    strings = [ffi.new("char[]", os.fsencode(item)) for item in items]
    array = ffi.new("char *[]", [*strings, ffi.NULL])
    keep.extend(strings)
    keep.append(array)
    return array


def _clone_error(err: int, *, new_user: bool, cgroup: bool) -> Exception:
    """Turns a failed clone3 into the error a user can act on."""
    reason = f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"
    if err == errno.ENOSYS:
        return HostUnsupportedError(
            "this kernel has no clone3 system call: sandkit needs Linux 5.3 or newer (5.11+ "
            "for rootless mode). Upgrade the kernel, or allow clone3 in the seccomp profile "
            "of the container sandkit runs in."
        )
    if cgroup and err in (errno.EBADF, errno.EOPNOTSUPP, errno.EBUSY, errno.EACCES, errno.EINVAL):
        return ContainerStartError(
            f"cannot start the container in the given cgroup: {reason}. cgroup_fd must be an "
            "open cgroup v2 directory that you may write cgroup.procs of, with no controllers "
            "enabled in its cgroup.subtree_control (a leaf); starting in a cgroup needs Linux 5.7."
        )
    if new_user and err in (errno.EPERM, errno.ENOSPC, errno.EUSERS, errno.EACCES):
        return HostUnsupportedError(
            f"user namespaces are unavailable to this process: {reason}. Enable them: "
            f"{_userns_hint()}."
        )
    if err == errno.EPERM:
        return HostUnsupportedError(
            f"creating namespaces was refused: {reason}. Without a user namespace this needs "
            "root (CAP_SYS_ADMIN): run as root, or use rootless mode (user_namespace=True). "
            "Inside a container, its seccomp profile or capabilities may forbid it."
        )
    if err in (errno.ENOSPC, errno.EUSERS):
        return HostUnsupportedError(
            f"the namespace limit is reached: {reason}. Raise the user.max_*_namespaces "
            "sysctls (pid, mnt, net, ipc, uts, cgroup), or stop some containers."
        )
    if err == errno.EINVAL:
        return HostUnsupportedError(
            f"the kernel rejected the namespaces sandkit asks for: {reason}. It is too old or "
            "built without namespace support (CONFIG_NAMESPACES, CONFIG_PID_NS, CONFIG_NET_NS, "
            "CONFIG_USER_NS, CONFIG_CGROUPS); sandkit needs Linux 5.3+."
        )
    if err in (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE):
        return ContainerStartError(
            f"cannot create the container's init process: {reason}. The host is out of "
            "processes, memory or file descriptors (check ulimit -u / -n and pids cgroups)."
        )
    return ContainerStartError(f"cannot create the container's init process: {reason}")


def _nested_clone_error(stage: int, err: int, userns_fd: int | None, *, cgroup: bool) -> Exception:
    """Turns a failed step of a nested clone's helper into the error a user can act on."""
    reason = f"{os.strerror(err)} ({errno.errorcode.get(err, err)})"
    if stage == _STAGE_JOIN_USERNS:
        return ContainerStartError(
            f"cannot nest the container's user namespace under parent_userns={userns_fd}: "
            f"{reason}. {_JOIN_USERNS_FIXES.get(err, '')}".rstrip()
        )
    if stage == _STAGE_MAPS:
        return _NestedMapsRefused(
            "cannot write the id maps of the container's user namespace (uid_map and gid_map "
            f"'0 0 1', setgroups 'deny') from its parent user namespace: {reason}. The parent "
            "must map uid 0 and gid 0 (its creator maps itself to root there, as "
            "`unshare --user --map-root-user` does)."
        )
    if err == errno.EPERM:
        return ContainerStartError(
            f"cannot create the container's user namespace inside its parent: {reason}. The "
            "parent user namespace must map your uid and gid (as `unshare --user "
            "--map-root-user` does); one that has no uid_map yet cannot hold a child."
        )
    if err == errno.ECHILD:
        return ContainerStartError(
            "the helper that nests the container's user namespace was killed before it "
            "finished (by a signal from outside sandkit); start the container again"
        )
    return _clone_error(err, new_user=True, cgroup=cgroup)


_JOIN_USERNS_FIXES = {
    errno.EBADF: "It is not an open file descriptor: open /proc/<pid>/ns/user of a process "
    "in the namespace (O_RDONLY) and keep it open until the start returns.",
    errno.EINVAL: "It is not the fd of a user namespace other than this process's own: open "
    "/proc/<pid>/ns/user of a process in the namespace to nest under (not a pidfd nor another "
    "namespace's fd).",
    errno.EPERM: "Joining it was refused: sandkit joins only a user namespace that your euid "
    "owns (made by a process of yours, as the user that starts the container).",
}


def _userns_hint() -> str:
    """The sysctls that gate user namespaces, with their values here, most likely culprit first."""
    values = {name: _sysctl(name) for name in _USERNS_SYSCTLS}
    hints = []
    if values["user.max_user_namespaces"] == "0":
        hints.append("sysctl user.max_user_namespaces=15000 (it is 0)")
    if values["kernel.unprivileged_userns_clone"] == "0":
        hints.append("sysctl kernel.unprivileged_userns_clone=1 (it is 0)")
    if values["kernel.apparmor_restrict_unprivileged_userns"] == "1":
        hints.append(
            "sysctl kernel.apparmor_restrict_unprivileged_userns=0 (it is 1), or an "
            "AppArmor profile allowing userns for this program"
        )
    if not hints:
        hints.append(
            "check sysctl user.max_user_namespaces (too low?), "
            "kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns; "
            "a chroot or a seccomp filter also forbids them"
        )
    return "; ".join(hints)


def _sysctl(name: str) -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    return None
