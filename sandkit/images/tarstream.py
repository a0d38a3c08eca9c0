"""A forward-only file object that tarfile can parse a layer from in one pass.

tarfile's own stream mode (``r|``) pulls the archive through 10 KiB records, each a chain of
Python calls (and two or three copies of every byte), which cost more than decompressing and
hashing the layer together. This reader pulls big chunks from its source instead: tarfile reads
only headers through it, and the contents of regular files go from the chunks straight to
their file descriptors with :meth:`ForwardReader.copy_to`.

tarfile is given it as an ordinary (non-stream) file object; all it asks of one is ``read``,
``tell`` and forward ``seek`` (to skip the data of an entry it does not extract, and to the last
padding byte of one that was).

Since only headers go through ``read``, the reader also bounds them: tarfile would otherwise read
a 2 GiB PAX header (or GNU long name, or sparse map) into memory whole. :class:`BoundedTarFile`
refuses any special header over :data:`MAX_SPECIAL_HEADER` before reading it, chains of them
deeper than :data:`MAX_SPECIAL_CHAIN`, and more than :data:`MAX_MEMBER_HEADERS` of header bytes
for one member (the sparse maps tarfile reads block by block), and more than
:data:`MAX_TAR_SPECIAL_HEADERS` in all (tarfile parses them slowly); :class:`LayerTarFile` forgets
each member once it is returned, so that memory stays flat however many members a layer has.
"""

from __future__ import annotations

import os
import tarfile
from typing import Any, BinaryIO

from ..errors import UnsafeLayerError

CHUNK = 1 << 20
FIRST_CHUNK = 64 << 10

# Docker's tar reader (Go's archive/tar) refuses PAX and GNU long-name headers over 1 MiB.
MAX_SPECIAL_HEADER = 1 << 20
# Real tars put at most a global header, a PAX header and GNU long name and link before a member.
MAX_SPECIAL_CHAIN = 8
# Everything read as header for one member: a few special headers and a sparse map at most.
MAX_MEMBER_HEADERS = 4 * MAX_SPECIAL_HEADER
# All special headers of one tar together. tarfile parses them at about 100 MB/s, so without a
# bound a 3 MB layer of PAX headers costs a minute of CPU; real layers need a few bytes per file
# with a long name or xattrs (a 500,000-file layer about 75 MB).
MAX_TAR_SPECIAL_HEADERS = 256 << 20
_SPECIAL_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class HeaderBudget:
    """Counts the header bytes tarfile reads for one member; refuses more than the budget.

    ``None`` means no budget: the bytes read are a member's contents (an archive's file).
    """

    header_budget: int | None = None

    def renew_header_budget(self) -> None:
        """Start counting a new member's header bytes, from the full budget."""
        self.header_budget = MAX_MEMBER_HEADERS

    def end_header_budget(self) -> None:
        """Stop counting: the bytes read from now on are a member's contents."""
        self.header_budget = None

    def _charge(self, n: int) -> None:
        if self.header_budget is None:
            return
        self.header_budget -= n
        if self.header_budget < 0:
            raise UnsafeLayerError(
                f"a tar member's headers (PAX, GNU long names, sparse map) exceed {MAX_MEMBER_HEADERS} "
                "bytes; no image needs that many, so the tar is hostile and was refused"
            )


class ForwardReader(HeaderBudget):
    """A forward-only file object over ``source`` that reads it in chunks of up to ``chunk_size``
    bytes: give it to ``tarfile.open(fileobj=...)`` to parse a layer in one pass. While a header
    budget is set, what tarfile reads counts against it."""

    def __init__(self, source: BinaryIO, chunk_size: int = CHUNK) -> None:
        self._source = source
        self._chunk_size = chunk_size
        # One buffer for every chunk: a fresh one per chunk would be fresh memory for the
        # kernel to fault in and zero each time. Nothing keeps a view of it past the next fill:
        # read() copies what it returns and copy_to() writes before taking the next piece.
        # It starts small and grows once the stream fills it: most layers are small, and
        # faulting in a 1 MiB buffer costs ~0.5 ms, a fifth of applying a small layer.
        self._buffer = memoryview(bytearray(min(chunk_size, FIRST_CHUNK)))
        self._view = self._buffer[:0]  # the current chunk
        self._start = 0  # stream offset of the current chunk's first byte
        self._pos = 0  # read position inside the current chunk

    def tell(self) -> int:
        """How many bytes of the stream have been consumed."""
        return self._start + self._pos

    def _next_chunk(self) -> bool:
        """Replace the current chunk by the next one; False at the end of the stream."""
        self._start += len(self._view)
        if len(self._view) == len(self._buffer) < self._chunk_size:  # a full fill: a big stream
            self._buffer = memoryview(bytearray(self._chunk_size))
        n = self._source.readinto(self._buffer) or 0  # type: ignore[attr-defined]  # BinaryIO omits it
        self._view, self._pos = self._buffer[:n], 0
        return n > 0

    def _take(self, n: int) -> memoryview:
        """Consume up to ``n`` bytes (n > 0) of one chunk; empty only at the end of the stream."""
        if self._pos == len(self._view) and not self._next_chunk():
            return self._view
        piece = self._view[self._pos : self._pos + n]
        self._pos += len(piece)
        return piece

    def read(self, n: int = -1) -> bytes:
        """The next ``n`` bytes (all the rest when ``n`` is negative), fewer only at the end of
        the stream. `UnsafeLayerError` when they take a member's headers over their budget."""
        if n < 0:
            n = 1 << 62
        pieces = []
        while n and (piece := self._take(n)):
            pieces.append(bytes(piece))  # copied now: the next chunk overwrites the buffer
            n -= len(piece)
            if self.header_budget is not None:
                self._charge(len(piece))
        return b"".join(pieces)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move forward (or back inside the current chunk); stops at the end of the stream."""
        if whence != os.SEEK_SET or offset < self._start:
            raise tarfile.StreamError(f"cannot seek back to {offset} in a layer stream")
        while offset > self._start + len(self._view) and self._next_chunk():
            pass
        self._pos = min(offset - self._start, len(self._view))
        return self.tell()

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to ``fd``, from the chunks themselves (no copies)."""
        while size:
            piece = self._take(size)
            if not piece:
                raise tarfile.ReadError("unexpected end of data")
            size -= len(piece)
            while piece:
                piece = piece[os.write(fd, piece) :]


