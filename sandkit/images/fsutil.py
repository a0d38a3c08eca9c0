"""Small filesystem helpers shared by the store and the layer code."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _scan(fd: int, on_file: Callable[[int, os.DirEntry[str]], None]) -> list[str]:
    """Call ``on_file`` on every entry of directory ``fd`` but subdirectories; return those."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                on_file(fd, entry)
    return subdirs


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def walk_tree(
    top_fd: int,
    on_file: Callable[[int, os.DirEntry[str]], None],
    on_dir_done: Callable[[int, str], None] = lambda parent_fd, name: None,
    on_enter: Callable[[int], None] = lambda fd: None,
    open_dir: Callable[[str, int], int] = _open_dir,
) -> None:
    """Visit the tree under directory ``top_fd``: ``on_enter(fd)`` on entering each directory,
    ``on_file(dir_fd, entry)`` for each entry that is not a directory (symlinks are not
    followed), ``on_dir_done(parent_fd, name)`` once a subdirectory's contents were visited.

    Without recursion and with one directory open at a time, by fds and names: a layer may nest
    2,000 directories, deeper than Python's recursion limit (shutil.rmtree and os.walk fail
    there) and deeper than any path from the store can name (PATH_MAX). Climbing back by ".."
    checks it arrives where it came from: `OSError` (ESTALE) if the tree was moved meanwhile.
    """
    fd = os.dup(top_fd)
    try:
        on_enter(fd)
        subdirs = _scan(fd, on_file)
        # (a directory's name in its parent, its siblings left, the parent's identity)
        stack: list[tuple[str, list[str], tuple[int, int]]] = []
        while True:
            if subdirs:  # down into the next subdirectory
                name = subdirs.pop()
                step = open_dir(name, fd)
                parent = _identity(fd)
                os.close(fd)
                fd = step
                stack.append((name, subdirs, parent))
                on_enter(fd)
                subdirs = _scan(fd, on_file)
            elif stack:  # this directory is done: back up to its parent
                name, subdirs, parent = stack.pop()
                step = os.open("..", DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = step
                _check_back_in(fd, parent)
                on_dir_done(fd, name)
            else:
                return
    finally:
        os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _check_back_in(fd: int, parent: tuple[int, int]) -> None:
    """The walk climbs back by "..": a directory moved meanwhile (a running container's, in a
    volume) would put it elsewhere, even out of the tree, where it would go on by the names it
    has left. It stops instead."""
    if _identity(fd) != parent:
        raise OSError(
            errno.ESTALE, "a directory was moved while its tree was walked; walk it again"
        )


def _owner_writable(fd: int) -> None:
    # mode 0555 directories are common in images, and a rootless user has no CAP_DAC_OVERRIDE
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, stat.S_IRWXU)


def _open_dir_owned(name: str, dir_fd: int) -> int:
    """Opens a subdirectory to empty it, even one its owner may not read (mode 0, which a
    container can leave in a volume; a rootless user has no CAP_DAC_OVERRIDE): it is made
    readable first through an O_PATH fd, so that a symlink in its place is never followed."""
    try:
        return _open_dir(name, dir_fd)
    except PermissionError:
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if not stat.S_ISDIR(os.fstat(path_fd).st_mode):
                raise
            os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IRWXU)  # the directory itself
        finally:
            os.close(path_fd)
    return _open_dir(name, dir_fd)


# <linux/fs.h>: the inode flags chattr sets (the kernel reads and writes an int)
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_UNREMOVABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL


def _clear_unremovable(fd: int) -> bool:
    """Clears the immutable and append-only flags of the file or directory ``fd`` (which no
    unlink gets past, not even root's; a container given CAP_LINUX_IMMUTABLE can set them in
    its volume). Whether it did: only root may, and not every filesystem has them."""
    try:
        flags = int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(4)), "little")
        if not flags & _UNREMOVABLE_FLAGS:
            return False
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (flags & ~_UNREMOVABLE_FLAGS).to_bytes(4, "little"))
    except OSError:  # ENOTTY/EOPNOTSUPP: no flags here; EPERM: not root
        return False
    return True


