"""A forward-only file object that tarfile can parse a layer from in one pass.

tarfile's own stream mode (``r|``) pulls the archive through 10 KiB records, each a chain of
Python calls (and two or three copies of every byte), which cost more than decompressing and
hashing the layer together. This reader pulls big chunks from its source instead: tarfile reads
only headers through it, and the contents of regular files go from the chunks straight to
their file descriptors with :meth:`ForwardReader.copy_to`.

tarfile is given it as an ordinary (non-stream) file object; all it asks of one is ``read``,
``tell`` and forward ``seek`` (to skip the data of an entry it does not extract, and to the last
padding byte of one that was).
"""

from __future__ import annotations

import os
import tarfile
from typing import BinaryIO

CHUNK = 1 << 20
FIRST_CHUNK = 64 << 10


class ForwardReader:
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
        return self._start + self._pos

    def _next_chunk(self) -> bool:
        """Replace the current chunk by the next one; False at the end of the stream."""
        self._start += len(self._view)
        if len(self._view) == len(self._buffer) < self._chunk_size:  # a full fill: a big stream
            self._buffer = memoryview(bytearray(self._chunk_size))
        n = self._source.readinto(self._buffer) or 0
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
        if n < 0:
            n = 1 << 62
        pieces = []
        while n and (piece := self._take(n)):
            pieces.append(bytes(piece))  # copied now: the next chunk overwrites the buffer
            n -= len(piece)
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
