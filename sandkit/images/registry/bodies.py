"""Reading registry responses against limits of size and of progress (issue 15).

A registry is not trusted to end what it sends. Every body other than a layer's is read
against a limit before it is kept: the size its descriptor gives (a config, a manifest named by
an index), else a cap: MAX_DOCUMENT for a manifest or config, MAX_TOKEN for a token response (as
skopeo); of an error body or the /v2/ ping answer only the start, MAX_SMALL, is read. A Content-Length
over the limit is refused before a byte of the body is read.

Every request and every layer download must also keep moving: at least ``min_bytes`` (or what
is left of a body of known size) in every ``period`` seconds, counted over all of its retries.
A registry that trickles a byte every few seconds, or promises more than it sends, fails the
pull after about a period (two at most: a read waits up to one period for data) instead of
holding it for minutes; `PROGRESS` is the default, `RegistryClient(progress=...)` changes it.
The response headers count too: they must all be in one period after the request was sent
(`headers_in_time`; transport.py for layer downloads), or a registry that trickles them a byte
at a time would hold a pull before its body, and so the rule, ever began.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import attrs
import httpx

from ...errors import RegistryError

# skopeo's caps (containers/image iolimits): manifests and configs 4 MiB, token responses 1 MiB.
MAX_DOCUMENT = 4 << 20  # a manifest or index without a descriptor, and any config
MAX_TOKEN = 1 << 20
MAX_SMALL = 64 << 10  # error bodies and the ping: only their start is ever shown (skopeo: 1 MiB)


@attrs.frozen
class ProgressRule:
    """At least ``min_bytes`` (or the rest of a body of known size) every ``period`` seconds."""

    period: float = 30.0
    min_bytes: int = 32 << 10  # ~1 KiB/s: curl's --speed-limit idea, kind to slow links

    def __attrs_post_init__(self) -> None:
        if self.period <= 0 or self.min_bytes <= 0:
            raise ValueError("a progress rule needs a positive period and byte count")


PROGRESS = ProgressRule()  # module default; tests shorten it


class StalledError(RegistryError):
    """A request or download made too little progress: retrying would only wait again."""


class ProgressWatch:
    """Enforces a `ProgressRule` on one request or blob, across all of its attempts: told of
    every piece that arrives (`advance`) and asked after each failed attempt (`check`). Only
    time spent waiting for the registry counts: a reader busy elsewhere `pause`s the watch."""

    def __init__(self, rule: ProgressRule, what: str, size: int | None = None) -> None:
        self.rule = rule
        self.what = what
        self.size = size  # of the whole body or blob, when a descriptor gives it
        self.received = 0
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self._paused_at: float | None = None

    def pause(self) -> None:
        """Stop the clock while the reader is busy elsewhere (its wait is not the registry's)."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        """Start the clock again after `pause`: the paused time does not count."""
        if self._paused_at is not None:
            self._window_start += time.monotonic() - self._paused_at
            self._paused_at = None

    def advance(self, n: int) -> None:
        """Count ``n`` more bytes received; `StalledError` when the current period is over
        without enough of them."""
        self.received += n
        self._window_bytes += n
        if self._window_bytes >= self._needed():
            self._window_start, self._window_bytes = time.monotonic(), 0
        else:
            self.check()

    def check(self, last_error: object = None) -> None:
        """Raise StalledError if the current period is over without enough bytes."""
        if time.monotonic() - self._window_start > self.rule.period:
            raise self._stalled(last_error)

    def headers_late(self) -> StalledError:
        """The error for a request whose response headers were not all in a period after it was
        sent: no byte of a body, so too little progress, in that period."""
        return self._stalled(
            f"the response headers were not all in {self.rule.period:g} s after the request"
        )

    def _stalled(self, last_error: object) -> StalledError:
        after = f" (last error: {last_error})" if last_error else ""
        return StalledError(
            f"{self.what} made too little progress: {self._window_bytes} bytes in the last "
            f"{self.rule.period:g} s (at least {self._needed()} expected, {self.received} received in all){after}; "
            "the registry or the network is stalled: try again later, or on a slow link raise "
            "sandkit.images.registry.bodies.PROGRESS"
        )

    def _needed(self) -> int:
        if self.size is None:
            return self.rule.min_bytes
        return max(1, min(self.rule.min_bytes, self.size - (self.received - self._window_bytes)))


@contextlib.contextmanager
def headers_in_time(watch: ProgressWatch) -> Iterator[None]:
    """For a request sent in the block (async client, ``send(..., stream=True)``): its response
    headers, redirects included, are all in one period of ``watch``'s rule after it was sent,
    else the rule's StalledError. A read waits at most a period, but headers trickled a byte at
    a time never let one wait that long."""
    with anyio.move_on_after(watch.rule.period) as deadline:
        yield
    if deadline.cancelled_caught:
        raise watch.headers_late()


@attrs.frozen
class Limit:
    """How much of a body to read. ``exact``: a descriptor gives its size, so stop there (never
    wait for a promised end that may not come); ``truncate``: keep the start of an error body
    instead of refusing a long one."""

    size: int
    what: str
    exact: bool = False
    truncate: bool = False


def error_limit(what: str) -> Limit:
    """The `Limit` for an error body (``what`` names it in messages): only its first MAX_SMALL
    bytes are read and kept."""
    return Limit(MAX_SMALL, what, truncate=True)


class _Collector:
    """The body read so far, checked against its limit piece by piece."""

    def __init__(self, resp: httpx.Response, limit: Limit, watch: ProgressWatch | None) -> None:
        self.limit = limit
        self.watch = watch
        self.data = bytearray()
        declared = _content_length(resp)
        if declared is not None and declared > limit.size and not limit.truncate:
            raise _too_long(limit, f"announces {declared} bytes (Content-Length), more")
        # A body of known size that has it all is done. One that announced its length ends by
        # itself and keeps its connection for reuse; one that did not may never end.
        self.stop_at_size = limit.truncate or (limit.exact and declared is None)

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False once the body needs no more reading."""
        if self.watch is not None:
            self.watch.advance(len(chunk))
        self.data += chunk
        if len(self.data) > self.limit.size:
            if not self.limit.truncate:
                raise _too_long(self.limit, "is longer")
            del self.data[self.limit.size :]
            return False
        return len(self.data) < self.limit.size or not self.stop_at_size

    def response(self, resp: httpx.Response) -> httpx.Response:
        """A copy of ``resp`` that holds the body read. The raw bytes are kept: a body is never
        decoded (sandkit asks for identity encoding; a decoded gzip body could be 1000 times
        larger), so the Content-Encoding header goes."""
        headers = [
            (k, v)
            for k, v in resp.headers.multi_items()
            if k.lower() not in ("content-encoding", "transfer-encoding")
        ]
        return httpx.Response(
            resp.status_code,
            headers=headers,
            content=bytes(self.data),
            request=resp.request,
            extensions=resp.extensions,
        )


def _content_length(resp: httpx.Response) -> int | None:
    try:
        value = int(resp.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _too_long(limit: Limit, how: str) -> RegistryError:
    return RegistryError(
        f"{limit.what} {how} than the {limit.size} bytes {'its descriptor gives' if limit.exact else 'allowed'}: "
        "refusing it (a broken or hostile registry)"
    )


async def read_async(
    resp: httpx.Response, limit: Limit, watch: ProgressWatch | None = None
) -> httpx.Response:
    """Read the streamed ``resp`` against ``limit`` and close it; the copy that holds the body."""
    try:
        collector = _Collector(resp, limit, watch)
        chunks: AsyncIterator[bytes] = resp.aiter_raw()
        async for chunk in chunks:
            if not collector.add(chunk):
                break
        return collector.response(resp)
    finally:
        await resp.aclose()


def read_sync(
    resp: httpx.Response, limit: Limit, watch: ProgressWatch | None = None
) -> httpx.Response:
    """`read_async` for the sync client of layer downloads."""
    try:
        collector = _Collector(resp, limit, watch)
        chunks: Iterator[bytes] = resp.iter_raw()
        for chunk in chunks:
            if not collector.add(chunk):
                break
        return collector.response(resp)
    finally:
        resp.close()


class _Unread(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A redirect's body, left unread. httpx reads the body of each redirect whole before it
    follows it, outside any limit of ours, and nothing ever uses it: an endless one would fill
    the host's memory. Closing the response closes the connection under it."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    async def __aiter__(self) -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk

    def close(self) -> None:
        if isinstance(self._stream, httpx.SyncByteStream):
            self._stream.close()

    async def aclose(self) -> None:
        if isinstance(self._stream, httpx.AsyncByteStream):
            await self._stream.aclose()


def skip_redirect_body(resp: httpx.Response) -> None:
    """An httpx response hook (sync client): a redirect's body is not read (see `_Unread`)."""
    if resp.has_redirect_location:
        resp.stream = _Unread(resp.stream)


async def skip_redirect_body_async(resp: httpx.Response) -> None:
    """`skip_redirect_body` for the async client, whose hooks are awaited."""
    skip_redirect_body(resp)
