"""Safe application of one layer tar into its own directory (an overlayfs lower dir).

Every entry is resolved component by component from an fd on the layer root with
``O_NOFOLLOW | O_DIRECTORY``: a symlink or file in the middle of a path is never followed, so a
hostile tar cannot write outside the layer directory whatever it contains. ``tarfile`` is used
only to parse headers; nothing goes through ``extractall``/``extract``.

OCI changeset rules, translated into overlayfs terms (the layer is a lower dir, not a merged
tree, so deletions are recorded rather than performed):

* ``.wh.NAME`` becomes an overlay whiteout at NAME: a 0/0 character device. The kernel lets an
  unprivileged user create that one device (Linux >= 5.8), so root and rootless agree.
* ``.wh..wh..opq`` marks its directory opaque: ``trusted.overlay.opaque=y`` (root) and
  ``user.overlay.opaque=y`` (for rootless overlay mounted with ``userxattr``), both when allowed.
* A directory that replaces a whiteout of the same layer (``.wh.a`` then ``a/x``) is made opaque,
  since the layer deleted the lower ``a`` before recreating it.
* Devices, foreign ownership and privileged xattrs that an unprivileged user cannot create are
  replaced by visible stand-ins (an empty file with mode 000 for a device) and reported with a
  :class:`LayerWarning`, never silently dropped.

Memory stays flat whatever the layer holds: headers are bounded (tarstream.py), a member is
forgotten once applied, and directories keep only the four numbers set when the apply ends.
Work is linear in the entries: replacing a directory forgets the metadata of its own subtree.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import attrs
import zstandard
from isal import igzip, isal_zlib

from ..errors import ImageError, UnsafeLayerError
from .fsutil import DIR_FLAGS as _DIR_FLAGS
from .fsutil import openat2_no_symlinks, remove_tree_at
from .tarstream import ForwardReader, LayerTarFile

if TYPE_CHECKING:
    from .budget import DiskBudget

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_MAX_NAME = 255
_MAX_PATH = 4096
_PEEK_BUFFER = 64 << 10
_MAX_ID = (1 << 32) - 2  # uid_t; (uid_t)-1 means "leave unchanged" to chown
_MAX_MTIME_NS = (1 << 63) - 1
_MAX_MAJOR, _MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1  # the kernel's dev_t: 12 and 20 bits
_DEVICE_TYPES = (tarfile.CHRTYPE, tarfile.BLKTYPE)
_WALK_DEPTH = 4  # parents this deep or deeper are opened in one openat2


class LayerWarning(UserWarning):
    """Part of a layer could not be reproduced exactly (typically in rootless mode)."""


@attrs.define
class ApplyReport:
    """What applying one layer could not reproduce exactly: device nodes written as placeholders,
    entries whose owner could not be set (rootless), extended attributes skipped; ``entries``
    counts what was applied. `warn` tells the caller."""

    entries: int = 0
    placeholders: list[str] = attrs.field(factory=list)  # devices written as empty files
    foreign_owners: int = 0  # entries whose uid/gid could not be set (rootless)
    skipped_xattrs: list[str] = attrs.field(factory=list)
    clamped_owners: int = 0  # entries whose uid/gid the id mapping has not: made root's

    def warn(self, layer: str) -> None:
        """Tell the caller what was approximated, in one warning per kind."""
        if self.placeholders:
            shown = ", ".join("/" + p for p in self.placeholders[:5])
            warnings.warn(
                f"layer {layer}: {len(self.placeholders)} device node(s) ({shown}) cannot be created "
                "without root and were written as empty mode-000 files; run as root to get real "
                "devices (containers get their own /dev anyway)",
                LayerWarning,
                stacklevel=3,
            )
        if self.foreign_owners:
            warnings.warn(
                f"layer {layer}: {self.foreign_owners} entries belong to other users and are owned "
                "by you instead (they appear as root inside a rootless container); run as root to "
                "keep the image's ownership",
                LayerWarning,
                stacklevel=3,
            )
        if self.clamped_owners:
            warnings.warn(
                f"layer {layer}: {self.clamped_owners} entries belong to a uid or gid that rootless "
                "containers do not map (0 to 65535): they belong to root inside instead, as with "
                "Podman's ignore_chown_errors; run as root to keep the image's ownership",
                LayerWarning,
                stacklevel=3,
            )
        if self.skipped_xattrs:
            warnings.warn(
                f"layer {layer}: extended attributes not applied: "
                f"{', '.join(sorted(set(self.skipped_xattrs))[:5])} (overlay-internal ones are "
                "never taken from a layer; others need root)",
                LayerWarning,
                stacklevel=3,
            )


# compression -> OCI layer media type
LAYER_TYPES = {
    "": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def _sniff(magic: bytes) -> str:
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""


def compression_of(path: str | os.PathLike[str]) -> str:
    """``"gzip"`` or ``"zstd"`` by the magic bytes at the start of the file ``path``, or ``""``
    for an uncompressed (or unknown) one."""
    with open(path, "rb") as f:
        return _sniff(f.read(4))


# What a corrupt or truncated compressed layer raises while it is read.
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # isal's stub: an instance
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    zlib.error,
    _ISAL_ERROR,
    zstandard.ZstdError,
    gzip.BadGzipFile,
)
# What reading a layer tar raises for a bad one. A name of its own: mypy cannot check a
# starred tuple of unknown length inside an `except (...)`.
_BAD_TAR: tuple[type[BaseException], ...] = (tarfile.TarError, *DECOMPRESSION_ERRORS)


def open_decompressed(raw: BinaryIO) -> tuple[str, BinaryIO]:
    """Wrap ``raw`` in a decompressor chosen by the stream's magic bytes (gzip, zstd or none);
    returns ("gzip"|"zstd"|"", stream).

    The media type is not trusted for this: docker archives often label plain tars as gzip and
    vice versa, while the first bytes cannot lie about the format.
    """
    # A small buffer: it serves the peek, while the decompressor's big reads bypass it and go
    # straight to ``raw`` (a big buffer would copy every byte once more).
    buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw, _PEEK_BUFFER)  # type: ignore[type-var]
    kind = _sniff(buffered.peek(4)[:4])
    if kind == "gzip":
        # ISA-L's inflate is several times faster than zlib's, and layer apply is mostly that.
        # Its gzip reader (the raw stream inside igzip.IGzipFile, typed in isal_zlib.pyi)
        # inflates straight into the caller's buffer, where IGzipFile's readinto would inflate
        # into a bytes object of its own and copy that: a copy of every byte of the layer.
        return kind, isal_zlib._GzipReader(buffered, igzip.READ_BUFFER_SIZE)  # type: ignore[return-value]
    if kind == "zstd":
        dctx = zstandard.ZstdDecompressor()
        return kind, dctx.stream_reader(buffered, read_across_frames=True)
    return kind, buffered


def split_name(name: str, what: str = "entry") -> list[str]:
    """Split a tar name into components, refusing anything that could leave the layer root."""
    if name.startswith("/"):
        raise UnsafeLayerError(
            f"layer {what} {name!r} has an absolute path; layer tars must use relative names, "
            "so this layer is malformed or hostile and was not applied"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(
            f"layer {what} {name!r} contains '..', which would escape the layer; the layer is "
            "hostile or malformed and was not applied"
        )
    if "\0" in name:
        raise UnsafeLayerError(
            f"layer {what} {name[:80]!r} contains a NUL byte; the layer was not applied"
        )
    encoded = name.encode("utf-8", "surrogateescape")
    # (split in C: a name may have 2,000 components, and this runs for every entry)
    if len(encoded) > _MAX_PATH or (
        len(encoded) > _MAX_NAME and max(map(len, encoded.split(b"/"))) > _MAX_NAME
    ):
        raise UnsafeLayerError(
            f"layer {what} {name[:80]!r}... has a name longer than Linux allows "
            f"({_MAX_NAME} bytes per component, {_MAX_PATH} per path); the layer was not applied"
        )
    return parts


def _mtime_ns(m: tarfile.TarInfo) -> int:
    """The member's mtime in ns; Docker sets times before 1970 or past what the kernel takes
    (a PAX mtime may say 1e400) to the epoch, and so does this."""
    try:
        ns = int(m.mtime * 1_000_000_000)
    except (OverflowError, ValueError, TypeError):  # inf, nan
        return 0
    return ns if 0 <= ns <= _MAX_MTIME_NS else 0


def check_numbers(m: tarfile.TarInfo) -> None:
    """Refuse numbers no filesystem takes (base-256 and PAX fields can say anything)."""
    bad = None
    if not (0 <= m.uid <= _MAX_ID and 0 <= m.gid <= _MAX_ID):
        bad = f"owner {m.uid}:{m.gid}"
    elif m.size < 0:
        bad = f"size {m.size}"
    elif m.type in _DEVICE_TYPES and not (
        0 <= m.devmajor <= _MAX_MAJOR and 0 <= m.devminor <= _MAX_MINOR
    ):
        bad = f"device number {m.devmajor}:{m.devminor}"
    if bad:
        raise UnsafeLayerError(
            f"layer entry {m.name[:200]!r} has {bad}, which Linux cannot represent; "
            "the layer is hostile or malformed and was not applied"
        )


@attrs.frozen
class _DirMeta:
    """What is set on a directory when the apply ends (kept instead of its whole header)."""

    uid: int
    gid: int
    mode: int
    mtime_ns: int


class _DirNode:
    """A directory of the layer's tree of declared directories."""

    __slots__ = ("children", "meta")

    def __init__(self) -> None:
        self.meta: _DirMeta | None = None
        self.children: dict[str, _DirNode] = {}


