"""How much one pull or load may still write to the image store.

A 10 MB gzip layer of zeros unpacks to 10 GiB and a 182-byte blob can hold a 12 GiB sparse
file, with honest digests: neither the download's size nor a one-off free-space check bounds
what a layer writes. So every byte and inode is charged before it is written (each tar entry
before it is created, each piece of a blob before it is stored) against one budget that all
layers of the pull or load share, whether applied one after another or three at once:

* ``max_image_size``: what one image may take in the store, blobs and unpacked layers
  together. Default 32 GiB (the largest common images, CUDA ones, take about 20);
  ``SANDKIT_MAX_IMAGE_SIZE``; 0 turns it off.
* ``max_store_size``: what the whole store may take. Default: no limit beyond the disk's;
  ``SANDKIT_MAX_STORE_SIZE``.
* ``min_free``: what must stay free on the store's filesystem, beyond the blocks it reserves
  for root (only ``f_bavail`` is counted as free). Default: 5% of the filesystem, at most
  1 GiB; ``SANDKIT_MIN_FREE``. Inodes keep 5% (at most 100,000) free likewise.

Free space is read when the budget starts (what this pull may use in all) and again before
every large write, so that other writers on the same filesystem are seen too.
"""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path

import attrs

from ..errors import ImageError
from .digest import ByteSink

MAX_LAYERS = 125  # Docker refuses images of more layers (its layer store's maxLayerDepth)
DEFAULT_MAX_IMAGE_SIZE = 32 << 30
MAX_MIN_FREE = 1 << 30
MIN_FREE_FRACTION = 0.05
MAX_MIN_FREE_INODES = 100_000
BLOCK = 4096  # a file's data takes whole blocks
INLINE_SYMLINK = 59  # the longest symlink target ext4 keeps in the inode itself
ENTRY_COST = 256  # a directory entry and what else a new name costs, beyond its data blocks
_RECHECK_BYTES = 1 << 20  # a write this big, or this much since the last look, looks at the
# filesystem's free space again

ENV_MAX_IMAGE_SIZE = "SANDKIT_MAX_IMAGE_SIZE"
ENV_MAX_STORE_SIZE = "SANDKIT_MAX_STORE_SIZE"
ENV_MIN_FREE = "SANDKIT_MIN_FREE"


def _size(value: int | str | None, env: str) -> int | None:
    """A size from the keyword, else from ``env``; None when neither is set."""
    if value is None:
        value = os.environ.get(env) or None
    if value is None:
        return None
    from ..errors import LimitsError
    from ..sizes import parse_size

    try:
        return parse_size(value)
    except LimitsError as e:
        raise ImageError(f"image store limit {env} / keyword: {e}") from None


