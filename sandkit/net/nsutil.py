"""Namespaces from Python 3.11, which has no os.unshare/os.setns: thin ctypes calls."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def unshare(flags: int) -> None:
    """unshare(2); OSError on failure."""
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare: {os.strerror(error)}")


def setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread; OSError on failure."""
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def private_mount_namespace() -> None:
    """A mount namespace of our own whose mounts propagate nowhere: what a root program that
    sandboxes itself with mounts (slirp4netns --enable-sandbox) does there cannot reach the
    host's mounts (it was seen to unmount the host's /run/netns entries otherwise)."""
    unshare(CLONE_NEWNS)
    if _libc.mount(None, b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount: {os.strerror(error)}")


def become_root_of_new_userns(uid: int, gid: int) -> None:
    """Map 0 in the (just unshared) user namespace to ``uid``/``gid`` of the parent, one id
    each: the keeper is root there and nobody else is anyone."""
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


_PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """prctl(PR_SET_NAME): this process's comm (what ``ps -o comm`` shows), at most 15 bytes."""
    _libc.prctl(ctypes.c_int(_PR_SET_NAME), ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