class _DirTree:
    """The directories this layer declared, with their deferred metadata. A tree, so that
    dropping a replaced directory costs its depth, not a scan of every directory known (that scan
    made a layer of 40,000 directories each replaced by a file take about a minute)."""

    def __init__(self) -> None:
        self.root = _DirNode()

    def set(self, path: tuple[str, ...], meta: _DirMeta) -> None:
        node = self.root
        for comp in path:
            node = node.children.setdefault(comp, _DirNode())
        node.meta = meta

    def drop(self, path: tuple[str, ...]) -> None:
        """Forget ``path`` and everything under it (it was replaced)."""
        node: _DirNode | None = self.root
        for comp in path[:-1]:
            node = node.children.get(comp) if node else None
        if node is not None:
            node.children.pop(path[-1], None)

    def deepest_first(self) -> Iterator[tuple[tuple[str, ...], _DirMeta]]:
        """Every declared directory, each after all the directories under it (no recursion: a
        path may be 2,000 directories deep)."""
        stack: list[tuple[tuple[str, ...], _DirNode, bool]] = [((), self.root, False)]
        while stack:
            path, node, expanded = stack.pop()
            if expanded:
                if node.meta is not None:
                    yield path, node.meta
                continue
            stack.append((path, node, True))
            stack.extend(((*path, name), child, False) for name, child in node.children.items())