def _beyond_inode(m: tarfile.TarInfo) -> int:
    """The blocks an entry takes besides its data: a symlink target too long to sit in the inode
    (ext4 keeps up to 59 bytes there), and xattrs (each filesystem keeps only a little in the
    inode; ext4 gives the rest one block, xfs and btrfs more), charged as whole blocks."""
    extra = BLOCK if m.issym() and len(m.linkname) > INLINE_SYMLINK else 0
    xattrs = sum(
        len(k) + len(v.encode("utf-8", "surrogateescape"))
        for k, v in m.pax_headers.items()
        if k.startswith("SCHILY.xattr.")
    )
    return extra + -(-xattrs // BLOCK) * BLOCK


@attrs.frozen
class StoreLimits:
    """How much one pull or load may write to a store, how large the whole store may grow, and
    how much free space it leaves on its filesystem (None: no limit, or for ``min_free`` the
    default share). Made with `resolve`."""

    max_image_size: int | None = DEFAULT_MAX_IMAGE_SIZE  # None: no limit
    max_store_size: int | None = None
    min_free: int | None = None  # None: the default share of the filesystem

    @classmethod
    def resolve(
        cls,
        max_image_size: int | str | None = None,
        max_store_size: int | str | None = None,
        min_free: int | str | None = None,
    ) -> StoreLimits:
        """Keywords first, then the environment, then the defaults; 0 means no limit."""
        image = _size(max_image_size, ENV_MAX_IMAGE_SIZE)
        store = _size(max_store_size, ENV_MAX_STORE_SIZE)
        return cls(
            DEFAULT_MAX_IMAGE_SIZE if image is None else image or None,
            store or None,
            _size(min_free, ENV_MIN_FREE),
        )


def check_layer_count(count: int, where: str) -> None:
    """Refuse (`ImageError`) an image of more than 125 layers, as Docker does; ``where`` names
    the image in the message."""
    if count > MAX_LAYERS:
        raise ImageError(
            f"{where} has {count} layers; like Docker, sandkit takes at most {MAX_LAYERS}: "
            "squash the image (fewer RUN/COPY steps) or rebuild it"
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


class DiskBudget:
    """What one pull or load may still write; shared by its layers (thread-safe)."""

    def __init__(self, home: Path, limits: StoreLimits, store_used: int = 0) -> None:
        self.home, self.limits, self.store_used = home, limits, store_used
        self.bytes = self.inodes = self._unchecked = 0
        self._lock = threading.Lock()
        fs = os.statvfs(home)
        self.min_free = self._min_free(fs)
        self.min_free_inodes = min(int(fs.f_files * MIN_FREE_FRACTION), MAX_MIN_FREE_INODES)
        self.space = fs.f_bavail * fs.f_frsize - self.min_free
        self.inode_space = fs.f_favail - self.min_free_inodes if fs.f_files else None  # btrfs: none

    def _min_free(self, fs: os.statvfs_result) -> int:
        if self.limits.min_free is not None:
            return self.limits.min_free
        return min(int(fs.f_blocks * fs.f_frsize * MIN_FREE_FRACTION), MAX_MIN_FREE)

    def after_fork(self) -> None:
        """In a forked child: a lock of its own (another thread may have held the parent's)."""
        self._lock = threading.Lock()

    def charge_entry(self, m: tarfile.TarInfo) -> None:
        """Charge what one tar entry is about to take (a hard link takes no inode)."""
        data = -(-m.size // BLOCK) * BLOCK if m.isreg() else BLOCK if m.isdir() else 0
        self.charge(
            ENTRY_COST + data + _beyond_inode(m),
            0 if m.islnk() else 1,
            f"layer entry {m.name[:80]!r}",
        )

    def charge(self, nbytes: int, inodes: int, what: str) -> None:
        """Charge ``nbytes``/``inodes`` about to be written; ImageError if any limit is passed."""
        with self._lock:
            self.bytes += nbytes
            self.inodes += inodes
            self._check_limits(what)
            self._check_disk(nbytes, what)

    def _check_limits(self, what: str) -> None:
        image_limit, store_limit = self.limits.max_image_size, self.limits.max_store_size
        if image_limit is not None and self.bytes > image_limit:
            raise ImageError(
                f"{what}: the image takes more than {_gib(image_limit)} in the store unpacked, "
                f"the limit for one image; a small download that unpacks this big is a bomb. If "
                f"the image is genuine, raise the limit ({ENV_MAX_IMAGE_SIZE}, or "
                "Store(max_image_size=...)); 0 turns it off"
            )
        if store_limit is not None and self.store_used + self.bytes > store_limit:
            raise ImageError(
                f"{what}: the image store would grow past its limit of {_gib(store_limit)} "
                f"({_gib(self.store_used)} used): remove images (sandkit image prune) or raise "
                f"{ENV_MAX_STORE_SIZE} (or Store(max_store_size=...))"
            )

    def _check_disk(self, nbytes: int, what: str) -> None:
        free_now = None
        self._unchecked += nbytes
        if self._unchecked >= _RECHECK_BYTES:  # others may have written since the start
            fs = os.statvfs(self.home)
            free_now = fs.f_bavail * fs.f_frsize - self.min_free
            self._unchecked = 0
        if self.bytes > self.space or (free_now is not None and nbytes > free_now):
            raise ImageError(
                f"{what}: not enough space in the image store's filesystem ({self.home}) to "
                f"unpack the image while keeping {_gib(self.min_free)} free ({ENV_MIN_FREE}): "
                "free space (sandkit image prune) or move SANDKIT_HOME to a larger filesystem"
            )
        if self.inode_space is not None and self.inodes > self.inode_space:
            raise ImageError(
                f"{what}: the image has more files than the store's filesystem ({self.home}) "
                f"has inodes to spare (keeping {self.min_free_inodes} free): free some or move "
                "SANDKIT_HOME"
            )


class ChargedWriter:
    """A file being written whose every write is charged to a budget first."""

    def __init__(self, out: ByteSink, budget: DiskBudget, what: str) -> None:
        self._out, self._budget, self._what = out, budget, what

    def write(self, data: bytes | memoryview) -> int:
        """Charge ``data`` to the budget (`ImageError` when it is over a limit, before anything
        is written), then write it; returns the bytes written."""
        self._budget.charge(len(data), 0, self._what)
        return self._out.write(data)
