"""A running container's writable layer: `diff`, `commit` and `export` (images/changes.py
does the writing; this module reaches the layer and says whose ids its files have).

The upper directory lives on the init's scratch tmpfs, which no path reaches once the init has
pivoted into the container's root. The init keeps an fd on it and opens it anew for an "upper"
open request; the host walks it from that fd. For `export`, the init opens the container's
root (the merged view) the same way.

A rootless container's files belong to ids of its user namespace, which the caller may not
read (a subordinate range) and would see under their host numbers: the walk runs in a forked
child that joined that namespace (idmap.run_in_userns_of), where the ids are the container's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from .. import idmap
from ..images.changes import Change, diff_upper, export_tree, write_layer_from_upper
from ..ipc.messages import Setup

T = TypeVar("T")

# What the init itself puts in the writable layer of every container, besides the setup's
# files and the mount points of its mounts: left out of diffs and commits, as Docker keeps
# its "init layer" out of them.
_SANDKIT_PATHS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def sandkit_paths(setup: Setup) -> list[str]:
    """The paths of a container's writable layer that sandkit wrote, not its programs."""
    mounted = [str(m.get("dst", "")) for m in setup.mounts]
    return [*_SANDKIT_PATHS, *(f.path for f in setup.files), *(p for p in mounted if p)]


def lower_dirs(setup: Setup) -> list[str]:
    """The image's layer directories, topmost first (an overlay root), else none."""
    if setup.rootfs.get("kind") != "overlay":
        return []
    return [str(p) for p in setup.rootfs.get("lower") or ()]


def as_container(init_pid: int | None, job: Callable[[], T]) -> T:
    """``job()`` here (``init_pid`` None: root's container, whose ids are the host's) or in a
    child in the user namespace of the rootless container of init ``init_pid``."""
    if init_pid is None:
        return job()
    return idmap.run_in_userns_of(init_pid, job)


def diff(upper_fd: int, setup: Setup, init_pid: int | None) -> list[Change]:
    """`docker diff` of the upper directory open as ``upper_fd``."""
    lower, ignore = lower_dirs(setup), sandkit_paths(setup)
    return as_container(init_pid, lambda: diff_upper(upper_fd, lower=lower, ignore=ignore))


def layer_writer(
    upper_fd: int, setup: Setup, init_pid: int | None
) -> Callable[[BinaryIO], tuple[str, int]]:
    """What commit_image calls to write the layer of the upper directory open as ``upper_fd``."""
    ignore = sandkit_paths(setup)

    def write(out: BinaryIO) -> tuple[str, int]:
        def job() -> tuple[str, int]:
            written = write_layer_from_upper(upper_fd, out, ignore=ignore)
            out.flush()  # from the child's buffer, before it exits
            return written

        return as_container(init_pid, job)

    return write


def export(root_fd: int, path: str | os.PathLike[str], init_pid: int | None) -> None:
    """Write the merged root open as ``root_fd`` to the tar file ``path`` (replaced if it
    exists, as `docker export -o` does); written beside it first, so a failed export leaves
    nothing new behind."""
    target = Path(path).absolute()
    fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.sandkit-")
    try:
        with os.fdopen(fd, "wb") as out:

            def job() -> None:
                export_tree(root_fd, out)
                out.flush()

            as_container(init_pid, job)
        os.chmod(staging, 0o644)
        os.replace(staging, target)
    except BaseException:
        os.unlink(staging)
        raise
