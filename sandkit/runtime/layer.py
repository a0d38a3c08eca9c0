"""A running container's writable layer: `diff`, `commit` and `export` (images/changes.py
does the writing; this module reaches the layer and says whose ids its files have).

The upper directory lives on the init's scratch tmpfs (or, with ``persist=True``, under
$SANDKIT_HOME/containers/), which no path reaches once the init has pivoted into the container's
root. The init keeps a detached clone of its mount (open_tree: ".." cannot leave it) and opens
it anew for an "upper" open request; the host walks it from that fd. For `export`, the init opens the container's
root (the merged view) the same way.

A rootless container's files belong to ids of its user namespace, which the caller may not
read (a subordinate range) and would see under their host numbers: the walk runs in a forked
child that joined that namespace (idmap.run_in_userns_of), where the ids are the container's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from .. import errors, idmap
from ..home import private_home, private_subdir, sandkit_home
from ..images.changes import Change, diff_upper, export_tree, write_layer_from_upper
from ..images.fsutil import remove_tree
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


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[int]:
    """An fd of a new file beside ``path`` that replaces ``path`` when the block ends well, and
    is removed when it does not."""
    target = Path(path).absolute()
    try:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.sandkit-")
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    try:
        try:
            yield fd
        finally:
            os.close(fd)
        os.chmod(staging, 0o644)
        try:
            os.replace(staging, target)
        except OSError as exc:
            raise _cannot_write(target, exc) from None
    except BaseException:
        os.unlink(staging)
        raise


def _cannot_write(target: Path, exc: OSError) -> errors.ContainerError:
    return errors.ContainerError(
        f"cannot write {target}: {exc.strerror or exc}: name a file in an existing directory "
        "you may write to"
    )


def export_into(root_fd: int, out_fd: int, init_pid: int | None) -> None:
    """Write the merged root open as ``root_fd`` as a tar to the file open as ``out_fd``."""
    with os.fdopen(os.dup(out_fd), "wb") as out:

        def job() -> None:
            export_tree(root_fd, out)
            out.flush()

        as_container(init_pid, job)


# --- persistent writable layers (persist=True) ------------------------------------------------


def layer_home(container_id: str) -> Path:
    """Where the persistent writable layer of container ``container_id`` is kept:
    ``$SANDKIT_HOME/containers/<id>/`` (its upper/ and work/ directories)."""
    if not container_id or not all(c in "0123456789abcdef" for c in container_id):
        raise errors.ContainerError(f"bad container id {container_id!r} for a persistent layer")
    return private_subdir(private_home(sandkit_home()), "containers") / container_id


def open_persistent_layer(container_id: str) -> int:
    """An fd on the container's layer directory, made (empty) the first time; for the init,
    which mounts its upper/ and work/ by this fd, never by a name. Refused unless it is a real
    directory of ours with mode 0700: nothing else may have put or changed anything there."""
    path = layer_home(container_id)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            raise errors.ContainerError(
                f"the container's layer directory {path} is not this user's with mode 0700; "
                "something else changed it: remove it (sandkit rm) and start afresh"
            )
        for sub in ("upper", "work"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o755, dir_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_persistent_layer(container_id: str) -> None:
    """Delete a container's persistent layer (no error when there is none); a rootless one's
    files owned by a subordinate range are removed inside that mapping. (A detached one's
    is removed with its state by `sandkit rm` and `AsyncAttachedContainer.remove`.)"""
    path = layer_home(container_id)
    if os.path.lexists(path):
        idmap.as_owner(lambda: remove_tree(path), idmap.rootless_mapping())
