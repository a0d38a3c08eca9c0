"""Volumes with a size limit: a filesystem of their own mounted on the volume's ``_data``.

A plain volume is a directory on the home's filesystem and has no limit of its own. A volume
made with a size gets one of two backings, which need root (mounting a filesystem or a loop
device is not open to a user; a rootless user gets VolumeSpecError naming the fix):

- ``ext4``: an ext4 filesystem in a sparse file ``disk.img`` beside ``_data`` (host disk is
  used only as the volume fills), loop-mounted nosuid,nodev. Its content survives, as any
  volume's. Its lost+found is removed when it is made, so that a fresh volume is empty (and
  filled from the image at its first mount).
- ``tmpfs``: a tmpfs of that size, in memory; its content lasts while containers use the
  volume, as with Docker's ``--opt type=tmpfs``.

The filesystem is mounted (in the host's mount namespace, under the private home) when the
first container leases the volume and unmounted when the last lease goes, as Docker's local
driver does, under the volume's ``mount.lock``; `remove_volume` unmounts one left behind by a
killed process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ..errors import VolumeError, VolumeSpecError

# mkfs.ext4 needs room for its own structures; smaller volumes would hold nothing.
MIN_SIZE = 4 << 20
_DISK = "disk.img"
_MOUNT_LOCK = "mount.lock"
_MOUNT_OPTIONS = "nosuid,nodev"
_TOOL_TIMEOUT = 60.0


def check_backing(backing: str, size: int) -> None:
    """VolumeSpecError unless a volume of this backing and size can be made here and now."""
    if size and size < MIN_SIZE:
        raise VolumeSpecError(
            f"a volume's size must be at least {MIN_SIZE >> 20} MiB, not {size} bytes"
        )
    if os.geteuid() != 0:
        raise VolumeSpecError(
            f"a volume with a size limit or in memory needs root: it is a filesystem of its own "
            f"(here {backing}) that only root may mount. Rootless volumes are directories with "
            "no size limit: drop size= and tmpfs= (the --opt flags), or run as root"
        )


def _run(argv: list[str], what: str) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=_TOOL_TIMEOUT)
    except FileNotFoundError:
        raise VolumeError(
            f"cannot {what}: {argv[0]} is missing; install util-linux and e2fsprogs"
        ) from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip()
        raise VolumeError(f"cannot {what}: {argv[0]} failed: {detail}") from None
    except subprocess.TimeoutExpired:
        raise VolumeError(f"cannot {what}: {argv[0]} did not finish") from None


def prepare(directory: Path, backing: str, size: int) -> None:
    """Makes the backing of a new volume in its (staging) ``directory``: the ext4 image, empty;
    a tmpfs needs nothing until it is mounted."""
    if backing != "ext4":
        return
    disk = directory / _DISK
    fd = os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    # -m 0: no blocks kept back for root, every byte of the size is the volume's.
    _run(
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0", os.fspath(disk)],
        "make the volume's filesystem",
    )
    data = directory / "_data"
    _mount(directory, backing, size, data)
    try:
        os.rmdir(data / "lost+found")
        os.chmod(data, 0o755)
    finally:
        _umount(data)


def _mount(directory: Path, backing: str, size: int, data: Path) -> None:
    if backing == "tmpfs":
        # No size: the kernel's default, half of RAM; size=0 would mean no bound at all.
        limit = f",size={size}" if size else ""
        argv = ["mount", "-t", "tmpfs", "-o", f"{_MOUNT_OPTIONS},mode=755{limit}", "tmpfs"]
    else:
        argv = ["mount", "-t", "ext4", "-o", f"loop,{_MOUNT_OPTIONS}", os.fspath(directory / _DISK)]
    _run([*argv, os.fspath(data)], "mount the volume's filesystem")


def _umount(data: Path) -> None:
    _run(["umount", os.fspath(data)], "unmount the volume's filesystem")


@contextlib.contextmanager
def _mount_lock(directory: Path) -> Iterator[None]:
    fd = os.open(
        directory / _MOUNT_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def mounted(data: Path) -> bool:
    """Whether a filesystem is mounted on ``data`` (the volume's ``_data``)."""
    return os.path.ismount(data)


def ensure_mounted(directory: Path, backing: str, size: int) -> None:
    """Mounts the volume's filesystem unless it is (call with a lease held)."""
    data = directory / "_data"
    with _mount_lock(directory):
        if not mounted(data):
            _mount(directory, backing, size, data)


def release(directory: Path, unused: contextlib.AbstractContextManager[bool]) -> None:
    """Unmounts the volume's filesystem if ``unused`` (a probe of the lease, entered under the
    mount lock) says no container uses the volume any more."""
    data = directory / "_data"
    with _mount_lock(directory), unused as nobody:
        if nobody and mounted(data):
            _umount(data)


def disk_usage(directory: Path) -> int:
    """Bytes of host disk the volume's ext4 image takes (it is sparse)."""
    try:
        return os.stat(directory / _DISK, follow_symlinks=False).st_blocks * 512
    except FileNotFoundError:
        return 0


def unmount_left_behind(directory: Path) -> None:
    """Unmounts a filesystem a killed process left on the volume (its removal is under way)."""
    data = directory / "_data"
    if mounted(data):
        _umount(data)
