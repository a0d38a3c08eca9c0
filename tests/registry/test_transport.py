"""The transport of layer downloads (transport.py): big reads, TLS records taken together,
httpx's errors. Pulls through it are tested against the real registry elsewhere."""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpcore
import httpx
import pytest
from polling import wait_until

from sandkit.images.registry.transport import READ_SIZE, LargeReadBackend, LargeReadTransport

from .conftest import random_bytes
from .server import write_tls

pytestmark = pytest.mark.slow  # a TLS server per test


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_tls(tmp_path)


def _serve_once(
    handler: Callable[[socket.socket], None], tls: tuple[Path, Path, Path] | None = None
) -> Iterator[int]:
    """A server on 127.0.0.1 for one connection, given to ``handler``; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[1], tls[2])
            conn = ctx.wrap_socket(conn, server_side=True)
        with conn:
            handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def _send_then_wait(data: bytes, done: threading.Event) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.sendall(data)
        done.wait(5)

    return handler


def _connect(port: int, tls: tuple[Path, Path, Path] | None) -> httpcore.NetworkStream:
    stream = LargeReadBackend().connect_tcp("127.0.0.1", port, timeout=5)
    if tls is not None:
        stream = stream.start_tls(ssl.create_default_context(cafile=tls[0]), "127.0.0.1", timeout=5)
    return stream


def _wait_for_buffered(stream: httpcore.NetworkStream, size: int = 96 << 10) -> None:
    """Waits until `size` bytes wait in the socket's receive buffer: whole TLS records with more
    than 64 KiB of data in them (the buffer holds about 125 KiB here)."""
    fd = stream.get_extra_info("socket").fileno()

    def buffered() -> int:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]

    wait_until(lambda: buffered() >= size, f"{size} bytes in the receive buffer")


def _read_exactly(stream: httpcore.NetworkStream, n: int) -> bytes:
    out = b""
    while len(out) < n and (piece := stream.read(64 << 10, timeout=5)):
        out += piece
    return out


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_a_read_returns_all_that_already_arrived_not_what_httpcore_asked_for(
    use_tls: bool, tls_files: tuple[Path, Path, Path]
) -> None:
    # 256 KiB is 16 TLS records: httpcore's own stream would hand them over one per read.
    data, connected, done = random_bytes(256 << 10), threading.Event(), threading.Event()

    def send_when_connected(conn: socket.socket) -> None:
        connected.wait(5)
        conn.sendall(data)
        done.wait(5)

    tls = tls_files if use_tls else None
    for port in _serve_once(send_when_connected, tls):
        stream = _connect(port, tls)
        connected.set()
        _wait_for_buffered(stream)
        first = stream.read(64 << 10, timeout=5)
        assert len(first) > 64 << 10
        assert first + _read_exactly(stream, len(data) - len(first)) == data
        done.set()
        stream.close()


def test_no_read_returns_more_than_read_size(tls_files: tuple[Path, Path, Path]) -> None:
    data, done = random_bytes(READ_SIZE + (300 << 10)), threading.Event()
    for port in _serve_once(_send_then_wait(data, done), tls_files):
        stream = _connect(port, tls_files)
        _wait_for_buffered(stream)
        pieces = []
        while sum(map(len, pieces)) < len(data):
            pieces.append(stream.read(64 << 10, timeout=5))
            assert 0 < len(pieces[-1]) <= READ_SIZE
        assert b"".join(pieces) == data
        done.set()
        stream.close()


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_a_read_waits_for_data_and_times_out_as_httpcore_says(
    use_tls: bool, tls_files: tuple[Path, Path, Path]
) -> None:
    done = threading.Event()

    def late(conn: socket.socket) -> None:
        time.sleep(0.2)
        conn.sendall(b"late")
        done.wait(5)

    tls = tls_files if use_tls else None
    for port in _serve_once(late, tls):
        stream = _connect(port, tls)
        assert _read_exactly(stream, 4) == b"late"
        with pytest.raises(httpcore.ReadTimeout):
            stream.read(64 << 10, timeout=0.1)
        done.set()
        stream.close()


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_a_body_cut_short_is_an_httpx_transport_error(
    use_tls: bool, tls_files: tuple[Path, Path, Path]
) -> None:
    """The download's retries catch httpx.TransportError: httpcore's errors must arrive as those."""

    def cut(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)

    tls = tls_files if use_tls else None
    verify = ssl.create_default_context(cafile=tls_files[0]) if use_tls else False
    for port in _serve_once(cut, tls):
        with httpx.Client(
            transport=LargeReadTransport(verify=verify, limits=httpx.Limits())
        ) as client:
            scheme = "https" if use_tls else "http"
            with client.stream("GET", f"{scheme}://127.0.0.1:{port}/v2/") as resp:
                assert resp.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|peer closed"):
                    for _ in resp.iter_raw():
                        pass


def test_an_unreachable_registry_is_an_httpx_connect_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the test connects
    with (
        httpx.Client(transport=LargeReadTransport(verify=False, limits=httpx.Limits())) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(f"http://127.0.0.1:{port}/v2/")


def test_requests_keep_their_method_headers_and_body() -> None:
    seen: list[bytes] = []

    def echo(conn: socket.socket) -> None:
        request = b""
        while not request.endswith(b"hello"):
            request += conn.recv(65536)
        seen.append(request)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Reply: yes\r\n\r\nok")

    for port in _serve_once(echo):
        with httpx.Client(
            transport=LargeReadTransport(verify=False, limits=httpx.Limits())
        ) as client:
            resp = client.put(
                f"http://127.0.0.1:{port}/v2/x?digest=sha256:1",
                content=b"hello",
                headers={"X-Mine": "1"},
            )
        assert (resp.status_code, resp.headers["x-reply"], resp.content) == (201, "yes", b"ok")
    head = seen[0].split(b"\r\n")
    assert head[0] == b"PUT /v2/x?digest=sha256:1 HTTP/1.1"
    assert b"X-Mine: 1" in head and b"Content-Length: 5" in head
