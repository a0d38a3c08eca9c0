"""Small fd-relative helpers for cgroupfs: open a directory once, then read/write its files by name.

Working through directory fds keeps start-up fast (no path walk per write) and immune to the tree
being renamed under us; cgroupfs files are tiny, so one read/write syscall each is enough.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
RMDIR_PATIENCE = 2.0  # seconds to wait for the kernel to let go of a cgroup after its tasks died


def open_dir(name: str, dir_fd: int | None = None) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def make_dir(parent_fd: int, name: str, exist_ok: bool = False) -> int:
    """mkdir a cgroup under ``parent_fd`` and return its open directory fd."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        if not exist_ok:
            raise
    return open_dir(name, parent_fd)


def read(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def write(dir_fd: int, name: str, value: str | int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def read_int(dir_fd: int, name: str) -> int | None:
    """An integer file; None if the file is missing or says "max"."""
    try:
        text = read(dir_fd, name).strip()
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def read_keyed(dir_fd: int, name: str) -> dict[str, int]:
    """A flat-keyed file ("key value" per line: cpu.stat, memory.events, memory.oom_control)."""
    try:
        text = read(dir_fd, name)
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def pids(dir_fd: int) -> list[int]:
    return [int(p) for p in read(dir_fd, "cgroup.procs").split()]


def subdirs(dir_fd: int) -> list[str]:
    """Child cgroups: in cgroupfs every directory is one (and nothing else is a directory)."""
    with os.scandir(dir_fd) as entries:
        return [e.name for e in entries if e.is_dir(follow_symlinks=False)]


def walk_post_order(dir_fd: int) -> Iterator[tuple[int, str]]:
    """(parent fd, name) of every descendant cgroup, deepest first: the order rmdir needs."""
    for name in subdirs(dir_fd):
        try:
            child = open_dir(name, dir_fd)
        except FileNotFoundError:
            continue
        try:
            yield from walk_post_order(child)
        finally:
            os.close(child)
        yield dir_fd, name


def kill_all(dir_fd: int) -> int:
    """SIGKILL every process listed in this cgroup; returns how many were still there.

    A pid read from cgroup.procs belongs to a live (or not yet released) member of the cgroup, and
    processes forked in between are caught by the caller's next round.
    """
    try:
        members = pids(dir_fd)
    except FileNotFoundError:
        return 0
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(members)


def rmdir_patiently(parent_fd: int, name: str, deadline: float) -> None:
    """rmdir a cgroup, retrying EBUSY while its killed tasks finish exiting (a few ms)."""
    delay = 0.0005
    while True:
        try:
            os.rmdir(name, dir_fd=parent_fd)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        child = _try_open(parent_fd, name)
        if child is not None:
            # Tasks may have been added (a fork racing the kill): kill again before retrying.
            try:
                kill_all(child)
            finally:
                os.close(child)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _try_open(parent_fd: int, name: str) -> int | None:
    try:
        return open_dir(name, parent_fd)
    except FileNotFoundError:
        return None


def remove_tree(parent_fd: int, name: str, use_kill_file: bool = False) -> None:
    """Kill every process in cgroup ``name`` and its descendants, then remove them all.

    ``use_kill_file``: v2's cgroup.kill kills the whole subtree atomically (no fork race); on v1
    we kill member by member, subtree by subtree, which converges because the killed processes
    cannot fork any more and the container's PID 1 dying takes its whole PID namespace down.
    """
    top = _try_open(parent_fd, name)
    if top is None:
        return
    deadline = time.monotonic() + RMDIR_PATIENCE
    try:
        if not (use_kill_file and _kill_file(top)):
            kill_tree(top)
        for fd, child in walk_post_order(top):
            rmdir_patiently(fd, child, deadline)
    finally:
        os.close(top)
    rmdir_patiently(parent_fd, name, deadline)


def remove_if_empty(parent_fd: int, name: str) -> bool:
    """rmdir cgroup ``name`` and its descendants, deepest first, killing nothing: the kernel
    refuses (EBUSY) a cgroup that holds a process, and then the rest is left as it is."""
    top = _try_open(parent_fd, name)
    if top is None:
        return True
    try:
        for fd, child in walk_post_order(top):
            os.rmdir(child, dir_fd=fd)
    except FileNotFoundError:
        pass  # removed meanwhile by another process doing the same
    except OSError:
        return False
    finally:
        os.close(top)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def kill_tree(dir_fd: int) -> None:
    for fd, child in walk_post_order(dir_fd):
        sub = _try_open(fd, child)
        if sub is not None:
            kill_all(sub)
            os.close(sub)
    kill_all(dir_fd)


def _kill_file(dir_fd: int) -> bool:
    try:
        write(dir_fd, "cgroup.kill", "1")
        return True
    except FileNotFoundError:  # kernels before 5.14
        return False


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks): tells a pid's reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()
