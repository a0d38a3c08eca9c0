"""A container's writable layer (an overlayfs upper directory) as `docker diff` lists it and as
`docker commit` stores it: an uncompressed OCI layer tar.

Overlay records deletions its own way, the layer format another (the OCI changeset rules):

* a whiteout (a 0/0 character device at NAME) becomes an empty regular file ``.wh.NAME``;
* an opaque directory (``trusted.overlay.opaque`` or ``user.overlay.opaque`` = ``y``: the
  lower directory was deleted, then made again) gets a ``.wh..wh..opq`` entry right after it;
* overlay's own attributes (``*.overlay.*``) never go into the layer; other extended attributes
  of files and directories do (``SCHILY.xattr.*`` PAX records), as the store applies them.

Entries come in the order Docker writes them: a directory, then its contents, names sorted
bytewise; mtimes in whole seconds, no user or group names, hard links within the layer kept as
links. The same tree therefore always gives the same tar and the same digest.

The upper directory belongs to a container: whatever it holds is hostile. Every entry is
reached by fd from its parent with ``O_NOFOLLOW`` (a symlink is stored, never followed), a file
is read from the fd that was checked to be the regular file just listed, the walk keeps one
directory open at a time and climbs back by ``..`` checking where it lands, and a file that
changes size under the reader stops the write with an error instead of a corrupt layer.

``ignore`` names paths that sandkit itself put in the writable layer (/etc/hosts, mount points
made for /proc or a volume): they are left out, like the "init layer" Docker keeps apart, and a
directory that holds nothing else (a copied-up /etc) is left out with them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import BinaryIO

import attrs

from ..errors import ImageError
from .fsutil import DIR_FLAGS, openat2_no_symlinks
from .layers import OPAQUE_MARKER, OPAQUE_XATTRS, WHITEOUT_PREFIX

Owner = Callable[[int, int], tuple[int, int]]
_COPY_CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_REDIRECT_XATTRS = ("overlay.redirect", "overlay.metacopy")


@attrs.frozen(order=True)
class Change:
    """One line of `docker diff`: ``kind`` "A" (added), "C" (changed) or "D" (deleted), and
    the absolute ``path`` in the container."""

    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


@attrs.frozen
class _Item:
    """One entry of the layer to be: ``parts`` its path, ``st`` its lstat, ``whiteout`` for a
    deletion, ``opaque`` for a directory hiding what lay below, ``xattrs`` (files and
    directories only). ``dir_fd``/``name`` reach a regular file while the item is being used."""

    parts: tuple[str, ...]
    st: os.stat_result
    whiteout: bool = False
    opaque: bool = False
    xattrs: dict[str, bytes] = attrs.field(factory=dict)
    dir_fd: int = -1
    name: str = ""
    under_opaque: bool = False


def _changed_error(path: str) -> ImageError:
    return ImageError(
        f"{path} changed while the container's writable layer was being read; stop the "
        "container (or let it be idle) and try again"
    )


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _sorted_names(fd: int) -> list[str]:
    """The names in directory ``fd``, largest first (so that ``pop()`` takes them in order)."""
    return sorted(os.listdir(fd), key=os.fsencode, reverse=True)


def _xattrs(fd: int, path: str) -> dict[str, bytes]:
    """The extended attributes of ``fd`` that a layer carries; ImageError for the overlay
    features (redirect_dir, metacopy) whose meaning a plain layer cannot hold."""
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    found = {}
    for attr in sorted(names):
        if ".overlay." in attr:
            if attr.endswith(_REDIRECT_XATTRS):
                raise ImageError(
                    f"{path} was renamed or copied up with overlay's redirect_dir or metacopy "
                    f"feature ({attr}), which a layer cannot record; mount without them"
                )
            continue
        try:
            found[attr] = os.getxattr(fd, attr)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.EPERM, errno.EACCES):
                raise
    return found


def _is_opaque(xattrs_fd: int) -> bool:
    for attr in OPAQUE_XATTRS:
        try:
            if os.getxattr(xattrs_fd, attr) == b"y":
                return True
        except OSError:
            continue
    return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_ignored_below(parts: tuple[str, ...], ignore: frozenset[tuple[str, ...]]) -> bool:
    """Whether ``parts`` is an ignored path or a directory on the way to one."""
    return any(p[: len(parts)] == parts for p in ignore)


class _Walk:
    """The items of an upper directory in layer order (see the module docstring)."""

    def __init__(
        self, root_fd: int, ignore: frozenset[tuple[str, ...]], *, one_filesystem: bool = False
    ) -> None:
        self.root_fd = root_fd
        self.ignore = ignore
        # exporting a merged tree: what is mounted on it (/proc, a volume) shows as a directory
        self.root_dev = os.fstat(root_fd).st_dev if one_filesystem else None
        # directories whose header waits until something inside them is kept
        self.pending: list[_Item] = []

    def items(self) -> Iterator[_Item]:
        fd = os.dup(self.root_fd)
        parts: list[str] = []
        opaque_depth: list[bool] = [False]
        names = _sorted_names(fd)
        stack: list[tuple[list[str], tuple[int, int]]] = []
        try:
            while True:
                if names:
                    name = names.pop()
                    here = (*parts, name)
                    child = yield from self._visit(fd, name, here, opaque_depth[-1])
                    if child is not None:
                        item_opaque = child[1]
                        stack.append((names, _identity(fd)))
                        os.close(fd)
                        fd = child[0]
                        parts.append(name)
                        opaque_depth.append(opaque_depth[-1] or item_opaque)
                        names = _sorted_names(fd)
                elif stack:
                    names, parent = stack.pop()
                    self._leave(tuple(parts))
                    parts.pop()
                    opaque_depth.pop()
                    up = os.open("..", DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = up
                    if _identity(fd) != parent:
                        raise _changed_error("/" + "/".join(parts))
                else:
                    return
        finally:
            os.close(fd)

    def _visit(
        self, fd: int, name: str, here: tuple[str, ...], under_opaque: bool
    ) -> Generator[_Item, None, tuple[int, bool] | None]:
        """Yield what ``name`` contributes; return (fd, opaque) of a directory to descend into."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # removed meanwhile: it is not part of the layer
        if here in self.ignore and not stat.S_ISDIR(st.st_mode):
            return None
        if stat.S_ISSOCK(st.st_mode):
            return None  # as Docker: sockets are not archived
        if not stat.S_ISDIR(st.st_mode):
            yield from self._flush()
            whiteout = self.root_dev is None and _is_whiteout(st)
            yield _Item(here, st, whiteout, dir_fd=fd, name=name, under_opaque=under_opaque)
            return None
        if self.root_dev is not None and st.st_dev != self.root_dev:
            yield from self._flush()
            yield _Item(here, st)  # a mount point: the directory, not what is mounted there
            return None
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
        try:
            if _identity(child) != (st.st_dev, st.st_ino):
                raise _changed_error("/" + "/".join(here))
            path = "/" + "/".join(here)
            item = _Item(
                here,
                st,
                opaque=_is_opaque(child),
                xattrs=_xattrs(child, path),
                under_opaque=under_opaque,
            )
        except BaseException:
            os.close(child)
            raise
        if _is_ignored_below(here, self.ignore) and not item.opaque:
            self.pending.append(item)  # kept only if something inside it is
        else:
            yield from self._flush()
            yield item
        return child, item.opaque

    def _flush(self) -> Iterator[_Item]:
        yield from self.pending
        self.pending.clear()

    def _leave(self, parts: tuple[str, ...]) -> None:
        if self.pending and self.pending[-1].parts == parts:
            self.pending.pop()  # nothing inside was kept: the directory was only on the way