class BudgetedFile(HeaderBudget):
    """A seekable file whose reads count against a header budget while the budget is set."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest when ``n`` is negative) of the file; while a header
        budget is set, `UnsafeLayerError` when they take it over (reading no more than that
        needs)."""
        if self.header_budget is not None and (n < 0 or n > self.header_budget):
            n = self.header_budget + 1  # never more than the refusal needs
        data = self._raw.read(n)
        self._charge(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (``whence`` as in `io`); returns the new position."""
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        """The current position in the file."""
        return self._raw.tell()


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized special headers before tarfile reads them."""

    def _proc_member(self, tar: Any) -> Any:  # tarfile's documented extension point
        if self.type not in _SPECIAL_TYPES:
            return super()._proc_member(tar)  # type: ignore[misc]  # private: not in typeshed
        if self.size > MAX_SPECIAL_HEADER:
            raise UnsafeLayerError(
                f"a tar header of type {self.type.decode()!r} (PAX or GNU long name) at offset {self.offset} "
                f"is {self.size} bytes, over the {MAX_SPECIAL_HEADER}-byte limit (Docker's too); the tar "
                "is hostile or broken and was refused"
            )
        tar.special_bytes += self.size
        if tar.special_bytes > MAX_TAR_SPECIAL_HEADERS:
            raise UnsafeLayerError(
                f"the tar's PAX and GNU long-name headers together exceed {MAX_TAR_SPECIAL_HEADERS} "
                "bytes (real images need a few bytes per file); the tar is hostile and was refused"
            )
        if tar.special_depth >= MAX_SPECIAL_CHAIN:
            raise UnsafeLayerError(
                f"a tar member at offset {self.offset} is preceded by more than {MAX_SPECIAL_CHAIN} "
                "special headers (PAX, GNU long names); the tar is hostile or broken and was refused"
            )
        if self.type == tarfile.XGLTYPE:
            # Docker ignores PAX global headers, and tarfile would apply them to every later
            # member (a global "path" renames them all) and keep them: skip them.
            tar.fileobj.seek(self.offset + tarfile.BLOCKSIZE + self._block(self.size))  # type: ignore[attr-defined]
            return self._nested(tar, self.fromtarfile)
        return self._nested(tar, super()._proc_member)  # type: ignore[misc]

    @staticmethod
    def _nested(tar: Any, parse: Any) -> Any:
        tar.special_depth += 1
        try:
            return parse(tar)
        finally:
            tar.special_depth -= 1


class BoundedTarFile(tarfile.TarFile):
    """A TarFile over a :class:`HeaderBudget` file object that bounds every member's headers."""

    tarinfo = BoundedTarInfo
    special_depth = 0  # special headers being parsed, nested, for the current member
    special_bytes = 0  # the sizes of every special header so far

    def next(self) -> tarfile.TarInfo | None:
        self.fileobj.renew_header_budget()  # type: ignore[attr-defined]  # a HeaderBudget
        try:
            return super().next()
        except (ValueError, OverflowError, IndexError) as e:
            # what tarfile lets out of some malformed numbers and sparse maps
            raise tarfile.ReadError(f"malformed header: {e}") from None
        finally:
            self.fileobj.end_header_budget()  # type: ignore[attr-defined]


class LayerTarFile(BoundedTarFile):
    """Members are returned by :meth:`next` one at a time and not kept (``getmembers()`` and
    iteration are not for this class): a layer's headers are not held until its apply ends."""

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()  # type: ignore[attr-defined]  # private: not in typeshed
        return member
