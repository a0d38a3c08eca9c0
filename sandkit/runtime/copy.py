"""`docker cp`'s job: files and trees into and out of a container, and Docker's rules for paths.

The tree work (trees.py) is blocking and runs on a worker thread; the only thing asked of the
container is a directory (or file) fd resolved in its root by its init, through ``opener``.
The host's side is reached the same way with plain `os.open`: the two sides are one code.

Rules (Docker's, from its `docker cp` documentation): a source ending in ``/.`` copies the
directory's contents, one ending in ``/`` must be a directory; a symlink as the source is copied
as a symlink unless ``follow_link``. A destination that exists as a directory receives the
source inside it (under the source's name); one that does not exist is created (a directory
copied as it, or a file), and its parent must exist; one ending in ``/`` must be a directory;
an existing file is replaced, and a directory never replaces a file nor a file a directory.

Whatever is written goes first into a staging directory (``.sandkit-cp-<random>``, 0700) made in
the destination's directory, and is renamed into place at the end: a copy that fails leaves
nothing half-made (the staging is removed), and one that succeeds appears at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
import tarfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from typing import IO, Literal, Protocol

import attrs

from .. import errors, idmap
from ..images.fsutil import remove_tree_at
from ..images.tarstream import ForwardReader, LayerTarFile
from .trees import (
    MAX_DEPTH,
    Entry,
    Owner,
    TreeWriter,
    Walker,
    check_merge,
    display,
    merge,
    refuse_special,
    unreadable,
)

__all__ = ["MAX_DEPTH", "ContainerSide", "HostSide", "IdMap", "PathStat"]

OpenMode = Literal["dir", "r"]
_STAGING_PREFIX = ".sandkit-cp-"
_TAR_CHUNK = 64 << 10
_OVERFLOW_ID = 65534  # what the kernel shows for an id its user namespace does not map


@attrs.frozen
class IdMap:
    """A container's uid and gid maps ("inside outside count" ranges), to tell the ids a file
    has on the host from those the container sees. Root's containers map nothing (identity)."""

    uids: tuple[tuple[int, int, int], ...] = ()
    gids: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def parse(cls, uid_map: str, gid_map: str) -> IdMap:
        """From the text of ``/proc/PID/uid_map`` and ``gid_map``."""

        def ranges(text: str) -> tuple[tuple[int, int, int], ...]:
            rows = (line.split() for line in text.splitlines() if line.strip())
            return tuple((int(a), int(b), int(c)) for a, b, c in rows)

        return cls(ranges(uid_map), ranges(gid_map))

    @classmethod
    def of_process(cls, pid: int) -> IdMap:
        """The maps of ``pid``'s user namespace; identity when it is the host's own."""
        with open(f"/proc/{pid}/uid_map") as u, open(f"/proc/{pid}/gid_map") as g:
            found = cls.parse(u.read(), g.read())
        return IdMap() if found.uids == ((0, 0, 4294967295),) else found

    def to_host(self, uid: int, gid: int, where: str) -> tuple[int, int]:
        """The host ids that the container sees as ``uid:gid``; `CopyError` when it has none."""
        host = _through(self.uids, uid, 0, 1), _through(self.gids, gid, 0, 1)
        if host[0] is None or host[1] is None:
            raise errors.CopyError(
                f"{where} is owned by {uid}:{gid}, which this container's user namespace does not "
                "map (rootless containers map the caller's own uid only): copy without "
                "archive=True (-a), so that its files belong to the container's root, or as root"
            )
        return host[0], host[1]

    def to_container(self, uid: int, gid: int) -> tuple[int, int]:
        """The ids the container sees for a file the host sees owned by ``uid:gid``."""
        inside = _through(self.uids, uid, 1, 0), _through(self.gids, gid, 1, 0)
        return (
            _OVERFLOW_ID if inside[0] is None else inside[0],
            _OVERFLOW_ID if inside[1] is None else inside[1],
        )


def _through(ranges: tuple[tuple[int, int, int], ...], n: int, src: int, dst: int) -> int | None:
    if not ranges:
        return n
    for r in ranges:
        if r[src] <= n < r[src] + r[2]:
            return r[dst] + n - r[src]
    return None


