"""Content digests: parsing, hashing while streaming, and verification.

Only sha256 is accepted: it is what every registry and `docker save` writes, and accepting an
algorithm we do not check would let unverified content into the store.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from typing import BinaryIO, Protocol

from ..errors import DigestMismatchError, ImageError

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20
_DRAIN_CHUNK = 64 << 10


def check_digest(value: object, what: str = "digest") -> str:
    """Return ``value`` if it is a well-formed ``sha256:<64 hex>`` digest, else raise ImageError.

    Digests become file names in the store, so a malformed one is a path-injection risk, not just
    a cosmetic problem.
    """
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ImageError(
            f"invalid {what} {value!r}: expected 'sha256:' followed by 64 lowercase hex digits "
            "(the archive or manifest is corrupt, or uses an unsupported hash algorithm)"
        )
    return value


def hex_of(digest: str) -> str:
    """The 64 hex digits of a ``sha256:`` digest (a file name in the store); `ImageError` when
    ``digest`` is malformed."""
    return check_digest(digest)[len("sha256:") :]


def sha256_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_bytes(data: bytes, expected: str, what: str, size: int | None = None) -> bytes:
    """Check ``data`` against a descriptor's digest (and size, when the descriptor gives one)."""
    if size is not None and len(data) != size:
        raise DigestMismatchError(
            f"{what} is {len(data)} bytes but its descriptor says {size}: the archive is corrupt "
            "or was modified after it was written; re-export or re-download it"
        )
    actual = sha256_bytes(data)
    if actual != expected:
        raise mismatch(what, expected, actual)
    return data


def mismatch(what: str, expected: str, actual: str) -> DigestMismatchError:
    """The `DigestMismatchError` for content ``what`` that hashed to ``actual`` instead of
    ``expected``, with the fix."""
    return DigestMismatchError(
        f"{what} has digest {actual} but {expected} was expected: the content is corrupt or was "
        "tampered with; re-export or re-download it"
    )


# What a blob or layer is read from: a file, or a raw stream (a download, a decompressor).
ByteSource = BinaryIO | io.RawIOBase


def drain(stream: ByteSource) -> None:
    """Read ``stream`` to its end, dropping the bytes."""
    # What a consumer leaves is usually a few KiB of padding or a gzip trailer: a small
    # buffer (a 1 MiB one cost ~0.4 ms to fault in, twice per layer).
    buf = bytearray(_DRAIN_CHUNK)
    while stream.readinto(buf):  # type: ignore[union-attr]
        pass


class ByteSink(Protocol):
    """Where bytes are copied to: a file open for writing, or a ChargedWriter in front of one."""

    def write(self, data: bytes | memoryview, /) -> int:
        """Write all of ``data``; returns how many bytes that was."""


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts every byte read through it, and optionally
    copies them to ``sink`` (a blob being written while a layer is applied from it)."""

    def __init__(self, raw: ByteSource, sink: ByteSink | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._sink = sink
        self._hash = hashlib.sha256()
        self.count = 0

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buf`` from the source, hashing, counting and copying to the sink what was
        read; returns the byte count (0 at the end)."""
        # The source fills the caller's buffer itself: a layer passes through several of these
        # readers, and a copy at each of them cost as much as hashing.
        n = self._raw.readinto(buf) or 0  # type: ignore[union-attr]  # typing.BinaryIO omits readinto
        if n:
            data = memoryview(buf)[:n]
            self._hash.update(data)
            if self._sink is not None:
                self._sink.write(data)
            self.count += n
        return n

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end so the digest covers the whole stream (tar padding included)."""
        drain(self)

    @property
    def digest(self) -> str:
        """The ``sha256:`` digest of every byte read so far."""
        return "sha256:" + self._hash.hexdigest()


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """OCI ChainID of each layer prefix: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_bytes(f"{out[-1]} {diff_id}".encode()))
    return out
