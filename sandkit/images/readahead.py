"""A layer's source, read ahead by a thread of its own while a core would otherwise be idle.

`Store.ingest_layer` reads a layer in one pass and in one thread: the network (or the archive
file), the compressed bytes' hash and the blob's write, then inflate, the tar's hash and the
files' writes. Every one of those steps but some Python glue runs without the GIL. While
several layers are applied at once, each thread keeps a core busy and the bytes stay in that
core's cache, which is the fastest way. But a layer applied alone (an image of one big layer,
the last layer of a pull, every layer of `docker load`) leaves the other cores idle: then a
second thread takes over the first half of the pass and runs ahead of the reader. A 100 MB
one-layer pull takes a quarter less time that way; with three layers at once on two cores it
took longer (the GIL changed hands more often, and each chunk moved to another core's cache).
"""

from __future__ import annotations

import functools
import io
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK = 1 << 20
DEPTH = 4  # chunks read ahead and not yet taken: a layer holds at most DEPTH + 2 MiB
_POLL = 0.05  # seconds between looks at the stop flag while the reading thread waits for room

_active_lock = threading.Lock()
_active = 0  # ReadAheads open in this process: layers being applied


@functools.cache
def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def cores_to_spare() -> bool:
    """Whether the layers being applied now leave a core idle for each of them to read ahead."""
    # (Asked at every full read until it says yes: the CPU count is looked up once.)
    return _active * 2 <= usable_cpus()


class _End:
    """Put in the queue after the last chunk."""


class ReadAhead(io.RawIOBase):
    """``source``'s bytes in order. Reads go straight to ``source`` until ``read_ahead()``
    says yes at a read that follows a full one (a stream read in one go never starts a
    thread); from then on a thread reads CHUNK bytes at a time, up to DEPTH chunks ahead.

    An error of the source's is raised by the read that reaches it, and again by every later
    read. `close` stops the thread and waits for it: after the read it is in, if any.
    """

    def __init__(
        self, source: BinaryIO | io.RawIOBase, *, read_ahead: Callable[[], bool] = cores_to_spare
    ) -> None:
        super().__init__()
        global _active
        self._source = source
        self._read_ahead = read_ahead
        self._filled = False  # whether the last read straight from the source filled its buffer
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[memoryview | BaseException | _End] = queue.Queue(DEPTH)
        # Chunks the reader is done with, for the thread to fill again: fresh 1 MiB buffers
        # cost a zero-fill and 256 page faults each.
        self._spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._chunk = memoryview(b"")
        self._pos = 0
        self._end: BaseException | _End | None = None
        with _active_lock:
            _active += 1

    @property
    def reading_ahead(self) -> bool:
        """True once a thread reads the source ahead of the reader."""
        return self._thread is not None

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        """Fill ``buf`` with the next bytes of the source; returns how many (0 at the end).
        Raises the source's error when the read reaches it."""
        # Only a source that filled the last read has more to read ahead: a short read means
        # a small stream, its end, or a source slower than its reader.
        if self._thread is None and self._filled and self._read_ahead():
            self._thread = threading.Thread(
                target=self._read_all, name="sandkit-readahead", daemon=True
            )
            self._thread.start()
        if self._thread is None:
            n = self._source.readinto(buf) or 0  # type: ignore[union-attr]
            self._filled = n == len(memoryview(buf).cast("B"))
            return n
        return self._take(memoryview(buf).cast("B"))

    def _take(self, view: memoryview) -> int:
        filled = 0
        while filled < len(view):
            if self._pos == len(self._chunk) and not self._next_chunk():
                break
            n = min(len(view) - filled, len(self._chunk) - self._pos)
            view[filled : filled + n] = self._chunk[self._pos : self._pos + n]
            self._pos += n
            filled += n
        return filled

    def _next_chunk(self) -> bool:
        if self._end is None:
            if isinstance(self._chunk.obj, bytearray):  # done with it: the thread may refill it
                self._spare.put(self._chunk.obj)
            item = self._queue.get()
            if isinstance(item, memoryview):
                self._chunk, self._pos = item, 0
                return True
            self._chunk, self._pos = memoryview(b""), 0
            self._end = item
        if isinstance(self._end, BaseException):
            raise self._end
        return False

    def close(self) -> None:
        global _active
        if self.closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _active_lock:
            _active -= 1
        super().close()

    # --- the reading thread ------------------------------------------------------------------

    def _read_all(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    buffer = self._spare.get_nowait()
                except queue.Empty:
                    buffer = bytearray(CHUNK)
                n = self._source.readinto(buffer)  # type: ignore[union-attr]
                if not n:
                    break
                if not self._put(memoryview(buffer)[:n]):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the reader, who raises it in its own thread
            self._put(e)
        else:
            self._put(_End())

    def _put(self, item: memoryview | BaseException | _End) -> bool:
        """Queue ``item`` once there is room; False if the reader closed the stream first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False