def _removable_dir(fd: int) -> None:
    _owner_writable(fd)
    _clear_unremovable(fd)  # an immutable or append-only directory keeps its entries


def _unlink_flagged(dir_fd: int, entry: os.DirEntry[str]) -> None:
    """Unlinks ``entry``; a regular file that is immutable or append-only loses the flag first
    (a symlink or special file cannot have it: chattr's ioctl does not reach their inode)."""
    try:
        os.unlink(entry.name, dir_fd=dir_fd)
        return
    except PermissionError:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        if not entry.is_file(follow_symlinks=False):
            raise
        fd = os.open(entry.name, flags, dir_fd=dir_fd)
        try:
            if not (stat.S_ISREG(os.fstat(fd).st_mode) and _clear_unremovable(fd)):
                raise
        finally:
            os.close(fd)
    os.unlink(entry.name, dir_fd=dir_fd)


def remove_tree_at(dir_fd: int | None, name: str) -> None:
    """Delete directory ``name`` (relative to ``dir_fd`` if given) and everything under it, even
    read-only or unreadable directories, or (as root) immutable or append-only files, however
    deep."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        walk_tree(
            fd,
            _unlink_flagged,
            lambda parent_fd, sub: os.rmdir(sub, dir_fd=parent_fd),
            _removable_dir,
            _open_dir_owned,
        )
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete ``path``: a directory tree (see :func:`remove_tree_at`) or a file; gone is fine."""
    if not os.path.lexists(path):
        return
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree_at(None, os.fspath(path))
        else:
            os.unlink(path)
    except FileNotFoundError:
        if os.path.lexists(path):  # only a tree that vanished meanwhile is fine
            raise


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON (sorted keys) to ``path`` atomically: a reader sees the old file or
    the whole new one."""
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def dir_size(path: Path) -> int:
    """Bytes used by regular files under ``path`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def count(dir_fd: int, entry: os.DirEntry[str]) -> None:
        nonlocal total
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size

    try:
        fd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        return 0
    try:
        walk_tree(fd, count)
    except OSError:
        pass  # changed while walked (a container's volume in use): the count so far
    finally:
        os.close(fd)
    return total


# --- opening files inside a directory, never outside it ---------------------------------------

_SYS_OPENAT2 = 437  # one number on every architecture: openat2 came after the tables were unified
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, name: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        os.fsencode(name),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return int(fd)


def _openat2_beneath(dir_fd: int, name: str, flags: int) -> int:
    return _openat2(dir_fd, name, flags, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)


def _open_without_symlinks(dir_fd: int, name: str, flags: int) -> int:
    """The fallback before Linux 5.6 (or under a seccomp filter that hides openat2): no symlink
    is followed at all, which also refuses links that stay inside."""
    parts = [p for p in name.split("/") if p]
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


def open_beneath(dir_fd: int, name: str, flags: int) -> int:
    """Open ``name`` relative to ``dir_fd`` so that nothing, symlinks included, resolves outside
    that directory (openat2's RESOLVE_BENEATH; no /proc magic links). A path that would leave it
    fails with EXDEV (ELOOP from the fallback)."""
    try:
        return _openat2_beneath(dir_fd, name, flags)
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EPERM):
            raise
    return _open_without_symlinks(dir_fd, name, flags)


def open_regular_beneath(dir_fd: int, name: str) -> BinaryIO | None:
    """A regular file ``name`` under ``dir_fd``, opened for reading; None if what is there is not
    a regular file (a FIFO, a device, a directory). Opened non-blocking first, so that a FIFO
    cannot hang the open, then made blocking again."""
    fd = open_beneath(dir_fd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def openat2_no_symlinks(dir_fd: int, name: str, flags: int) -> int | None:
    """Open ``name`` under ``dir_fd`` in one syscall, refusing a symlink anywhere on the way
    (openat2's RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH); raises OSError as os.open does, or returns
    None where the kernel has no openat2: then the caller walks component by component."""
    try:
        return _openat2(dir_fd, name, flags, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):
            return None
        raise
