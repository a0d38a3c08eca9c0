"""Named volumes: directories that outlive containers, as ``docker volume`` keeps them.

A volume lives in ``$SANDKIT_HOME/volumes/<name>/`` (private, 0700, like the rest of the home):
``volume.json`` (its name, creation time, labels), ``lease`` (a flock file) and ``_data``, the
directory containers mount. A container mounts ``_data`` nosuid and nodev, and the host never
follows anything inside it (removal and sizes go by directory fds without following links), so
what one container plants there (a setuid file, a device node, a symlink to the host's /etc)
is inert for the host and for the next container.

Every container using a volume holds a shared flock on its ``lease`` for its whole life (as
images' leases, sandkit/images/store.py); `remove_volume` takes it exclusively without waiting,
so a volume in use, in any process, cannot be removed (VolumeInUseError). The flock goes with
the holder's process, so a killed host leaves no stale lease.

A volume is made in a hidden staging directory and renamed into place, and removed by renaming
it away before its tree is deleted: other processes see it whole or not at all.

A volume made with a size is a filesystem of its own mounted on ``_data`` while containers use
it (volume_backing.py): an ext4 image, or a tmpfs whose content lasts only as long. Its
``Options`` in volume.json say which, as Docker's local driver records them.

A fresh volume is initialised from the image the first time a container mounts it, as Docker
does: when ``_data`` is empty and the image has a directory at the mount's target, the
container's init copies that tree (owners, modes, times, symlinks) into it before mounting it
(sandkit/_init/volume.c).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from .. import idmap
from ..errors import VolumeError, VolumeInUseError, VolumeNotFoundError, VolumeSpecError
from ..home import private_home, private_subdir
from ..images.fsutil import dir_size, remove_tree_at
from . import volume_backing

# Docker's rule for volume names, with a length bound of ours (one path component).
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")
_DEFINITION = "volume.json"
_LEASE = "lease"
_FILL_LOCK = "fill.lock"
DATA = "_data"
# Hidden entries of volumes/: a volume being made or being removed. Names never start with '.'.
_STAGING_PREFIX = ".new-"
_REMOVING_PREFIX = ".rm-"
# A staging directory older than this was left by a process killed while creating a volume.
_STALE_STAGING_SECONDS = 3600.0
# Docker marks the volumes it makes for `-v /path` (no name) with this label; `prune` without
# `all` removes only those.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


@attrs.frozen
class VolumeRecord:
    """One volume's definition and where it lives."""

    name: str
    directory: Path
    created: str = ""  # RFC 3339
    labels: dict[str, str] = attrs.field(factory=dict)
    # Docker's local-driver options: {} (a plain directory), {"size": bytes} (an ext4 image),
    # {"type": "tmpfs", "device": "tmpfs", "o": "size=bytes"} (a tmpfs)
    options: dict[str, str] = attrs.field(factory=dict)

    @property
    def backing(self) -> str | None:
        """ "ext4", "tmpfs", or None for a plain directory (volume_backing.py)."""
        if self.options.get("type") == "tmpfs":
            return "tmpfs"
        return "ext4" if "size" in self.options else None

    @property
    def size(self) -> int:
        """The size limit in bytes; 0 for none (a tmpfs: the kernel's default, half of RAM)."""
        if self.backing == "tmpfs":
            sizes = [o[5:] for o in self.options.get("o", "").split(",") if o.startswith("size=")]
            return int(sizes[0]) if sizes else 0
        return int(self.options.get("size", 0))

    @property
    def mountpoint(self) -> Path:
        """The directory containers mount (Docker's ``Mountpoint``)."""
        return self.directory / DATA

    @property
    def fill_lock(self) -> Path:
        """The file the init flocks while it fills the volume from the image."""
        return self.directory / _FILL_LOCK

    @property
    def anonymous(self) -> bool:
        """Whether the volume carries Docker's anonymous-volume label."""
        return ANONYMOUS_LABEL in self.labels

    def to_json(self) -> dict[str, Any]:
        """The definition as volume.json stores it (Docker's field names)."""
        return {
            "Name": self.name,
            "CreatedAt": self.created,
            "Labels": dict(self.labels),
            "Options": dict(self.options),
        }


