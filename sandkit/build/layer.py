"""Layers that COPY, ADD and WORKDIR make: a deterministic uncompressed tar, stored like a pulled
layer (blob + applied tree) with media type ``application/vnd.oci.image.layer.v1.tar``.

Deterministic: entries sorted by path, owners and modes as the instruction says, mtimes from the
sources (directories the step creates take the newest source mtime), no user or group names,
PAX headers only for what needs them. The same files give the same DiffID, which is also how
an unchanged COPY finds its layer already in the store.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from ..errors import BuildContextError
from ..images.budget import ChargedWriter
from ..images.store import LayerRecord, Store

# A callable giving a fresh reader (a context manager with read()) of a file's contents.
Opener = Callable[[], Any]


@attrs.frozen
class Entry:
    """One file of a layer: ``path`` without the leading ``/``; ``kind`` is "file", "dir",
    "symlink" or "hardlink" (``link``: the target; for hardlink a path in the layer)."""

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    link: str = ""
    opener: Opener | None = attrs.field(default=None, eq=False)


def entry_from_host(path: str, host: Path, st: os.stat_result, *, what: str) -> Entry:
    """The entry for a host file met by a COPY (a regular file, directory or symlink)."""
    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        return Entry(
            path, "file", mode, mtime=mtime, size=st.st_size, opener=lambda: _open_regular(host)
        )
    if stat.S_ISDIR(st.st_mode):
        return Entry(path, "dir", mode, mtime=mtime)
    if stat.S_ISLNK(st.st_mode):
        return Entry(path, "symlink", 0o777, mtime=mtime, link=os.readlink(host))
    raise BuildContextError(
        f"{what}: {str(host)!r} is a fifo, socket or device, which COPY cannot take: exclude it "
        "in .dockerignore or copy something else"
    )


def _open_regular(host: Path) -> BinaryIO:
    # O_NOFOLLOW | O_NONBLOCK: a file swapped for a symlink or a fifo since it was listed is
    # refused rather than followed or waited on.
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BuildContextError(
            f"{str(host)!r} changed into something that is not a file during the build"
        )
    return os.fdopen(fd, "rb")


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


def write_tar(entries: list[Entry], out: BinaryIO) -> tuple[str, int]:
    """Write ``entries`` (sorted here) as a tar to ``out``; returns (diff_id, size)."""
    sink = _HashingWriter(out)
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for entry in sorted(entries, key=lambda e: e.path.split("/")):
            info = _tarinfo(entry)
            if entry.kind == "file" and entry.opener is not None:
                with entry.opener() as source:
                    tar.addfile(info, _Exactly(source, entry.size, entry.path))
            else:
                tar.addfile(info)
    return "sha256:" + sink.hash.hexdigest(), sink.size


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + ("/" if entry.kind == "dir" else ""))
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = entry.mtime
    info.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
    }[entry.kind]
    info.linkname = entry.link
    info.size = entry.size if entry.kind == "file" else 0
    return info


class _Exactly:
    """A file read for exactly the size it had when listed: one that grows or shrinks while
    the build reads it is an error, not a tar entry whose header lies."""

    def __init__(self, source: BinaryIO, size: int, path: str) -> None:
        self.source = source
        self.left = size
        self.path = path

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        data = self.source.read(want)
        if len(data) < want:
            raise BuildContextError(f"{self.path!r} shrank while the build read it: build again")
        self.left -= len(data)
        if self.left == 0 and self.source.read(1):
            raise BuildContextError(f"{self.path!r} grew while the build read it: build again")
        return data


def store_layer(store: Store, entries: list[Entry]) -> LayerRecord:
    """Write ``entries`` as a layer into ``store`` (a no-op when it holds that layer already).
    The caller holds ``store.loading()`` until the image is registered."""
    with store.staging() as tmp:
        tar_path = tmp / "layer.tar"
        with open(tar_path, "wb") as out:
            # Charged to the store's limits (README, "Images"): a COPY of a huge tree or an
            # ADD of an archive bomb stops at max_image_size / max_store_size / min_free.
            charged = ChargedWriter(out, store.budget(), "build layer")
            diff_id, _size = write_tar(entries, charged)  # type: ignore[arg-type]
        with open(tar_path, "rb") as source:
            return store.add_layer(source, diff_id)
