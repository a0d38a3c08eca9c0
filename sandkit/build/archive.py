"""ADD of a local tar archive (plain, gzip, bzip2 or xz): its entries, unpacked under the
destination, become entries of the step's layer. As Docker, a file that is not a tar archive is
copied as it is.

Think like the attacker: member names are confined below the destination (``..`` and absolute
names refused), hard links must point at earlier members, devices and fifos are refused; the
members' contents are spooled once to an anonymous temporary file (the archive is read once,
even compressed), never held in memory.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Self

import attrs

from ..errors import BuildContextError
from ..images.budget import ChargedWriter, DiskBudget
from .layer import Entry

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
}


class _Slice:
    """Bytes ``offset`` .. ``offset + size`` of the spool file, read with pread."""

    def __init__(self, spool: BinaryIO, offset: int, size: int) -> None:
        self.fd = spool.fileno()
        self.offset = offset
        self.left = size

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        data = os.pread(self.fd, want, self.offset)
        self.offset += len(data)
        self.left -= len(data)
        return data

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _is_archive(host: Path) -> bool:
    try:
        with tarfile.open(host, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError, OSError):
        return False


# The most entries one ADD unpacks: each is held in memory until the layer is written, sorted
# (~0.7 KiB apiece: 500,000 is ~350 MiB), and a small compressed archive can hold millions.
MAX_ARCHIVE_ENTRIES = 500_000


def tar_entries(
    host: Path, dest: str, what: str, spool_dir: Path, budget: DiskBudget
) -> list[Entry] | None:
    """The entries of the archive at ``host`` placed under ``dest``, or None if it is no tar."""
    if not _is_archive(host):
        return None
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - lives as long as the entries
    entries: list[Entry] = []
    names: set[str] = set()
    with tarfile.open(host, "r:*") as tar:
        for member in tar:
            # tarfile keeps every member read (~0.4 KiB each, unbounded): we need none back.
            tar.members = []  # type: ignore[attr-defined]  # (typeshed omits the attribute)
            if len(entries) >= MAX_ARCHIVE_ENTRIES:
                raise BuildContextError(
                    f"{what}: {host.name} holds more than {MAX_ARCHIVE_ENTRIES} entries, the most "
                    "an ADD unpacks (each costs host memory until the layer is written): split "
                    "it, or unpack it in a RUN step"
                )
            path = _placed(member.name, dest, what)
            kind = _KINDS.get(member.type)
            if kind is None:
                raise BuildContextError(
                    f"{what}: {host.name} holds {member.name!r}, a device, fifo or other special "
                    "file, which ADD does not unpack: remove it from the archive"
                )
            link = member.linkname
            if kind == "hardlink":
                link = _placed(member.linkname, dest, what)
                if link not in names:
                    raise BuildContextError(
                        f"{what}: {host.name}: hard link {member.name!r} points at "
                        f"{member.linkname!r}, which is not an earlier member of the archive"
                    )
            entry = Entry(
                path,
                kind,
                member.mode & 0o7777,
                member.uid,
                member.gid,
                int(member.mtime),
                link=link,
            )
            if kind == "file":
                entry = _spooled(entry, tar, member, ChargedWriter(spool, budget, what), spool)
            entries.append(entry)
            names.add(path)
    return entries


def _spooled(
    entry: Entry,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    sink: ChargedWriter,
    spool: BinaryIO,
) -> Entry:
    """``entry`` reading the member's data from where it was copied in the spool file."""
    offset = spool.seek(0, os.SEEK_END)
    source = tar.extractfile(member)
    assert source is not None  # a regular member
    size = 0
    while chunk := source.read(1 << 20):
        sink.write(chunk)  # charged first: an archive bomb stops at the store's limits
        size += len(chunk)
    spool.flush()
    return attrs.evolve(entry, size=size, opener=lambda: _Slice(spool, offset, size))


def _placed(name: str, dest: str, what: str) -> str:
    cleaned = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise BuildContextError(
            f"{what}: archive member {name!r} would be unpacked outside the destination: the "
            "archive is hostile or broken; refused"
        )
    return dest if cleaned == "." else posixpath.join(dest, cleaned) if dest else cleaned