def check_name(name: str) -> str:
    """``name`` if it may name a volume; VolumeSpecError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise VolumeSpecError(
            f"invalid volume name {name!r}: use 2 to 128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (a host directory is given as an absolute path)"
        )
    return name


def is_volume_name(source: str) -> bool:
    """Whether a mount source names a volume rather than a host path (Docker's rule)."""
    return bool(_NAME.fullmatch(source))


def volumes_dir(home: Path | None = None) -> Path:
    """``$SANDKIT_HOME/volumes``, private, made if missing."""
    return private_subdir(private_home(home), "volumes")


def _read_record(directory: Path) -> VolumeRecord:
    data = json.loads((directory / _DEFINITION).read_text())
    return VolumeRecord(
        name=str(data["Name"]),
        directory=directory,
        created=str(data.get("CreatedAt", "")),
        labels={str(k): str(v) for k, v in dict(data.get("Labels") or {}).items()},
        options={str(k): str(v) for k, v in dict(data.get("Options") or {}).items()},
    )


def get_volume(name: str, home: Path | None = None) -> VolumeRecord:
    """The volume named ``name``; VolumeNotFoundError if there is none."""
    check_name(name)
    try:
        return _read_record(volumes_dir(home) / name)
    except (OSError, ValueError, KeyError, TypeError):
        raise VolumeNotFoundError(
            f"no such volume: {name!r}; create it with `sandkit volume create {name}` or "
            f"sandkit.Volume({name!r}), or mount it and it is created; `sandkit volume ls` "
            "lists them"
        ) from None


def list_volumes(home: Path | None = None) -> list[VolumeRecord]:
    """Every volume, by name."""
    records = []
    for entry in sorted(volumes_dir(home).iterdir()):
        if not entry.name.startswith(".") and entry.is_dir():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                records.append(_read_record(entry))
    return records


def backing_options(*, size: int = 0, tmpfs: bool = False) -> dict[str, str]:
    """The Options of a volume with this size limit (0: none) and backing; VolumeSpecError if
    this host or user cannot give it (volume_backing.check_backing)."""
    if not size and not tmpfs:
        return {}
    volume_backing.check_backing("tmpfs" if tmpfs else "ext4", size)
    if tmpfs:
        return {"type": "tmpfs", "device": "tmpfs", "o": f"size={size}" if size else ""}
    return {"size": str(size)}


def create_volume(
    name: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    home: Path | None = None,
) -> tuple[VolumeRecord, bool]:
    """Makes the volume ``name`` (``None``: a random 64-hex-digit name, as Docker picks) unless it
    exists. ``options`` come from `backing_options`. Returns the volume and whether this call
    made it; an existing volume is returned as it is, as ``docker volume create`` does."""
    name = check_name(name if name is not None else secrets.token_hex(32))
    parent = volumes_dir(home)
    with contextlib.suppress(VolumeNotFoundError):
        return get_volume(name, home), False
    record = VolumeRecord(
        name=name,
        directory=parent / name,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        labels=dict(labels or {}),
        options=dict(options or {}),
    )
    staging = parent / f"{_STAGING_PREFIX}{secrets.token_hex(8)}"
    try:
        _stage(staging, record)
        try:
            os.rename(staging, record.directory)  # fails if the name was taken meanwhile
        except OSError:
            return get_volume(name, home), False
    except OSError as exc:  # a full disk, a home one may not write
        raise _cannot_create(record, exc) from None
    finally:
        if staging.exists():
            remove_tree_at(None, os.fspath(staging))
    return record, True


def _stage(staging: Path, record: VolumeRecord) -> None:
    """The volume's directory, complete, at ``staging``."""
    staging.mkdir(mode=0o700)
    (staging / DATA).mkdir(mode=0o755)
    os.chmod(staging / DATA, 0o755)  # as Docker's: whatever the umask
    if record.backing is not None:
        volume_backing.prepare(staging, record.backing, record.size)
    _make_private_file(staging / _LEASE, b"")
    _make_private_file(staging / _FILL_LOCK, b"")
    _make_private_file(staging / _DEFINITION, json.dumps(record.to_json()).encode())


def _cannot_create(record: VolumeRecord, exc: OSError) -> VolumeError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (
            "free space there (`sandkit volume prune`, `sandkit image prune`) or set "
            "SANDKIT_HOME to a directory on a larger disk"
        )
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "set SANDKIT_HOME to a directory you may write"
    else:
        fix = "fix the cause and create it again"
    return VolumeError(
        f"cannot create volume {record.name!r} in {record.directory.parent}: "
        f"{exc.strerror or exc} (nothing was left behind); {fix}"
    )


def _make_private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _open_lease(record: VolumeRecord) -> int:
    return os.open(record.directory / _LEASE, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def lease_volume(name: str, home: Path | None = None) -> Iterator[VolumeRecord]:
    """Holds the volume ``name`` in use (made first if missing, as ``docker run -v`` does; its
    filesystem mounted if it has one) until the context exits; `remove_volume` refuses it
    meanwhile, in any process."""
    record, fd = _take_lease(name, home)
    try:
        if record.backing is not None:
            volume_backing.ensure_mounted(record.directory, record.backing, record.size)
        yield record
    finally:
        os.close(fd)  # closing releases the lock
        if record.backing is not None:
            volume_backing.release(record.directory, _unused(record))


def _take_lease(name: str, home: Path | None) -> tuple[VolumeRecord, int]:
    while True:
        record, _ = create_volume(name, home=home)
        try:
            fd = _open_lease(record)
        except FileNotFoundError:
            continue  # removed between the two steps: make it again
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _same_file(fd, record.directory / _LEASE):
                return record, fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed while we waited for the lock: make it again


@contextlib.contextmanager
def _unused(record: VolumeRecord) -> Iterator[bool]:
    """Whether no container holds a lease on the volume; while True, none can take one."""
    try:
        fd = _open_lease(record)
    except FileNotFoundError:
        yield False  # removed: nothing to do
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def in_use(record: VolumeRecord) -> bool:
    """Whether a container holds a lease on the volume right now."""
    if not (record.directory / _LEASE).exists():
        return False
    with _unused(record) as unused:
        return not unused


def remove_volume(name: str, home: Path | None = None) -> VolumeRecord:
    """Deletes the volume ``name`` and everything in it; VolumeInUseError while a container
    uses it, VolumeNotFoundError if there is none."""
    record = get_volume(name, home)
    try:
        fd = _open_lease(record)
    except FileNotFoundError:
        raise VolumeNotFoundError(f"no such volume: {name!r} (removed meanwhile)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VolumeInUseError(
                f"volume {name!r} is in use by a running container: stop the containers that "
                f"mount it (`sandkit ps`; a Python `with sandkit.Container(...)` block must end "
                "first), then remove it"
            ) from None
        if not _same_file(fd, record.directory / _LEASE):
            raise VolumeNotFoundError(f"no such volume: {name!r} (removed meanwhile)")
        if record.backing is not None:
            volume_backing.unmount_left_behind(record.directory)
        # Renamed away under the lock: from here on no one can lease it, and it vanishes at once.
        doomed = record.directory.with_name(f"{_REMOVING_PREFIX}{secrets.token_hex(8)}")
        os.rename(record.directory, doomed)
    finally:
        os.close(fd)
    _remove_tree(doomed)
    return record


def volume_size(record: VolumeRecord) -> int:
    """Bytes of the files in the volume (links never followed; hard links counted once), or of
    the disk its ext4 image takes."""
    if record.backing == "ext4":
        return volume_backing.disk_usage(record.directory)
    # rootless with a subordinate range, files of the container's users may be unreadable to us
    return idmap.as_owner(lambda: dir_size(record.mountpoint), idmap.rootless_mapping())


def _remove_tree(path: Path) -> None:
    """Deletes a volume's tree, also files the container's users (subordinate ids) own."""
    idmap.as_owner(lambda: remove_tree_at(None, os.fspath(path)), idmap.rootless_mapping())


def sweep_leftovers(home: Path | None = None) -> None:
    """Deletes what killed processes left in volumes/: volumes half-removed, and volumes half-made
    long ago."""
    parent = volumes_dir(home)
    for entry in parent.iterdir():
        removing = entry.name.startswith(_REMOVING_PREFIX)
        stale = entry.name.startswith(_STAGING_PREFIX) and (
            time.time() - entry.stat(follow_symlinks=False).st_mtime > _STALE_STAGING_SECONDS
        )
        if removing or stale:
            with contextlib.suppress(FileNotFoundError):
                _remove_tree(entry)