class Side(Protocol):
    """One end of a copy: where paths are resolved, how its owners read."""

    @property
    def name(self) -> str:
        """ "the container" or "the host", for messages."""
        ...

    def open(self, path: str, mode: OpenMode) -> int:
        """An fd on ``path`` (a directory for "dir", a regular file for "r"), symlinks on the
        way followed inside this side's root; `OSError` with the errno when it fails."""
        ...

    def seen(self, uid: int, gid: int) -> tuple[int, int]:
        """The owner that this side's users see for host ids ``uid:gid``."""
        ...

    def host_ids(self, uid: int, gid: int, where: str) -> tuple[int, int]:
        """The host ids that make this side see ``uid:gid``."""
        ...


@attrs.frozen
class HostSide:
    """The host's filesystem, as the caller sees it (its symlinks are the caller's own)."""

    name: str = "the host"

    def open(self, path: str, mode: OpenMode) -> int:
        """An fd on the host's ``path``; for "r", anything but a regular file is refused."""
        if mode == "dir":
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise refuse_special(path, st)
        os.set_blocking(fd, True)
        return fd

    def seen(self, uid: int, gid: int) -> tuple[int, int]:
        """The host's ids are what its users see."""
        return uid, gid

    def host_ids(self, uid: int, gid: int, where: str) -> tuple[int, int]:
        """The host's ids are its own."""
        return uid, gid


@attrs.frozen
class ContainerSide:
    """A running container: ``opener`` asks its init for an fd (the ``open`` request, resolved
    with ``RESOLVE_IN_ROOT``: its symlinks never lead out of it); ``ids`` its id maps."""

    opener: Callable[[str, OpenMode], int]
    ids: IdMap
    name: str = "the container"
    #: rootless with a subordinate range: the init's pid, whose user namespace writes happen in
    #: (we may not write in, nor chown to, what the container's users own); else None
    userns: int | None = None

    def open(self, path: str, mode: OpenMode) -> int:
        """An fd the container's init opened, resolved in the container's root."""
        return self.opener(path, mode)

    def seen(self, uid: int, gid: int) -> tuple[int, int]:
        """The ids the container sees for host ids ``uid:gid``."""
        if _in_its_userns(self):
            return uid, gid  # the kernel shows them as the container sees them already
        return self.ids.to_container(uid, gid)

    def host_ids(self, uid: int, gid: int, where: str) -> tuple[int, int]:
        """The host ids the container sees as ``uid:gid``; `CopyError` when unmapped."""
        if _in_its_userns(self):
            return uid, gid  # chown there takes the container's own ids
        return self.ids.to_host(uid, gid, where)


# Set in the forked child that copies inside a container's user namespace (see `_write`).
_copying_in_userns = False


def _in_its_userns(side: ContainerSide) -> bool:
    return _copying_in_userns and side.userns is not None


def _userns_of(*sides: Side) -> int | None:
    """The user namespace a copy between ``sides`` runs in: a rootless container's with a
    subordinate range (its users' files are not ours to read, write or chown), else None."""
    for side in sides:
        if isinstance(side, ContainerSide) and side.userns is not None:
            return side.userns
    return None


# --- the source ------------------------------------------------------------------------------


@attrs.define
class _Source:
    entries: Iterator[Entry]
    is_dir: bool
    contents_only: bool  # "/." : the directory's contents, not the directory


def _split(path: str) -> tuple[str, str]:
    parent, name = posixpath.split(path.rstrip("/") or "/")
    return parent or ".", name


