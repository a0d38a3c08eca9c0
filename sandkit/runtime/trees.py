"""Trees of files walked and written through directory fds, never through paths: the engine of
`copy_in`/`copy_out`/`get_archive` (copy.py holds Docker's rules around it).

How, and why so: the container's init opens a directory of the container for the host, resolved
in the container's root (the ``open`` request's ``"dir"`` mode, ``RESOLVE_IN_ROOT``), and the
host walks or writes *below that fd*, one name at a time, with ``O_NOFOLLOW`` (and
``follow_symlinks=False`` for stat, chown, utime). A symlink is only ever read (readlink) or
made (symlinkat), never followed, and ``..`` is never looked up, so nothing in the tree can lead
the host out of it, on either side: not the container's symlinks (copy out), not the host
destination's (a link planted there by an earlier copy is replaced, not written through).
Chosen over a tar run inside the container (images without tar, distroless, have none; and the
container's own program would decide what the host gets) and over a new init request that
walks the tree (file contents would cross the control socket in 64 KiB packets, or one request
per file): an fd per directory costs one round trip per copy, contents go fd to fd in the
kernel, and the same code walks the host's side.

Memory is bounded by the tree's shape, never by its size: one directory fd per level of the
path being walked or written (at most `MAX_DEPTH`), the names of the directories on that path
(sorted, as Docker walks), one chunk of file content at a time, and, for hard links, the paths
of the files that have more than one link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from typing import Literal

import attrs

from .. import errors

Kind = Literal["dir", "file", "symlink", "hardlink"]
# Levels of directories below the top of a copy: one fd each while walked or written, so that a
# hostile tree cannot exhaust the process's fds (Linux's PATH_MAX allows ~2000).
MAX_DEPTH = 256
CHUNK = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the lstat must not block the open; the fstat then refuses it.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@attrs.define
class Entry:
    """One member of a tree: ``path`` is its names from the top (the top itself has one).

    ``uid``/``gid`` are as the tree's own side sees them (the container's ids for a container's
    tree). ``fd`` is an open file of a ``file`` entry's content, valid until the next entry is
    asked for (or ``feed`` writes the content to an fd); ``target`` the text of a symlink or,
    for a hard link, the path (names from the top) of the file it links to. ``mtime`` in whole
    seconds, as Docker's tars keep it."""

    path: tuple[str, ...]
    kind: Kind
    mode: int  # permission bits with setuid, setgid, sticky
    uid: int
    gid: int
    mtime: int
    size: int = 0
    target: str | tuple[str, ...] = ""
    fd: int = -1
    feed: Callable[[int], None] | None = None  # writes the content to an fd (tar input)


def display(path: tuple[str, ...]) -> str:
    """An entry's path as text ("a/b/c")."""
    return "/".join(path)


def _too_deep(where: str) -> errors.CopyError:
    return errors.CopyError(
        f"{where}: the tree is more than {MAX_DEPTH} directories deep, which sandkit does not "
        "copy (each level holds a file descriptor); copy its deeper parts separately"
    )


def unreadable(where: str, exc: OSError) -> errors.CopyError:
    """The error for a part of a source tree that the copying user may not read (or look up)."""
    fix = (
        "make it readable for the user who copies (chmod; in a rootless container, chmod it "
        "there with exec), or copy around it"
        if exc.errno in (errno.EACCES, errno.EPERM)
        else "check it and copy again"
    )
    return errors.CopyError(f"cannot read {where}: {exc.strerror or exc}; {fix}")


def refuse_special(where: str, st: os.stat_result) -> errors.CopyError:
    """The error for a FIFO, a device or a socket met in a copy: copying one is never meant."""
    what = (
        "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a device"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "not a regular file, directory or symlink"
    )
    return errors.CopyError(
        f"{where} is {what}: sandkit copies regular files, directories and symlinks only "
        "(reading a FIFO or a device could block or never end); remove it or copy around it"
    )


# --- walking a tree ------------------------------------------------------------------------


IdView = Callable[[int, int], tuple[int, int]]