def _not_in_layer(m: tarfile.TarInfo) -> ImageError:
    return ImageError(
        f"layer hard link {m.name!r} points at {m.linkname!r}, which is not in the same layer "
        "(or was replaced before the link); the layer is malformed (hard links may only join "
        "files of one layer)"
    )


class _Applier:
    """Applies one tar stream under ``root``; see the module docstring for the rules."""

    def __init__(
        self,
        root: Path,
        reader: ForwardReader,
        budget: DiskBudget | None = None,
        id_limits: tuple[int, int] | None = None,
    ) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.id_limits = id_limits  # (uids, gids) a user namespace maps; None: any id
        self.budget = budget  # charged for each entry before it is written (budget.py)
        self.reader = reader  # what the tarfile reads: regular files are copied from it directly
        self.report = ApplyReport()
        self.whiteouts: set[tuple[str, ...]] = set()  # created by this layer
        self.dirs = _DirTree()
        self._cache: tuple[tuple[str, ...], int] | None = None  # last parent dir opened

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    # --- path resolution -------------------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cache:
            os.close(self._cache[1])
            self._cache = None

    def open_dir(self, parts: tuple[str, ...], *, create: bool) -> int:
        """Return an fd on directory ``parts`` (cached; do not close), creating missing ones."""
        if self._cache and self._cache[0] == parts:
            return self._cache[1]
        fd = self._open_existing(parts)
        if fd is None:
            fd = os.dup(self.root_fd)
            try:
                for i, comp in enumerate(parts):
                    fd = self._step(fd, parts[: i + 1], comp, create)
            except BaseException:
                os.close(fd)
                raise
        self._drop_cache()
        self._cache = (parts, fd)
        return fd

    def _open_existing(self, parts: tuple[str, ...]) -> int | None:
        """An fd on directory ``parts`` in one syscall when it exists and no symlink is on the
        way (else None: the walk component by component creates what is missing and says what is
        wrong). A path may be 2,000 directories deep: opened one by one, entries alternating
        between two such paths cost a 30 KB layer half a minute."""
        if len(parts) < _WALK_DEPTH:  # a few os.open cost less than one call through ctypes
            return None
        try:
            return openat2_no_symlinks(self.root_fd, "/".join(parts), _DIR_FLAGS)
        except OSError:
            return None

    def _step(self, fd: int, path: tuple[str, ...], comp: str, create: bool) -> int:
        try:
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(comp, 0o755, dir_fd=fd)
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not (create and path in self.whiteouts):
                raise UnsafeLayerError(
                    f"layer entry goes through {'/'.join(path)!r}, which is a symlink or a file "
                    "in this layer; following it could write outside the layer, so the layer was "
                    "refused"
                ) from None
            # `.wh.a` then `a/x` in one layer: the lower `a` is deleted, then a new `a` begins.
            os.unlink(comp, dir_fd=fd)
            os.mkdir(comp, 0o755, dir_fd=fd)
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            self._make_opaque(nxt)
            self.whiteouts.discard(path)
        os.close(fd)
        return nxt

    def _clear(self, dfd: int, name: str, path: tuple[str, ...], keep_dir: bool) -> bool:
        """Remove what is at ``name`` so a new entry can take its place (a later entry for the
        same path wins). A directory is kept when the new entry is a directory too (its
        metadata gets updated). Returns True if a directory was kept."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            # the fd cache holds only ``dfd`` itself (the parent), never a child of this tree
            remove_tree_at(dfd, name)
            self.dirs.drop(path)
        else:
            os.unlink(name, dir_fd=dfd)
        return False

    # --- entries -----------------------------------------------------------------------------

    def apply(self, tar: LayerTarFile) -> ApplyReport:
        while (member := tar.next()) is not None:
            self.report.entries += 1
            check_numbers(member)  # (a negative size would credit the budget)
            if self.budget is not None:
                self.budget.charge_entry(member)
            parts = tuple(split_name(member.name))
            if not parts:
                if not member.isdir():
                    raise UnsafeLayerError(
                        f"layer entry {member.name!r} would replace the layer root with a "
                        "non-directory; the layer is hostile or malformed and was not applied"
                    )
                self._directory_meta((), member, self.root_fd, None)
                continue
            parent, name = parts[:-1], parts[-1]
            if name == OPAQUE_MARKER:
                self._make_opaque(self.open_dir(parent, create=True))
            elif name.startswith(WHITEOUT_PREFIX):
                self._whiteout(parent, name[len(WHITEOUT_PREFIX) :], member)
            else:
                self._entry(member, parent, name)
        self._finish_dirs()
        return self.report

    def _entry(self, m: tarfile.TarInfo, parent: tuple[str, ...], name: str) -> None:
        path = (*parent, name)
        dfd = self.open_dir(parent, create=True)
        replaced_whiteout = path in self.whiteouts
        self.whiteouts.discard(path)
        if m.isdir():
            if not self._clear(dfd, name, path, keep_dir=True):
                os.mkdir(name, 0o755, dir_fd=dfd)
                if replaced_whiteout:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                    try:
                        self._make_opaque(fd)
                    finally:
                        os.close(fd)
            self._directory_meta(path, m, dfd, name)
            return
        self._clear(dfd, name, path, keep_dir=False)
        if m.isreg():
            self._regular(m, dfd, name)
            return
        if m.islnk():
            self._hardlink(m, parent, name)
            return  # a hard link shares the target's inode and so its metadata
        placeholder = False
        if m.issym():
            if "\0" in m.linkname:
                raise UnsafeLayerError(
                    f"layer symlink {m.name!r} has a NUL byte in its target; "
                    "the layer was not applied"
                )
            os.symlink(m.linkname, name, dir_fd=dfd)
        elif m.ischr() or m.isblk():
            placeholder = self._device(m, dfd, name, path)
        elif m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=dfd)
        else:
            raise UnsafeLayerError(
                f"layer entry {m.name!r} has tar type {m.type!r}, which no image layer should "
                "contain; the layer was not applied"
            )
        self._meta_at(dfd, name, m)
        if placeholder:
            os.chmod(name, 0, dir_fd=dfd)  # mode 000: visibly not the device the image meant

    def _regular(self, m: tarfile.TarInfo, dfd: int, name: str) -> None:
        fs = os.statvfs(dfd)
        free = fs.f_bavail * fs.f_frsize
        if m.size > free:
            raise UnsafeLayerError(
                f"layer file {m.name!r} claims {m.size} bytes but only {free} are free in the "
                "image store; free some space (sandkit image prune) or the layer is hostile"
            )
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dfd,
        )
        try:
            if m.issparse():  # rare (GNU sparse): the pieces are stored one after the other
                self._sparse(m, fd)
            else:
                self.reader.seek(m.offset_data)
                self.reader.copy_to(fd, m.size)
            self._meta_fd(fd, m)
        finally:
            os.close(fd)

    def _sparse(self, m: tarfile.TarInfo, fd: int) -> None:
        """Write each stored piece at its offset, leaving the holes as holes."""
        self.reader.seek(m.offset_data)
        end = 0
        # typeshed says bytes; tarfile fills it with (offset, size) pairs.
        pieces = cast(list[tuple[int, int]], m.sparse or [])
        for offset, size in pieces:
            if size == 0:  # GNU tar ends the map with empty pieces
                continue
            if offset < end or size < 0 or offset + size > m.size:
                raise UnsafeLayerError(
                    f"layer sparse file {m.name!r} has overlapping or out-of-range "
                    "pieces; the layer is hostile or malformed and was not applied"
                )
            os.lseek(fd, offset, os.SEEK_SET)
            self.reader.copy_to(fd, size)
            end = offset + size
        os.ftruncate(fd, m.size)

    def _hardlink(self, m: tarfile.TarInfo, parent: tuple[str, ...], name: str) -> None:
        target = split_name(m.linkname, "hard link target")
        if not target:
            raise UnsafeLayerError(f"layer hard link {m.name!r} points at the layer root; refused")
        try:  # dup: the next open_dir() may close the cached fd
            tdfd = os.dup(self.open_dir(tuple(target[:-1]), create=False))
        except FileNotFoundError:
            raise _not_in_layer(m) from None
        try:
            dfd = self.open_dir(parent, create=True)
            # follow_symlinks=False: a link to a symlink links the symlink itself, never its target
            os.link(target[-1], name, src_dir_fd=tdfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise _not_in_layer(m) from None
        except PermissionError:
            raise UnsafeLayerError(
                f"layer hard link {m.name!r} -> {m.linkname!r} cannot be made (a directory, or a "
                "file the kernel refuses to link); the layer was not applied"
            ) from None
        finally:
            os.close(tdfd)

    def _device(self, m: tarfile.TarInfo, dfd: int, name: str, path: tuple[str, ...]) -> bool:
        """Make a device node; returns True if only a placeholder could be made (rootless)."""
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        try:
            os.mknod(name, kind | (m.mode & 0o777), os.makedev(m.devmajor, m.devminor), dir_fd=dfd)
            return False
        except PermissionError:
            # Rootless: a device cannot be made; leave a visible stand-in rather than nothing.
            os.close(
                os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0, dir_fd=dfd)
            )
            self.report.placeholders.append("/".join(path))
            return True

    def _whiteout(self, parent: tuple[str, ...], target: str, m: tarfile.TarInfo) -> None:
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise UnsafeLayerError(
                f"layer whiteout {m.name!r} names {target!r}, which cannot be deleted; the layer "
                "is hostile or malformed and was not applied"
            )
        dfd = self.open_dir(parent, create=True)
        try:
            st = os.stat(target, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            # The path also exists in this very layer: it already hides the lower one, except
            # that a directory merges with a lower directory unless it is opaque.
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(target, _DIR_FLAGS, dir_fd=dfd)
                try:
                    self._make_opaque(fd)
                finally:
                    os.close(fd)
            return
        try:
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=dfd)
        except PermissionError:
            raise ImageError(
                "this kernel does not let an unprivileged user create overlay whiteouts (0/0 "
                "character devices, allowed since Linux 5.8): upgrade the kernel or run as root"
            ) from None
        self.whiteouts.add((*parent, target))

    def _make_opaque(self, dir_fd: int) -> None:
        done = False
        for name in OPAQUE_XATTRS:
            try:
                os.setxattr(dir_fd, name, b"y")
                done = True
            except PermissionError:
                pass  # trusted.* needs CAP_SYS_ADMIN; the user.* form serves rootless overlay
        if not done:
            raise ImageError(
                "cannot set the overlay opaque attribute on a layer directory: the image store's "
                "filesystem does not support extended attributes; put SANDKIT_HOME on ext4, xfs "
                "or btrfs"
            )

    # --- metadata ----------------------------------------------------------------------------

    def _owner(self, uid: int, gid: int, chown: object, *args: object, **kw: object) -> None:
        if self.id_limits is not None and (uid >= self.id_limits[0] or gid >= self.id_limits[1]):
            # An owner the mapping cannot hold would be refused (EINVAL): root's instead.
            self.report.clamped_owners += 1
            uid = uid if uid < self.id_limits[0] else 0
            gid = gid if gid < self.id_limits[1] else 0
        try:
            chown(*args, uid, gid, **kw)  # type: ignore[operator]
        except PermissionError:
            if (uid, gid) != (0, 0):
                self.report.foreign_owners += 1

    def _xattrs(self, m: tarfile.TarInfo, target: int | str, **kw: object) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr.") :]
            if ".overlay." in attr:  # would let a layer forge whiteouts/redirects: never taken
                self.report.skipped_xattrs.append(attr)
                continue
            try:
                os.setxattr(target, attr, value.encode("utf-8", "surrogateescape"), **kw)  # type: ignore[arg-type]
            except OSError:
                self.report.skipped_xattrs.append(attr)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        self._owner(m.uid, m.gid, os.fchown, fd)
        os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid
        self._xattrs(m, fd)  # after chown too, which clears security.capability
        os.utime(fd, ns=(_mtime_ns(m),) * 2)

    def _directory_meta(
        self, path: tuple[str, ...], m: tarfile.TarInfo, dfd: int, name: str | None
    ) -> None:
        """Set the xattrs of directory ``name`` in ``dfd`` (``dfd`` itself if None) now; keep its
        owner, mode and mtime for the end (a 0555 directory must still be filled, and every entry
        made inside changes the mtime)."""
        if any(key.startswith("SCHILY.xattr.") for key in m.pax_headers):
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd) if name is not None else os.dup(dfd)
            try:
                self._xattrs(m, fd)
            finally:
                os.close(fd)
        self.dirs.set(path, _DirMeta(m.uid, m.gid, m.mode & 0o7777, _mtime_ns(m)))

    def _meta_at(self, dfd: int, name: str, m: tarfile.TarInfo) -> None:
        """Metadata of a symlink, device or fifo (not opened: opening a fifo would block)."""
        self._owner(m.uid, m.gid, os.chown, name, dir_fd=dfd, follow_symlinks=False)
        if not m.issym():
            os.chmod(name, m.mode & 0o7777, dir_fd=dfd)
        # xattrs on special files are rare and path-based calls would follow symlinks; skip.
        os.utime(name, ns=(_mtime_ns(m),) * 2, dir_fd=dfd, follow_symlinks=False)

    def _finish_dirs(self) -> None:
        # deepest first, so setting a parent's mtime is the last change inside it
        for path, meta in self.dirs.deepest_first():
            fd = self.open_dir(path, create=False)
            self._owner(meta.uid, meta.gid, os.fchown, fd)
            os.fchmod(fd, meta.mode)  # after chown, which clears setgid
            os.utime(fd, ns=(meta.mtime_ns,) * 2)
        self._drop_cache()


def apply_tar(
    stream: BinaryIO,
    root: str | os.PathLike[str],
    budget: DiskBudget | None = None,
    *,
    layer: str | None = None,
    id_limits: tuple[int, int] | None = None,
) -> ApplyReport:
    """Apply the uncompressed layer tar read from ``stream`` into the empty directory ``root``,
    charging each entry to ``budget`` (if given) before it is written. ``id_limits`` (uids,
    gids): owners at or past them become root (a user namespace mapping only those ids).

    Raises UnsafeLayerError for hostile content and ImageError for malformed tars, naming
    ``layer`` (its digest) when given; the caller owns ``root`` and deletes it on error.
    """
    try:
        return _apply_tar(stream, root, budget, id_limits)
    except ImageError as e:
        if layer is None:
            raise
        raise type(e)(f"layer {layer}: {e}") from None


def _apply_tar(
    stream: BinaryIO,
    root: str | os.PathLike[str],
    budget: DiskBudget | None,
    id_limits: tuple[int, int] | None,
) -> ApplyReport:
    reader = ForwardReader(stream)
    applier = _Applier(Path(root), reader, budget, id_limits)
    try:
        with LayerTarFile(fileobj=reader, mode="r", errorlevel=2) as tar:  # type: ignore[arg-type]
            return applier.apply(tar)
    except _BAD_TAR as e:
        raise ImageError(
            f"layer is not a valid tar archive ({e}); the archive is truncated or corrupt: "
            "re-export or re-download it"
        ) from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise UnsafeLayerError(
                f"layer entry name too long ({e}); the layer was not applied"
            ) from None
        if e.errno == errno.ENOSPC:
            raise ImageError(
                "no space left in the image store while applying a layer: free space "
                "(sandkit image prune) or move SANDKIT_HOME"
            ) from None
        raise
    finally:
        applier.close()


def iter_tree(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Walk an applied layer without following symlinks (for tests and inspection)."""
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root), os.lstat(full)