def _locate(side: Side, path: str, follow_link: bool, stack: ExitStack) -> _Source:
    """The tree at ``path`` of ``side``, by Docker's rules for a source; fds go on ``stack``."""
    walker = Walker(path, side.name, side.seen)
    contents_only = path.endswith("/.")
    name = _split(path)[1]
    if contents_only or path.endswith("/") or follow_link or name in ("", ".", ".."):
        # The top itself resolved by the side (symlinks followed inside its root).
        try:
            fd = side.open(path, "dir")
        except NotADirectoryError:
            if path.endswith("/"):
                raise _not_dir(side, path) from None
            fd = _open_or_explain(side, path, "r")
        except OSError as exc:
            raise _open_error(side, path, exc) from None
        stack.callback(os.close, fd)
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        top = "." if contents_only else (name if name not in ("", ".", "..") else "root")
        return _Source(walker.walk_open(fd, top), is_dir, contents_only)
    parent = _open_or_explain(side, _split(path)[0], "dir")
    stack.callback(os.close, parent)
    st = _lstat(side, parent, name, path)
    return _Source(walker.walk(parent, name, name), stat.S_ISDIR(st.st_mode), False)


def _open_or_explain(side: Side, path: str, mode: OpenMode) -> int:
    try:
        return side.open(path, mode)
    except errors.SandkitError:
        raise
    except OSError as exc:
        raise _open_error(side, path, exc) from None


def _lstat(side: Side, parent_fd: int, name: str, path: str) -> os.stat_result:
    """``name`` in ``parent_fd`` (``path`` of ``side``), not followed if a symlink."""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as exc:  # missing, or a parent the host may list but not search (r--)
        raise _open_error(side, path, exc) from None


def _open_error(side: Side, path: str, exc: OSError) -> errors.CopyError:
    if exc.errno == errno.ENOENT:
        return _missing(side, path)
    if exc.errno == errno.ENOTDIR:
        return _not_dir(side, path)
    return unreadable(f"{path!r} in {side.name}", exc)


def _missing(side: Side, path: str) -> errors.CopyError:
    return errors.CopyError(
        f"no such file or directory in {side.name}: {path!r}; check the path (symlinks in "
        f"{side.name} are resolved inside it)"
    )


def _not_dir(side: Side, path: str) -> errors.CopyError:
    return errors.CopyError(
        f"{path!r} in {side.name} is not a directory (a path ending in / or /. must be one); "
        "drop the trailing slash to copy a file"
    )


# --- the destination -------------------------------------------------------------------------


@attrs.define
class _Target:
    dir_fd: int  # the directory that receives the copy
    name: str | None  # the name it gets there; None: the source's contents merge into dir_fd
    where: str  # the destination directory's path, for messages


def _place(side: Side, dest: str, source: _Source, top: str, stack: ExitStack) -> _Target:
    """Where the source lands, by Docker's rules for a destination."""
    try:
        fd = side.open(dest, "dir")
    except FileNotFoundError:
        if dest.endswith("/"):
            raise errors.CopyError(
                f"the destination directory {dest!r} must exist in {side.name} (a path ending "
                "in / names a directory): create it first, or drop the trailing slash"
            ) from None
        return _in_parent_through_link(side, dest, stack)
    except NotADirectoryError:
        if source.is_dir:
            raise errors.CopyError(
                f"cannot copy a directory to a file: {dest!r} in {side.name} is a file; "
                "copy to a directory or a new path"
            ) from None
        if dest.endswith("/"):
            raise _not_dir(side, dest) from None
        return _in_parent_through_link(side, dest, stack)
    except errors.SandkitError:
        raise
    except OSError as exc:
        raise _open_error(side, dest, exc) from None
    stack.callback(os.close, fd)
    return _Target(fd, None if source.contents_only else top, dest)


def _in_parent_through_link(side: Side, dest: str, stack: ExitStack) -> _Target:
    """Where a non-directory destination is written: at its name, or, when that name is a
    symlink, where the link points (followed once, as Docker's client does; on the container's
    side the path is then resolved in its root again, so it cannot lead out)."""
    target = _in_parent(side, dest, stack)
    assert target.name is not None
    try:
        link = os.readlink(target.name, dir_fd=target.dir_fd)
    except OSError:  # not a symlink, or missing
        return target
    followed = posixpath.normpath(posixpath.join(target.where, link))
    return _in_parent(side, followed, stack)