def _split(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p not in ("", "."))


def _walk(root_fd: int, ignore: Iterable[str], *, one_filesystem: bool = False) -> Iterator[_Item]:
    paths = frozenset(_split(p) for p in ignore)
    return _Walk(root_fd, paths, one_filesystem=one_filesystem).items()


def _open_root(upper_dir: str | os.PathLike[str] | int) -> int:
    if isinstance(upper_dir, int):
        return os.dup(upper_dir)
    return os.open(upper_dir, DIR_FLAGS)


# --- docker diff ----------------------------------------------------------------------------


def _in_lower(lower_fds: Sequence[int], parts: tuple[str, ...]) -> bool:
    """Whether ``parts`` exists in the stack of lower layers (topmost first); a whiteout there
    means it was deleted below."""
    parent, name = "/".join(parts[:-1]) or ".", parts[-1]
    for lower in lower_fds:
        try:
            dfd = openat2_no_symlinks(lower, parent, DIR_FLAGS)
            if dfd is None:  # no openat2: the component walk of fsutil's fallback
                dfd = os.open(parent, DIR_FLAGS, dir_fd=lower)
        except OSError:
            continue
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        finally:
            os.close(dfd)
        return not _is_whiteout(st)
    return False


def diff_upper(
    upper_dir: str | os.PathLike[str] | int,
    *,
    lower: Sequence[str | os.PathLike[str]] = (),
    ignore: Iterable[str] = (),
) -> list[Change]:
    """The changes an overlay upper directory holds, as `docker diff` lists them, sorted by
    path: "D" for a whiteout, "C" for a path the ``lower`` layers (directories, topmost first)
    also have, "A" for the others. ``ignore``: paths sandkit put there itself (module docstring)."""
    root = _open_root(upper_dir)
    lower_fds = [os.open(p, DIR_FLAGS) for p in lower]
    try:
        changes = []
        for item in _walk(root, ignore):
            path = "/" + "/".join(item.parts)
            if item.whiteout:
                changes.append(Change(path, "D"))
            elif not item.under_opaque and _in_lower(lower_fds, item.parts):
                changes.append(Change(path, "C"))
            else:
                changes.append(Change(path, "A"))
        return sorted(changes)
    finally:
        for fd in (root, *lower_fds):
            os.close(fd)


# --- the layer tar ------------------------------------------------------------------------


