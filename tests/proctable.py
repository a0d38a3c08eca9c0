"""The host's process table as tests need it: who is whose child."""

from __future__ import annotations

import os
from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid, for every process there is (those that vanish meanwhile are left out)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # the command name may hold anything, ") " included: the last ')' ends it
            table[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    return table


def children(pid: int) -> set[int]:
    return {child for child, parent in parents().items() if parent == pid}


def descendants(root: int) -> set[int]:
    table = parents()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, parent in table.items() if parent == pid]
        found.update(kids)
        todo.extend(kids)
    return found


def in_namespace(kind: str, inode: int) -> set[int]:
    """The pids of the processes in the namespace of type `kind` ("net", "pid", ...) whose
    inode is `inode` (as `readlink /proc/PID/ns/KIND` shows it: "KIND:[INODE]")."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/{kind}").st_ino == inode:
                    found.add(int(entry))
            except OSError:
                pass  # gone meanwhile, or a zombie
    return found