def _in_parent(side: Side, dest: str, stack: ExitStack) -> _Target:
    parent, name = _split(dest)
    try:
        fd = side.open(parent, "dir")
    except errors.SandkitError:
        raise
    except OSError as exc:
        raise errors.CopyError(
            f"the parent directory of {dest!r} must exist in {side.name} "
            f"({exc.strerror or exc}); create it first"
        ) from None
    stack.callback(os.close, fd)
    return _Target(fd, name, parent)


# --- writing ---------------------------------------------------------------------------------


def _rebased(entries: Iterable[Entry], name: str | None) -> Iterator[Entry]:
    """The entries with their top renamed to ``name``, or without their top (its contents at
    the destination's level) when ``name`` is None."""
    for entry in entries:
        if name is None:
            if len(entry.path) == 1:
                continue
            entry.path = entry.path[1:]
            if isinstance(entry.target, tuple):
                entry.target = entry.target[1:]
        else:
            entry.path = (name, *entry.path[1:])
            if isinstance(entry.target, tuple):
                entry.target = (name, *entry.target[1:])
        yield entry


def _links_kept_inside(
    entries: Iterable[Entry], source: Side, src: str, dst: str, contents: bool
) -> Iterator[Entry]:
    """Docker's check when it extracts on the host: a relative symlink whose target climbs out
    of the directory that receives the copy is refused (a program that later follows it from
    there would leave the copy). Absolute targets stay: they name a path of the container."""
    for entry in entries:
        if entry.kind == "symlink" and isinstance(entry.target, str):
            lands = posixpath.normpath(posixpath.join(".", *entry.path[:-1], entry.target))
            if not entry.target.startswith("/") and (lands == ".." or lands.startswith("../")):
                top = src.removesuffix("/.").rstrip("/") or "/"
                path = posixpath.join(top, *entry.path[0 if contents else 1 :])
                raise errors.CopyError(
                    f"the symlink {path!r} -> {entry.target!r} in {source.name} points outside "
                    f"{dst!r} once copied there (Docker refuses it too): remove or "
                    "change the link, or take the tree as a tar (get_archive(), or `sandkit cp "
                    "CONTAINER:SRC -`), which keeps it as it is"
                )
        yield entry


def _write(
    entries: Iterable[Entry], target: _Target, owner: Owner, side: Side, userns: int | None
) -> int:
    """Stage the entries next to the destination, then move them into place; the number of
    entries written. On failure nothing stays (and the error says so). With ``userns`` (the
    pid of a rootless container's init that maps a range), as the container's root does it:
    in a child that joined its user namespace (the fds were all opened before)."""
    if userns is None:
        return _write_here(entries, target, owner, side)

    def inside() -> int:
        global _copying_in_userns
        _copying_in_userns = True  # a forked child of its own: no other copy shares it
        return _write_here(entries, target, owner, side)

    return idmap.run_in_userns_of(userns, inside)


def _write_here(entries: Iterable[Entry], target: _Target, owner: Owner, side: Side) -> int:
    staging = _STAGING_PREFIX + secrets.token_hex(8)
    try:
        os.mkdir(staging, 0o700, dir_fd=target.dir_fd)
    except OSError as exc:
        raise errors.CopyError(
            f"cannot write in {target.where!r} in {side.name}: {exc.strerror} (nothing was "
            f"written); {_fix(exc, side)}"
        ) from None
    writer: TreeWriter | None = None
    moving = False
    try:
        stage_fd = os.open(
            staging,
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=target.dir_fd,
        )
        try:
            writer = TreeWriter(stage_fd, owner)
            for entry in entries:
                writer.add(entry)
            writer.finish()
            check_merge(stage_fd, target.dir_fd, target.where)
            moving = True
            merge(stage_fd, target.dir_fd)
        finally:
            if writer is not None:
                writer.abandon()
            os.close(stage_fd)
        os.rmdir(staging, dir_fd=target.dir_fd)
        return writer.written
    except BaseException as exc:
        _remove_staging(target.dir_fd, staging)
        if isinstance(exc, errors.CopyError) and not moving:
            raise errors.CopyError(f"{exc} (nothing was written to {side.name})") from None
        if isinstance(exc, OSError):
            done = (
                f"some entries were already moved into {target.where!r}"
                if moving
                else f"nothing was written to {side.name}"
            )
            raise errors.CopyError(
                f"copy to {target.where!r} in {side.name} failed: {exc.strerror or exc} "
                f"({done}); {_fix(exc, side)}"
            ) from None
        raise


