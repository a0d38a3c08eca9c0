"""Small filesystem helpers shared by the store and the layer code."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete a directory tree even when some of its directories are read-only (mode 0555 is
    common in images, and a rootless user has no CAP_DAC_OVERRIDE to ignore it)."""

    def fix_and_retry(func: Any, failed: str, exc_info: Any) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            func(failed)
        except FileNotFoundError:
            pass

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=fix_and_retry)
        else:
            os.unlink(path)


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
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# --- opening files inside a directory, never outside it ---------------------------------------

_SYS_OPENAT2 = 437  # one number on every architecture: openat2 came after the tables were unified
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2_beneath(dir_fd: int, name: str, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), os.fsencode(name),
        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return int(fd)


def _open_without_symlinks(dir_fd: int, name: str, flags: int) -> int:
    """The fallback before Linux 5.6 (or under a seccomp filter that hides openat2): no symlink
    is followed at all, which also refuses links that stay inside."""
    parts = [p for p in name.split("/") if p]
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
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
