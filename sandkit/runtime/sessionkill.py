"""Kill, from the host, what a container's ended main process left running in its session.

Docker restarts a container whole, so nothing of a run outlives it. sandkit restarts only the main
process, in the same container; the init can kill an exec's tree only while it tracks the exec,
which ends with the exec's process. So before a restart the host finds the rest itself: the
container's processes (descendants of its init) whose session, as the container sees it, is the
one the main process led, and their descendants, and SIGKILLs them through pidfds (a pid that is
reused meanwhile is never signalled).
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
from pathlib import Path


def _status_ids(pid: int, key: str) -> list[int]:
    """The ids of ``key`` ("NSpid", "NSsid") in /proc/PID/status, outermost namespace first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return [int(v) for v in line.split()[1:]]
    return []


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process there is (those that vanish meanwhile left out)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                # the command name may hold anything, ") " included: the last ')' ends it
                table[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    return table


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_session(init_pid: int, session: int) -> int:
    """SIGKILL the processes of the container whose init is host pid ``init_pid`` that are in
    ``session`` (a pid as the container sees it) or descend from one that is; how many. Best
    effort: a process that ends meanwhile or may not be signalled (another user's) is skipped."""
    with contextlib.suppress(OSError):
        level = len(_status_ids(init_pid, "NSpid")) - 1  # the container's pid namespace
        parents = _parents()
        inside = _descendants(init_pid, parents)
        members = {pid for pid in inside if _session_of(pid, level) == session}
        doomed = members | {d for pid in members for d in _descendants(pid, parents)}
        return sum(_kill(pid, init_pid) for pid in doomed)
    return 0


def _session_of(pid: int, level: int) -> int | None:
    with contextlib.suppress(OSError, IndexError):
        return _status_ids(pid, "NSsid")[level]
    return None


def _kill(pid: int, init_pid: int) -> bool:
    """SIGKILL ``pid`` if it is still a process of the container. The table it was found in is
    a moment old: the pid may have ended and been reused since, by any process of the host. So a
    pidfd is taken first, the process's place checked again (under the container's init), then
    the pidfd found still live: what /proc said was of the process the pidfd holds."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not _under(pid, init_pid):
            return False
        signals.pidfd_send_signal(pidfd, 0)
        signals.pidfd_send_signal(pidfd, signals.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _under(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` descends from ``ancestor`` now (its parents, read from /proc, lead to it)."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        if pid == ancestor:
            return True
    return False