def _fix(exc: OSError, side: Side) -> str:
    if exc.errno == errno.EOVERFLOW:
        return (
            "the directory belongs to a user the container's user namespace does not map "
            "(rootless: the image's files owned by another user cannot be changed); copy to a "
            "directory the container's root owns, or as root"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        if isinstance(side, HostSide):
            return "make room on the host's disk (or copy elsewhere) and copy again"
        return "make room (or give the container a larger disk_size=) and copy again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "copy to a writable place, or as a user allowed to write there"
    return "fix the cause and copy again"


def _remove_staging(dir_fd: int, staging: str) -> None:
    # By fds, never following a symlink a process of the container may plant in it, and
    # through the 0555 directories the copy finished (not root: no CAP_DAC_OVERRIDE).
    with contextlib.suppress(OSError):  # the copy's own error is the one to report
        remove_tree_at(dir_fd, staging)


def _owner_policy(dest: Side, archive: bool, where: str) -> Owner:
    """Who owns what a copy writes, as Docker 28 does it (measured: tests/cli/
    test_copy_parity.py; its documentation says otherwise). Into a container the owners are
    kept; one the container's user namespace does not map (rootless: any but the caller's)
    becomes the container's root, or with ``archive`` (-a) is an error. Onto the host the copy
    belongs to the user who copies; ``archive`` keeps the container's owners there too (Docker
    ignores -a in that direction)."""
    if isinstance(dest, HostSide):
        return (lambda e: (e.uid, e.gid)) if archive else (lambda e: None)
    if archive:
        return lambda e: dest.host_ids(e.uid, e.gid, f"{where}/{display(e.path)}")
    root = dest.host_ids(0, 0, where)

    def kept_or_root(e: Entry) -> tuple[int, int]:
        try:
            return dest.host_ids(e.uid, e.gid, where)
        except errors.CopyError:
            return root

    return kept_or_root


def copy(
    source: Side,
    src: str,
    dest: Side,
    dst: str,
    *,
    archive: bool = False,
    follow_link: bool = False,
) -> int:
    """Copy ``src`` of one side to ``dst`` of the other (blocking); the number of entries."""
    with ExitStack() as stack:
        found = _locate(source, src, follow_link, stack)
        target = _place(dest, dst, found, _split(src)[1], stack)
        owner = _owner_policy(dest, archive, dst)
        entries = _rebased(found.entries, target.name)
        if isinstance(dest, HostSide):
            entries = _links_kept_inside(entries, source, src, dst, target.name is None)
        return _write(entries, target, owner, dest, _userns_of(source, dest))


def copy_tar_in(stream: IO[bytes], dest: Side, dst: str, *, archive: bool = False) -> int:
    """Extract the tar ``stream`` into directory ``dst`` (`docker cp - CONTAINER:DST`)."""
    with ExitStack() as stack:
        try:
            fd = dest.open(dst, "dir")
        except OSError as exc:
            raise errors.CopyError(
                f"a tar is extracted into a directory, and {dst!r} in {dest.name} is not one "
                f"({exc.strerror or exc}): give an existing directory"
            ) from None
        stack.callback(os.close, fd)
        target = _Target(fd, None, dst)
        owner = _owner_policy(dest, archive, dst)
        return _write(_tar_entries(stream), target, owner, dest, _userns_of(dest))


# --- tar streams -----------------------------------------------------------------------------


class _Readinto:
    """What ForwardReader reads from: ``readinto`` over any binary file object."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readinto(self, buffer: memoryview) -> int:
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            return readinto(buffer) or 0
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_TAR_KINDS = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}


def _tar_entries(stream: IO[bytes]) -> Iterator[Entry]:
    """The members of a tar as entries, their content streamed from it (never held)."""
    reader = ForwardReader(_Readinto(stream))  # type: ignore[arg-type]
    try:
        with LayerTarFile(fileobj=reader, mode="r", errorlevel=2) as tar:  # type: ignore[arg-type]
            while (member := tar.next()) is not None:
                entry = _tar_entry(member, reader)
                if entry is not None:
                    yield entry
    except (tarfile.TarError, errors.ImageError) as exc:
        raise errors.CopyError(
            f"the input is not a valid tar archive ({exc}): give an uncompressed tar (as "
            "`tar -c` or get_archive() make it; a compressed one: decompress it first)"
        ) from None


def _names(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.split("/") if p not in ("", "."))


def _tar_entry(m: tarfile.TarInfo, reader: ForwardReader) -> Entry | None:
    path = _names(m.name)
    if not path:
        return None  # "./": the destination itself, which exists
    if m.isreg():
        kind = "file"
    elif m.type in _TAR_KINDS:
        kind = _TAR_KINDS[m.type]
    else:
        raise errors.CopyError(
            f"the archive's entry {m.name!r} is a device, FIFO or other special file: sandkit "
            "copies regular files, directories and symlinks only; leave it out of the archive"
        )
    mtime = int(m.mtime) if 0 <= m.mtime < 1 << 62 else 0
    entry = Entry(path, kind, m.mode & 0o7777, m.uid, m.gid, mtime)  # type: ignore[arg-type]
    if kind == "symlink":
        entry.target = m.linkname
    elif kind == "hardlink":
        entry.target = _names(m.linkname)
    elif kind == "file":
        entry.size = m.size

        def feed(fd: int, offset: int = m.offset_data, size: int = m.size) -> None:
            reader.seek(offset)
            reader.copy_to(fd, size)

        entry.feed = feed
    return entry


def tar_chunks(entries: Iterable[Entry]) -> Iterator[bytes]:
    """A tar (PAX, as Docker's) of the entries, in chunks of at most 64 KiB plus a header."""
    for e in entries:
        info = tarfile.TarInfo(display(e.path) + ("/" if e.kind == "dir" else ""))
        info.type = {
            "dir": tarfile.DIRTYPE,
            "file": tarfile.REGTYPE,
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
        }[e.kind]
        info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
        if e.kind == "symlink":
            info.linkname = str(e.target)
        elif e.kind == "hardlink":
            info.linkname = display(e.target)  # type: ignore[arg-type]
        info.size = e.size if e.kind == "file" else 0
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if e.kind == "file":
            yield from _content(e.fd, e.size)
    yield bytes(2 * tarfile.BLOCKSIZE)


def _content(fd: int, size: int) -> Iterator[bytes]:
    left = size
    while left:
        data = os.read(fd, min(left, _TAR_CHUNK))
        if not data:  # shrank while read: the header said `size`, so pad
            data = bytes(min(left, _TAR_CHUNK))
        left -= len(data)
        yield data
    if size % tarfile.BLOCKSIZE:
        yield bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def archive(side: Side, path: str, *, follow_link: bool = False) -> Generator[bytes, None, None]:
    """`get_archive`: the tree at ``path`` as a tar stream (a generator: blocking reads)."""
    with ExitStack() as stack:
        found = _locate(side, path, follow_link, stack)
        yield from tar_chunks(found.entries)


# --- stat and remove -------------------------------------------------------------------------


@attrs.frozen
class PathStat:
    """What Docker's archive API says of a path (``docker container stat``'s ``PathStat``):
    ``mode`` is the Unix ``st_mode`` (test it with the `stat` module), ``mtime`` in seconds,
    ``link_target`` what a symlink says (the path is not followed at its last name)."""

    name: str
    size: int
    mode: int
    mtime: float
    link_target: str


def stat_path(side: Side, path: str) -> PathStat:
    """`Container.stat`: ``path`` resolved in ``side``'s root, its last name not followed."""
    parent_path, name = _split(path)
    with ExitStack() as stack:
        if name in ("", ".", ".."):
            fd = _open_or_explain(side, path, "dir")
            stack.callback(os.close, fd)
            st = os.fstat(fd)
            return PathStat(name or "/", st.st_size, st.st_mode, st.st_mtime, "")
        parent = _open_or_explain(side, parent_path, "dir")
        stack.callback(os.close, parent)
        st = _lstat(side, parent, name, path)
        target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else ""
        return PathStat(name, st.st_size, st.st_mode, st.st_mtime, target)


def remove(side: Side, path: str, *, recursive: bool = False) -> None:
    """`Container.remove`: unlink ``path`` (its last name not followed); a directory must be
    empty unless ``recursive``, which removes it by fds (never following a symlink)."""
    parent_path, name = _split(path)
    if name in ("", ".", "..") or path.rstrip("/") in ("", "/"):
        raise errors.CopyError(f"refusing to remove {path!r}: name a file or directory below /")
    with ExitStack() as stack:
        parent = _open_or_explain(side, parent_path, "dir")
        stack.callback(os.close, parent)
        if isinstance(side, ContainerSide) and side.userns is not None:
            # files of the container's users: removed as its root removes them
            idmap.run_in_userns_of(
                side.userns, lambda: _remove_at(side, parent, name, path, recursive)
            )
        else:
            _remove_at(side, parent, name, path, recursive)


def _remove_at(side: Side, parent: int, name: str, path: str, recursive: bool) -> None:
    """Unlink (or rmdir, or with ``recursive`` remove the tree of) ``name`` in ``parent``."""

    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
        elif recursive:
            # By fds, never following a symlink; through 0555 directories (rootless, as the
            # container's root would) and trees deeper than Python's recursion limit.
            remove_tree_at(parent, name)
        else:
            os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        raise _missing(side, path) from None
    except OSError as exc:
        hint = (
            "pass recursive=True to remove a directory and all it holds"
            if exc.errno == errno.ENOTEMPTY
            else "check the path and its permissions"
        )
        raise errors.CopyError(
            f"cannot remove {path!r} in {side.name}: {exc.strerror}; {hint}"
        ) from None


# --- the entry points of the API (run on a worker thread) ------------------------------------

# What copy_in takes: a host path, one file's bytes, or a tar stream (a binary file object).
CopySource = str | os.PathLike[str] | bytes | IO[bytes]


def copy_in(
    container: Side,
    source: CopySource,
    dst: str,
    *,
    archive: bool = False,
    follow_link: bool = False,
) -> int:
    """`Container.copy_in`: the number of entries written."""
    if isinstance(source, bytes | bytearray | memoryview):
        return _bytes_in(bytes(source), container, dst)
    if isinstance(source, str | os.PathLike):
        return copy(
            HostSide(), os.fspath(source), container, dst, archive=archive, follow_link=follow_link
        )
    if hasattr(source, "read"):
        return copy_tar_in(source, container, dst, archive=archive)
    raise errors.CopyError(
        f"copy_in takes a host path, bytes or a tar stream (a binary file object), not "
        f"{type(source).__name__}"
    )


def _bytes_in(data: bytes, container: Side, dst: str) -> int:
    """One file of content ``data`` at ``dst`` (0644, the container's root's)."""
    with ExitStack() as stack:
        try:
            fd = container.open(dst, "dir")
        except OSError:
            pass  # not a directory, or missing: what is wanted
        else:
            os.close(fd)
            raise errors.CopyError(
                f"{dst!r} is a directory in the container: give bytes a file's path"
            )
        target = _in_parent_through_link(container, dst, stack)
        entry = Entry((target.name or "",), "file", 0o644, 0, 0, int(time.time()), len(data))

        def feed(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        entry.feed = feed
        owner = _owner_policy(container, False, dst)
        return _write([entry], target, owner, container, _userns_of(container))


def copy_out(
    container: Side,
    src: str,
    host_path: str | os.PathLike[str],
    *,
    archive: bool = False,
    follow_link: bool = False,
) -> int:
    """`Container.copy_out`: the number of entries written."""
    return copy(
        container, src, HostSide(), os.fspath(host_path), archive=archive, follow_link=follow_link
    )