def _identity(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


@attrs.define
class Walker:
    """Walks the tree at ``name`` in directory ``parent_fd`` (pre-order: a directory, then what
    it holds), yielding `Entry` objects. ``top`` (the top's path) and ``side`` name what errors
    are about; ``ids`` turns the owners the host sees into the tree's own view."""

    top: str
    side: str
    ids: IdView = _identity
    _links: dict[tuple[int, int], tuple[str, ...]] = attrs.field(factory=dict)

    def walk(self, parent_fd: int, name: str, top_name: str) -> Iterator[Entry]:
        """The tree at ``name`` (not followed if a symlink), its top named ``top_name``."""
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        yield from self._member(parent_fd, name, (top_name,), st)

    def walk_open(self, fd: int, top_name: str) -> Iterator[Entry]:
        """The same, from an fd on the top itself (a directory or regular file, opened by a
        resolution that followed symlinks inside the tree's root)."""
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            yield from self._directory(fd, (top_name,), st)
        elif stat.S_ISREG(st.st_mode):
            yield self._entry((top_name,), st, "file", fd=fd)
        else:
            raise refuse_special(self._where((top_name,)), st)

    def _where(self, path: tuple[str, ...]) -> str:
        """``path`` (names from the top) as the user gave its top: "'/d/x' in the container"."""
        return f"{os.path.join(self.top, *path[1:])!r} in {self.side}"

    def _entry(
        self, path: tuple[str, ...], st: os.stat_result, kind: Kind, **more: object
    ) -> Entry:
        uid, gid = self.ids(st.st_uid, st.st_gid)
        return Entry(
            path,
            kind,
            stat.S_IMODE(st.st_mode),
            uid,
            gid,
            int(st.st_mtime),
            **more,  # type: ignore[arg-type]
        )

    def _member(
        self, parent_fd: int, name: str, path: tuple[str, ...], st: os.stat_result
    ) -> Iterator[Entry]:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            target = _read_link(parent_fd, name, self._where(path))
            yield self._entry(path, st, "symlink", target=target)
        elif stat.S_ISDIR(mode):
            if len(path) > MAX_DEPTH:
                raise _too_deep(self._where(path))
            fd = _open_same(parent_fd, name, _DIR_FLAGS, st, self._where(path))
            try:
                yield from self._directory(fd, path, st)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            if st.st_nlink > 1:
                first = self._links.setdefault((st.st_dev, st.st_ino), path)
                if first != path:
                    yield self._entry(path, st, "hardlink", target=first)
                    return
            fd = _open_same(parent_fd, name, _READ_FLAGS, st, self._where(path))
            try:
                yield self._entry(path, st, "file", size=st.st_size, fd=fd)
            finally:
                os.close(fd)
        elif stat.S_ISSOCK(mode):
            return  # Docker's tars leave sockets out, and so does this
        else:
            raise refuse_special(self._where(path), st)

    def _directory(self, fd: int, path: tuple[str, ...], st: os.stat_result) -> Iterator[Entry]:
        yield self._entry(path, st, "dir")
        # Sorted, as Docker walks (so the first of a set of hard links is the same file): the
        # names of one directory are held meanwhile, as Docker holds them.
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            raise unreadable(self._where(path), exc) from None
        for name in names:
            try:
                child_st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since it was listed (the container is running)
            except OSError as exc:  # a directory one may list but not search (r--)
                raise unreadable(self._where((*path, name)), exc) from None
            yield from self._member(fd, name, (*path, name), child_st)


def _replaced(where: str) -> errors.CopyError:
    return errors.CopyError(f"{where} was replaced while it was being copied; copy it again")


def _read_link(parent_fd: int, name: str, where: str) -> str:
    """The target of the symlink ``name`` that was lstat'ed; a process of the container may
    remove it or swap something else in meanwhile."""
    try:
        return os.readlink(name, dir_fd=parent_fd)
    except OSError:  # gone (ENOENT), or no longer a symlink (EINVAL)
        raise _replaced(where) from None


def _open_same(parent_fd: int, name: str, flags: int, st: os.stat_result, where: str) -> int:
    """Open ``name`` without following a symlink, and check it is what was lstat'ed (a process of
    the container may swap it in between)."""
    try:
        fd = os.open(name, flags, dir_fd=parent_fd)
    except OSError as exc:
        raise unreadable(where, exc) from None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise _replaced(where)
    if flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


# --- writing a tree ------------------------------------------------------------------------

# Host ids to give an entry, or None to leave the writer's own.
Owner = Callable[[Entry], tuple[int, int] | None]


def _no_owner(entry: Entry) -> tuple[int, int] | None:
    return None


@attrs.define
class _Open:
    name: str
    fd: int
    meta: Entry | None = None  # the directory's own entry, applied when it is left


@attrs.define
class TreeWriter:
    """Writes entries below the directory ``root_fd`` (a fresh staging directory: names are
    created, never replaced). Directories are made 0700 and get their mode, owner and mtime when
    the writer leaves them (their contents change their mtime; a 0555 one could not be filled).
    Entry names come from anywhere (a tar): ``..``, ``.`` and empty names are refused."""

    root_fd: int
    owner: Owner = _no_owner
    written: int = 0
    _stack: list[_Open] = attrs.field(factory=list)

    def add(self, entry: Entry) -> None:
        """Write one entry (its parents made 0700 if missing; its content copied)."""
        *parents, name = _checked(entry.path)
        parent_fd = self._enter(tuple(parents))
        if entry.kind == "dir":
            self._enter(entry.path)  # made, or merged with one made before
            self._stack[-1].meta = entry
        elif entry.kind == "file":
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent_fd,
            )
            try:
                if entry.feed is not None:
                    entry.feed(fd)
                else:
                    copy_bytes(entry.fd, fd, entry.size)
            finally:
                os.close(fd)
            self._set_meta(parent_fd, name, entry)
        elif entry.kind == "symlink":
            assert isinstance(entry.target, str)
            os.symlink(entry.target, name, dir_fd=parent_fd)
            self._set_meta(parent_fd, name, entry)
        else:
            assert isinstance(entry.target, tuple)
            *link_dir, link_name = _checked(entry.target)
            source_fd = self._open_existing(tuple(link_dir))
            try:
                os.link(
                    link_name,
                    name,
                    src_dir_fd=source_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            finally:
                os.close(source_fd)
        self.written += 1

    def finish(self) -> None:
        """Leave every directory still open, applying what they wait for."""
        self._leave_to(0)

    def abandon(self) -> None:
        """Close everything without applying anything (the staging is about to be removed)."""
        for level in reversed(self._stack):
            os.close(level.fd)
        self._stack.clear()

    def _enter(self, parts: tuple[str, ...]) -> int:
        """An fd on directory ``parts`` below the root, making the missing ones; the stack of
        open directories follows it, and those left are finished."""
        if len(parts) > MAX_DEPTH:
            raise _too_deep(display(parts))
        common = 0
        while (
            common < min(len(parts), len(self._stack)) and self._stack[common].name == parts[common]
        ):
            common += 1
        self._leave_to(common)
        for name in parts[common:]:
            parent = self._stack[-1].fd if self._stack else self.root_fd
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
            self._stack.append(_Open(name, os.open(name, _DIR_FLAGS, dir_fd=parent)))
        return self._stack[-1].fd if self._stack else self.root_fd

    def _leave_to(self, depth: int) -> None:
        while len(self._stack) > depth:
            level = self._stack.pop()
            try:
                if level.meta is not None:
                    parent = self._stack[-1].fd if self._stack else self.root_fd
                    self._set_meta(parent, level.name, level.meta)
            finally:
                os.close(level.fd)

    def _open_existing(self, parts: tuple[str, ...]) -> int:
        fd = os.dup(self.root_fd)
        try:
            for name in parts:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError:
            os.close(fd)
            raise
        return fd

    def _set_meta(self, parent_fd: int, name: str, entry: Entry) -> None:
        ids = self.owner(entry)
        if ids is not None:
            os.chown(name, *ids, dir_fd=parent_fd, follow_symlinks=False)
        if entry.kind != "symlink":  # chown cleared setuid bits: the mode comes after it
            os.chmod(name, entry.mode, dir_fd=parent_fd, follow_symlinks=False)
        os.utime(name, (entry.mtime, entry.mtime), dir_fd=parent_fd, follow_symlinks=False)


def _checked(path: tuple[str, ...]) -> tuple[str, ...]:
    if not path or any(p in ("", ".", "..") or "/" in p or "\0" in p for p in path):
        raise errors.CopyError(
            f"the entry {display(path)!r} has a name that leads outside the destination (or none); "
            "the archive is hostile or malformed and was refused"
        )
    return path


def copy_bytes(source: int, dest: int, size: int) -> None:
    """Copy up to ``size`` bytes from fd ``source`` to the regular file ``dest`` in the kernel
    (no more: a file that grows while copied must not make the copy endless). Holes stay holes:
    a container's sparse file of a terabyte costs it nothing, and must not cost the host's disk
    a terabyte either."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
            end = min(os.lseek(source, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # nothing but a hole from offset on (or the file shrank)
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start, end = offset, size  # no hole lookup here: every byte is copied
        if start >= size:
            break
        offset = _copy_range(source, dest, start, end)
        if offset < end:
            break  # the file shrank while it was copied
    # The length the holes at the end leave to give (and no more if the file shrank).
    os.ftruncate(dest, min(os.fstat(source).st_size, size))


def _copy_range(source: int, dest: int, start: int, end: int) -> int:
    """Copy bytes ``start`` to ``end`` of ``source`` to the same offsets of ``dest``; where the
    copy stopped (before ``end`` if the source ended first)."""
    os.lseek(dest, start, os.SEEK_SET)
    offset = start
    while offset < end:
        try:
            n = os.sendfile(dest, source, offset, min(end - offset, CHUNK))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            data = os.pread(source, min(end - offset, CHUNK), offset)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dest, view) :]
        if n == 0:
            break
        offset += n
    return offset


# --- committing a staged tree ----------------------------------------------------------------


def check_merge(stage_fd: int, dest_fd: int, where: str) -> None:
    """Refuse (before anything moves) what Docker's copy refuses: a directory over a
    non-directory, or the other way round."""
    for name in os.listdir(stage_fd):
        new = os.stat(name, dir_fd=stage_fd, follow_symlinks=False)
        try:
            old = os.stat(name, dir_fd=dest_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        new_dir, old_dir = stat.S_ISDIR(new.st_mode), stat.S_ISDIR(old.st_mode)
        path = os.path.join(where, name)
        if old_dir and not new_dir:
            raise errors.CopyError(
                f"cannot overwrite directory {path!r} with non-directory: remove it first or "
                "copy to another path"
            )
        if new_dir and not old_dir:
            raise errors.CopyError(
                f"cannot overwrite non-directory {path!r} with directory: remove it first or "
                "copy to another path"
            )
        if new_dir:
            with _opened(stage_fd, name) as s, _opened(dest_fd, name) as d:
                check_merge(s, d, path)


def merge(stage_fd: int, dest_fd: int) -> None:
    """Move what the staging directory holds into ``dest_fd``: a name the destination lacks is
    renamed in whole; a directory both have is merged (and takes the staged one's mode, owner
    and times, as Docker's extraction does); a non-directory replaces the one there (rename:
    a symlink there is replaced, never followed)."""
    for name in os.listdir(stage_fd):
        try:
            old = os.stat(name, dir_fd=dest_fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        new = os.stat(name, dir_fd=stage_fd, follow_symlinks=False)
        if not stat.S_ISDIR(new.st_mode):
            os.rename(name, name, src_dir_fd=stage_fd, dst_dir_fd=dest_fd)
        elif old is None:
            _move_dir(stage_fd, dest_fd, name, new)
        else:
            # Emptied by renames, which need write access to it (not root, a 0555 directory).
            os.chmod(name, 0o700, dir_fd=stage_fd, follow_symlinks=False)
            with _opened(stage_fd, name) as s, _opened(dest_fd, name) as d:
                merge(s, d)
            os.rmdir(name, dir_fd=stage_fd)
            _restore(dest_fd, name, new)


def _move_dir(stage_fd: int, dest_fd: int, name: str, st: os.stat_result) -> None:
    # Moving a directory to another parent writes its "..": it needs write access to itself.
    if not st.st_mode & stat.S_IWUSR:
        os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_IWUSR, dir_fd=stage_fd)
    os.rename(name, name, src_dir_fd=stage_fd, dst_dir_fd=dest_fd)
    if not st.st_mode & stat.S_IWUSR:
        _restore(dest_fd, name, st)


def _restore(parent_fd: int, name: str, st: os.stat_result) -> None:
    """Give directory ``name`` the owner, mode and times of ``st``."""
    with contextlib.suppress(PermissionError):  # not root: the writer's own ids are all it has
        os.chown(name, st.st_uid, st.st_gid, dir_fd=parent_fd, follow_symlinks=False)
    os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=parent_fd, follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent_fd, follow_symlinks=False)


@contextlib.contextmanager
def _opened(parent_fd: int, name: str) -> Iterator[int]:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)
