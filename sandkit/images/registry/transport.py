"""The httpx transport of layer downloads: httpcore's connection pool over sockets read in big pieces.

httpcore reads a connection 64 KiB at a time, and over TLS one record (16 KiB) at a time. Each
read then climbs through h11, httpcore and httpx as one more body chunk, and that climb, not
the bytes, was a third of the CPU a 100 MB pull spent on its network side. A layer download
asks for a whole body anyway: these streams return up to READ_SIZE bytes per read, taking every
TLS record that has already arrived, so a body arrives in a few dozen pieces instead of
thousands.

Only the sync client of pulls uses this transport; everything else stays on httpx's own.

Its connections also keep the header deadline of the request being sent (`headers_by`): a
read waits at most a progress period, but headers trickled a byte at a time never let one
wait, so until the headers are in, every connect, TLS handshake, write and read ends by the
deadline instead.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

READ_SIZE = 1 << 20  # per read: httpcore's 64 KiB made every 64 KiB climb through the stack

# httpcore's errors as httpx's, most specific first (httpx's own transport does the same).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        for core, ours in _ERRORS:
            if isinstance(e, core):
                raise ours(str(e)) from e
        raise


# The time.monotonic() by which the response headers of the request that this thread is
# sending must be in (None: no request is being sent). The sync pool sends and reads the headers
# in the sending thread, so the context of that thread is the request's.
_headers_deadline: ContextVar[float | None] = ContextVar("headers_deadline", default=None)


class HeadersTooSlow(Exception):
    """The response headers were not all in by the deadline of `headers_by`."""


@contextlib.contextmanager
def headers_by(deadline: float) -> Iterator[None]:
    """The requests this thread sends in the block (redirects too) have their response headers
    by ``deadline`` (time.monotonic()), else HeadersTooSlow. Bodies read after it are not bound."""
    token = _headers_deadline.set(deadline)
    try:
        yield
    finally:
        _headers_deadline.reset(token)


@contextlib.contextmanager
def _until_deadline(timeout: float | None) -> Iterator[float | None]:
    """``timeout`` for one network operation, cut to what is left before the header deadline;
    the operation's timeout becomes HeadersTooSlow when it was the deadline's."""
    deadline = _headers_deadline.get()
    if deadline is None:
        yield timeout
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise HeadersTooSlow()
    try:
        yield left if timeout is None else min(timeout, left)
    except httpcore.TimeoutException:
        if timeout is None or left < timeout:
            raise HeadersTooSlow() from None
        raise


class LargeReadStream(httpcore.NetworkStream):
    """A connection whose reads return up to READ_SIZE bytes, whatever httpcore asks for."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        sock = stream.get_extra_info("socket")
        self._tls = sock if isinstance(sock, ssl.SSLSocket) else None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to READ_SIZE bytes, whatever ``max_bytes`` httpcore asks for; over TLS, with every
        record already received (b"" at end of stream)."""
        # (h11 takes whatever it is given: a read larger than asked for is just more body.)
        with _until_deadline(timeout) as timeout:
            data = self._stream.read(max(max_bytes, READ_SIZE), timeout)
        if data and self._tls is not None:
            data = _records_already_here(self._tls, data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send all of ``buffer`` on the connection."""
        with _until_deadline(timeout) as timeout:
            self._stream.write(buffer, timeout)

    def close(self) -> None:
        """Close the connection."""
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """The same connection upgraded to TLS, still read in large pieces."""
        # (The ssl module's handshake timeout bounds the whole handshake, not each of its reads.)
        with _until_deadline(timeout) as timeout:
            return LargeReadStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        """What httpcore asks of the connection (its socket, ssl object, addresses), from the
        stream underneath."""
        return self._stream.get_extra_info(info)


def _records_already_here(sock: ssl.SSLSocket, data: bytes) -> bytes:
    """``data`` and the TLS records that arrived with it, without waiting for more."""
    pieces, total = [data], len(data)
    try:
        # Non-blocking for this loop only: the next read sets its own timeout again.
        sock.setblocking(False)
        while total < READ_SIZE:
            try:
                more = sock.recv(READ_SIZE - total)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break  # no whole record yet (or TLS wants to write first): the next read waits
            if not more:
                break  # end of stream: the next read says so
            pieces.append(more)
            total += len(more)
    except OSError as e:
        raise httpcore.ReadError(str(e)) from e
    return b"".join(pieces)


class LargeReadBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, with every connection wrapped in a `LargeReadStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A TCP connection to ``host``:``port``, read in large pieces."""
        with _until_deadline(timeout) as timeout:
            return LargeReadStream(
                self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
            )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """A connection to the unix socket ``path``, read in large pieces."""
        with _until_deadline(timeout) as timeout:
            return LargeReadStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (httpcore's backend interface)."""
        self._backend.sleep(seconds)


class _ResponseBody(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class LargeReadTransport(httpx.BaseTransport):
    """An httpx transport on a connection pool of `LargeReadStream` connections."""

    def __init__(self, *, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=LargeReadBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        with _as_httpx_errors():
            resp = self._pool.handle_request(
                httpcore.Request(
                    request.method,
                    url,
                    headers=request.headers.raw,
                    content=request.stream,
                    extensions=request.extensions,
                )
            )
        assert isinstance(resp.stream, Iterable)
        return httpx.Response(
            resp.status,
            headers=resp.headers,
            stream=_ResponseBody(resp.stream),
            extensions=resp.extensions,
        )

    def close(self) -> None:
        """Close every connection of the pool."""
        self._pool.close()