class _HashingOut:
    """Writes to ``out`` while hashing and counting."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.sha.update(data)
        self.count += len(data)


def _needs_binary(*texts: str) -> bool:
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _header(
    name: str, st: os.stat_result, owner: Owner, *, xattrs: dict[str, bytes] | None = None
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = owner(st.st_uid, st.st_gid)
    info.mtime = max(0, int(st.st_mtime))  # whole seconds, as Docker writes them
    info.uname = info.gname = ""
    info.pax_headers = {
        "SCHILY.xattr." + attr: value.decode("utf-8", "surrogateescape")
        for attr, value in (xattrs or {}).items()
    }
    return info


def _encode(info: tarfile.TarInfo) -> bytes:
    texts = (info.name, info.linkname, *info.pax_headers.values())
    if _needs_binary(*texts):
        # a name or attribute that is not UTF-8 (raw bytes): stored as they are
        info.pax_headers = {**info.pax_headers, "hdrcharset": "BINARY"}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _LayerWriter:
    def __init__(self, out: _HashingOut, owner: Owner) -> None:
        self.out = out
        self.owner = owner
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first name, for nlink > 1

    def add(self, item: _Item) -> None:
        name = "/".join(item.parts)
        if item.whiteout:
            parent = item.parts[:-1]
            info = _header(
                "/".join((*parent, WHITEOUT_PREFIX + item.parts[-1])), item.st, self.owner
            )
            info.mode = 0o600
            self._emit(info)
        elif stat.S_ISDIR(item.st.st_mode):
            info = _header(name + "/", item.st, self.owner, xattrs=item.xattrs)
            info.type = tarfile.DIRTYPE
            self._emit(info)
            if item.opaque:
                marker = _header(f"{name}/{OPAQUE_MARKER}", item.st, self.owner)
                self._emit(marker)
        elif stat.S_ISREG(item.st.st_mode):
            self._regular(item, name)
        else:
            self._special(item, name)

    def _emit(self, info: tarfile.TarInfo) -> None:
        self.out.write(_encode(info))

    def _special(self, item: _Item, name: str) -> None:
        st = item.st
        info = _header(name, st, self.owner)
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(item.name, dir_fd=item.dir_fd)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        else:  # a character or block device other than a whiteout
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self._emit(info)

    def _regular(self, item: _Item, name: str) -> None:
        fd = os.open(
            item.name,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
            dir_fd=item.dir_fd,
        )
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (item.st.st_dev, item.st.st_ino) or not stat.S_ISREG(
                st.st_mode
            ):
                raise _changed_error("/" + name)
            if st.st_nlink > 1:
                first = self.links.setdefault((st.st_dev, st.st_ino), name)
                if first != name:
                    info = _header(name, st, self.owner)
                    info.type = tarfile.LNKTYPE
                    info.linkname = first
                    self._emit(info)
                    return
            info = _header(name, st, self.owner, xattrs=_xattrs(fd, "/" + name))
            info.size = st.st_size
            self._emit(info)
            self._copy(fd, st.st_size, name)
        finally:
            os.close(fd)

    def _copy(self, fd: int, size: int, name: str) -> None:
        left = size
        while left:
            chunk = os.read(fd, min(left, _COPY_CHUNK))
            if not chunk:
                raise _changed_error("/" + name)  # shrank under us: the header says more
            self.out.write(chunk)
            left -= len(chunk)
        if size % _BLOCK:
            self.out.write(bytes(_BLOCK - size % _BLOCK))


def _same_ids(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


def _write_tar(
    root_dir: str | os.PathLike[str] | int,
    out: BinaryIO,
    ignore: Iterable[str],
    owner: Owner | None,
    *,
    one_filesystem: bool,
) -> tuple[str, int]:
    root = _open_root(root_dir)
    hashing = _HashingOut(out)
    writer = _LayerWriter(hashing, owner or _same_ids)
    try:
        for item in _walk(root, ignore, one_filesystem=one_filesystem):
            writer.add(item)
    finally:
        os.close(root)
    hashing.write(bytes(2 * _BLOCK))  # the end of the archive
    return "sha256:" + hashing.sha.hexdigest(), hashing.count


def export_tree(
    root_dir: str | os.PathLike[str] | int, out: BinaryIO, *, owner: Owner | None = None
) -> tuple[str, int]:
    """Write a container's merged root (a path, or an fd on it) as one tar, as `docker export`
    does: what is mounted on it (/proc, /dev, volumes) appears as an empty directory. Returns
    (sha256 digest, size)."""
    return _write_tar(root_dir, out, (), owner, one_filesystem=True)


def write_layer_from_upper(
    upper_dir: str | os.PathLike[str] | int,
    out: BinaryIO,
    *,
    ignore: Iterable[str] = (),
    owner: Owner | None = None,
) -> tuple[str, int]:
    """Write the uncompressed layer tar of the overlay upper directory ``upper_dir`` (a path, or
    an fd on it) to ``out``; returns (diff_id, size in bytes). ``owner(uid, gid)`` gives the ids
    to record for a file the caller sees owned by ``uid:gid`` (a rootless container's ids as
    the container sees them); ``ignore``: paths sandkit put there itself (module docstring).
    ImageError when the tree changes while it is read."""
    return _write_tar(upper_dir, out, ignore, owner, one_filesystem=False)
