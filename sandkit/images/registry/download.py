"""A layer blob's download as a blocking file object, read by the thread that applies the layer
(or by its read-ahead thread, see readahead.py: any thread may read it).

The reading thread fetches the bytes itself, with httpx's sync client. Handing each 64 KiB network
read from an async task to the thread cost a loop round trip and kept the loop's thread busy
under the GIL: a pull of a 106 MB image took a quarter longer that way. The loop keeps what has
to stay on it: tokens (a 401 asks it for a new one), progress callbacks, and cancellation, which
shuts the socket down so that a read waiting on a stalled registry ends at once.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx

from ...errors import DigestMismatchError, RegistryError
from .bodies import ProgressWatch, error_limit, read_sync
from .client import RegistryClient, TransientError, error_messages
from .errors import SecondaryError
from .events import Progress, ProgressCallback

# "downloading" events: the first after this many bytes, then at most one per interval. (Each is
# a trip to the loop's thread; on a fast link, one per 512 KiB cost 5% of a pull.)
REPORT_BYTES = 512 << 10
REPORT_INTERVAL = 0.1  # seconds; progress bars redraw at about this rate


class DownloadCancelled(SecondaryError):
    """Raised in the apply thread when the pull was cancelled: the cancellation is the news."""


class BlobDownload(io.RawIOBase):
    """The bytes of one blob, in order, fetched as they are read. A broken download resumes with
    ``Range`` from the first byte not yet read (or skips what was read when the registry ignores
    Range); attempts that bring no new byte are retried with backoff, up to the client's limit,
    and the whole download, over all attempts, obeys the client's progress rule (bodies.py)."""

    def __init__(
        self,
        client: RegistryClient,
        url: str,
        *,
        scopes: frozenset[str],
        digest: str,
        size: int,
        where: str,
        report: ProgressCallback,
    ) -> None:
        super().__init__()
        self._client = client
        self._url = url
        self._scopes = scopes
        self._digest = digest
        self._size = size
        self._where = where
        self._report = report
        self._loop = anyio.lowlevel.current_token()  # reads may come from any thread
        self._received = self._reported = 0
        self._next_report = 0.0  # monotonic time before which no "downloading" event is sent
        self._failures = 0  # attempts in a row that brought nothing
        self._attempt_start = 0  # bytes received when the current attempt began
        self._skip = 0  # bytes of the current response that were already received
        self._chunk, self._pos = b"", 0
        self._failure: BaseException | None = None  # a download that failed stays failed
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] = iter(())
        self._lock = threading.Lock()  # guards _response against interrupt() from the loop
        self._stop = threading.Event()
        self._watch = ProgressWatch(
            client.progress, f"the download of layer {digest} of {where}", size
        )
        self._watch.pause()  # runs only while a read waits for the registry (see _next_chunk)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        """Fill ``buf`` with the blob's next bytes, fetching, resuming or retrying as needed;
        returns how many (0 at the end). After a failure every later read raises the same error."""
        # A reader may read again after an error (the store drains its source to name the blob's
        # digest): that must neither resume nor retry, only repeat the error.
        if self._failure is not None:
            raise self._failure
        try:
            return self._fill(memoryview(buf).cast("B"))
        except BaseException as e:
            self._failure = e
            raise

    def _fill(self, view: memoryview) -> int:
        # Fill the whole buffer unless the blob ends first. Every reader above hashes, writes or
        # inflates once per call, and each of those drops and retakes the GIL: a few big calls
        # cost much less than one per 64 KiB network read (3 layers' threads share the GIL).
        filled = 0
        while filled < len(view):
            if self._pos == len(self._chunk):
                self._chunk, self._pos = self._next_chunk(), 0
                if not self._chunk:
                    break
            # Straight from the network's piece into the reader's buffer: the only copy here.
            n = min(len(view) - filled, len(self._chunk) - self._pos)
            view[filled : filled + n] = memoryview(self._chunk)[self._pos : self._pos + n]
            self._pos += n
            filled += n
        return filled

    def interrupt(self) -> None:
        """Called from the loop when the pull is cancelled: end the download now, even a read
        that is waiting for data. (A request still waiting for its response headers ends at its
        header deadline, a progress period after it was sent: see transport.py.)"""
        self._stop.set()
        with self._lock:
            stream = (
                self._response.extensions.get("network_stream")
                if self._response is not None
                else None
            )
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                # The plain socket's shutdown, also under TLS: the reading thread owns the
                # SSL object. The kernel wakes the blocked read with end-of-file.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self._close_response()
        super().close()

    # --- the network side --------------------------------------------------------------------

    def _next_chunk(self) -> bytes:
        """The next bytes of the blob, never empty; b"" once it all arrived and the body ended."""
        # The progress rule is the registry's: time the reader spends elsewhere (applying what
        # it read, waiting for another process's lock on the layer) is not the registry's.
        self._watch.resume()
        try:
            return self._next_chunk_from_registry()
        finally:
            self._watch.pause()

    def _next_chunk_from_registry(self) -> bytes:
        while True:
            self._raise_if_stopped()
            try:
                if self._received == self._size:
                    self._finish_response()
                    return b""
                if self._response is None:
                    self._open()
                    continue  # (re-check the stop flag: the open may have waited a long time)
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._close_response()
                    if self._received < self._size:
                        raise TransientError(
                            f"the body of {self._digest} ended after {self._received} of {self._size} bytes"
                        )
                elif chunk := self._accept(chunk):
                    return chunk
            except (TransientError, httpx.TransportError) as e:
                self._close_response()
                self._raise_if_stopped()  # the break was interrupt(): no retry to announce
                self._wait_before_retry(e)

    def _raise_if_stopped(self) -> None:
        if self._stop.is_set():
            self._close_response()
            raise DownloadCancelled(f"the pull of {self._where} was cancelled")

    def _open(self) -> None:
        start = self._attempt_start = self._received
        headers = {"Range": f"bytes={start}-"} if start else {}
        resp = self._client.open_in_thread(
            self._url,
            scopes=self._scopes,
            headers=headers,
            loop=self._loop,
            watch=self._watch,
        )
        with self._lock:
            self._response, self._chunks = (
                resp,
                resp.iter_raw(),
            )  # raw: httpx must not decode a blob
        try:
            self._skip = self._already_received(resp, start)
            self._refuse_if_announced_longer(resp)
        except RegistryError:
            self._close_response()
            raise

    def _already_received(self, resp: httpx.Response, start: int) -> int:
        """How many leading bytes of ``resp`` to drop: it was asked to start at ``start``."""
        if resp.status_code == 206 and start:
            got = resp.headers.get("content-range", "")
            if not got.startswith(f"bytes {start}-"):
                raise RegistryError(
                    f"registry answered a resume of {self._digest} from byte {start} with range {got!r}"
                )
            return 0
        if resp.status_code == 200:
            return start  # the registry ignored Range
        if resp.status_code == 404:
            raise RegistryError(
                f"layer {self._digest} of {self._where} is missing on registry {self._client.registry} "
                "(blob unknown)"
            )
        resp = read_sync(
            resp, error_limit(f"the answer to GET {resp.url.path}"), self._watch
        )  # for error_messages
        raise RegistryError(
            f"downloading layer {self._digest} of {self._where} failed: "
            f"HTTP {resp.status_code} ({error_messages(resp)})"
        )

    def _refuse_if_announced_longer(self, resp: httpx.Response) -> None:
        """A body whose Content-Length goes past the blob's size is refused before it is read."""
        try:
            announced = int(resp.headers.get("content-length", ""))
        except ValueError:
            return
        if announced > self._skip + self._size - self._received:
            raise self._too_long()

    def _too_long(self) -> DigestMismatchError:
        return DigestMismatchError(
            f"layer {self._digest} of {self._where} is longer than the {self._size} bytes its descriptor says: "
            "the registry sent the wrong content"
        )

    def _accept(self, chunk: bytes) -> bytes:
        self._watch.advance(len(chunk))  # every byte on the wire, skipped ones too: it is progress
        if self._skip:
            chunk, self._skip = chunk[self._skip :], max(0, self._skip - len(chunk))
        if self._received + len(chunk) > self._size:
            raise self._too_long()
        self._received += len(chunk)
        if (
            self._received - self._reported >= REPORT_BYTES
            and (now := time.monotonic()) >= self._next_report
        ):
            self._reported, self._next_report = self._received, now + REPORT_INTERVAL
            anyio.from_thread.run_sync(
                self._report,
                Progress("downloading", self._digest, self._received, self._size),
                token=self._loop,
            )
        return chunk

    def _wait_before_retry(self, e: Exception) -> None:
        # Only attempts that brought nothing count: a slow, flaky link still finishes, while the
        # progress rule bounds the time without enough progress, whatever the attempts brought.
        self._watch.check(e)
        self._failures = 0 if self._received > self._attempt_start else self._failures + 1
        retry = self._client.retry
        if self._failures >= retry.attempts:
            raise RegistryError(
                f"downloading layer {self._digest} of {self._where} from {self._client.registry} failed "
                f"{self._failures} times in a row ({e}): check that the registry is up, then pull again"
            ) from None
        anyio.from_thread.run_sync(
            self._report,
            Progress("retrying", self._digest, self._received, self._size, detail=str(e)),
            token=self._loop,
        )
        self._stop.wait(retry.delay(self._failures))

    def _finish_response(self) -> None:
        """Done with the blob: a body that announced its length (never longer than the blob,
        see `_refuse_if_announced_longer`) is at its end, and its connection goes back for
        reuse; one that did not is closed rather than waited on, since it may never end."""
        if self._response is not None and "content-length" in self._response.headers:
            with contextlib.suppress(httpx.TransportError):
                next(self._chunks, None)  # (the end: known to h11 without another read)
        self._close_response()

    def _close_response(self) -> None:
        with self._lock:
            resp, self._response, self._chunks = self._response, None, iter(())
        if resp is not None:
            resp.close()
