"""The host side of published ports: listeners on the host, relays into the container.

The process that owns the container listens on each published host port. For each accepted TCP
connection (or each new UDP client) it asks for a socket connected to the port inside the
container (``connect``: with ``network="none"`` the container's init makes it in the container's
network namespace and passes it back over the control socket), and relays bytes between the two.
A container with no network at all can thus serve a port, and a container process gets nothing
from it that it could not reach itself: only the init's socket crosses over, and it only ever
connects to the container's own 127.0.0.1.

Everything runs on threads of its own, not on an event loop: a container works without a
nursery (sync and async alike), and a relay blocked in ``splice`` costs no event loop a wake-up.
One thread accepts on every listener of a container and handles UDP; each TCP connection has two
relay threads, one per direction, copying with ``splice`` through a pipe (zero-copy).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import attrs

from ..errors import PortInUseError, SandkitError
from .ports import PortSpec

# At most this many TCP connections (or UDP clients) per published port at once: each costs
# two threads and six fds on the host. A connection beyond it is closed at once (documented).
MAX_CONNECTIONS_PER_PORT = 128
# A UDP client's mapping (and its socket into the container) is dropped after this long without
# a datagram either way (documented).
UDP_IDLE_TIMEOUT = 60.0
# How long the accepting thread waits for the init to connect (a loopback connect is immediate;
# a listener whose backlog is full is the slow case).
CONNECT_TIMEOUT = 5.0
_SPLICE_CHUNK = 1 << 20
_UDP_MAX = 65535

# A UDP client's (host, port), as recvfrom gives it.
Address: TypeAlias = tuple[Any, ...]
# (proto, container port) -> a socket connected to that port in the container, or OSError.
Connector = Callable[[str, int], socket.socket]


def _family(host_ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host_ip else socket.AF_INET


def _bind(spec: PortSpec) -> socket.socket:
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(_family(spec.host_ip), kind | socket.SOCK_CLOEXEC)
    try:
        if spec.proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as docker-proxy: TIME_WAIT is no conflict
        sock.bind((spec.host_ip, spec.host_port))
        if spec.proto == "tcp":
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _bind_error(spec, exc) from None
    return sock


def _bind_error(spec: PortSpec, exc: OSError) -> PortInUseError:
    where = f"{spec.host_ip}:{spec.host_port}/{spec.proto}"
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use by another program"
        fix = (f"publish on another host port (\"OTHER:{spec.container_port}\") or on any free one "
               f"(\"{spec.container_port}\")")
    elif exc.errno == errno.EADDRNOTAVAIL:
        why, fix = "is not an address of this host", "give one of the host's addresses, or none (127.0.0.1)"
    elif exc.errno == errno.EACCES:
        why, fix = "needs privileges (a port under 1024)", "publish on a host port of 1024 or more"
    else:
        why, fix = f"cannot be bound ({exc.strerror})", "publish on another host port"
    return PortInUseError(f"cannot publish {spec.key} on host port {where}: it {why}; {fix}")


@attrs.frozen
class Binding:
    """A published port as bound: the spec, and the host address and port it got."""

    spec: PortSpec
    host_ip: str
    host_port: int


@attrs.define(eq=False)
class _Relay:
    """One TCP connection: the client's socket and the container's, two threads copying."""

    client: socket.socket
    inner: socket.socket
    on_done: Callable[[_Relay], None]
    _running: int = 2
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def start(self) -> None:
        for src, dst in ((self.client, self.inner), (self.inner, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), name="sandkit-relay", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            _copy(src, dst)
            dst.shutdown(socket.SHUT_WR)  # the half-close goes on
        except OSError:
            self.abort()  # a reset or error on either side ends the connection both ways
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self.client.close()
            self.inner.close()
            self.on_done(self)

    def abort(self) -> None:
        for sock in (self.client, self.inner):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Everything ``src`` sends, to ``dst``, until end of file: zero-copy through a pipe."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        while True:
            n = os.splice(src.fileno(), write_end, _SPLICE_CHUNK, flags=os.SPLICE_F_MOVE)
            if n == 0:
                return
            while n:
                n -= os.splice(read_end, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
    finally:
        os.close(read_end)
        os.close(write_end)


def _reset(sock: socket.socket) -> None:
    """Close so that the client sees a reset, as when nothing listens on the port."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@attrs.define(eq=False)
class _UdpClient:
    inner: socket.socket
    last: float


@attrs.define(eq=False)
class _Port:
    """One bound published port and what it carries."""

    spec: PortSpec
    sock: socket.socket
    relays: set[_Relay] = attrs.field(factory=set)
    clients: dict[Address, _UdpClient] = attrs.field(factory=dict)


@attrs.define(eq=False)
class PortForwarder:
    """The listeners of one container's published ports and their relays.

    `bind` binds every port or none (a port in use is `PortInUseError` and leaves no listener);
    `start` begins to carry connections through ``connect``; `close` ends them all.
    """

    connect: Connector
    _ports: list[_Port] = attrs.field(factory=list, init=False)
    _selector: selectors.BaseSelector | None = attrs.field(default=None, init=False)
    _wake: tuple[int, int] | None = attrs.field(default=None, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def bind(self, specs: Sequence[PortSpec]) -> list[Binding]:
        try:
            for spec in specs:
                self._ports.append(_Port(spec, _bind(spec)))
        except BaseException:
            self.close()
            raise
        return self.bindings

    @property
    def bindings(self) -> list[Binding]:
        return [Binding(p.spec, *p.sock.getsockname()[:2]) for p in self._ports]

    def start(self) -> None:
        if not self._ports:
            return
        self._selector = selectors.DefaultSelector()
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake[0], selectors.EVENT_READ, None)
        for port in self._ports:
            self._selector.register(port.sock, selectors.EVENT_READ, (port, None))
        self._thread = threading.Thread(target=self._serve, name="sandkit-ports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and end every connection; returns when no thread of ours is left
        holding a socket. Idempotent."""
        self._closed = True
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join()  # no new relay after this
        with self._lock:
            relays = [r for p in self._ports for r in p.relays]
        for relay in relays:
            relay.abort()
        for port in self._ports:
            self._wait_relays(port)
            port.sock.close()
            for client in port.clients.values():
                client.inner.close()
            port.clients.clear()
        self._ports.clear()
        if self._selector is not None:
            self._selector.close()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def _wait_relays(self, port: _Port) -> None:
        deadline = time.monotonic() + 5.0
        while port.relays and time.monotonic() < deadline:
            time.sleep(0.001)  # relay threads end within microseconds of the shutdown above

    # -- the accepting thread ------------------------------------------------------------

    def _serve(self) -> None:
        assert self._selector is not None
        while not self._closed:
            for key, _ in self._selector.select(timeout=self._next_expiry()):
                if key.data is None:
                    return  # woken by close()
                port, client = key.data
                if client is not None:
                    self._udp_from_container(port, client, key.fileobj)
                elif port.spec.proto == "tcp":
                    self._accept(port)
                else:
                    self._udp_from_client(port)
            self._expire_udp_clients()

    def _accept(self, port: _Port) -> None:
        try:
            client, _ = port.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            time.sleep(0.01)  # out of fds: let relays end rather than spin
            return
        if len(port.relays) >= MAX_CONNECTIONS_PER_PORT:
            _reset(client)
            return
        try:
            inner = self.connect("tcp", port.spec.container_port)
        except (OSError, SandkitError):
            # Nothing listens in the container (the client sees what it would there), or the
            # container is stopping.
            _reset(client)
            return
        client.setblocking(True)
        inner.setblocking(True)
        relay = _Relay(client, inner, on_done=lambda r: self._relay_done(port, r))
        with self._lock:
            port.relays.add(relay)
        relay.start()

    def _relay_done(self, port: _Port, relay: _Relay) -> None:
        with self._lock:
            port.relays.discard(relay)

    def _udp_from_client(self, port: _Port) -> None:
        try:
            data, address = port.sock.recvfrom(_UDP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # an ICMP error from an earlier send
        client = port.clients.get(address)
        if client is None:
            client = self._new_udp_client(port, address)
            if client is None:
                return
        client.last = time.monotonic()
        with contextlib.suppress(OSError):
            client.inner.send(data)

    def _new_udp_client(self, port: _Port, address: Address) -> _UdpClient | None:
        if len(port.clients) >= MAX_CONNECTIONS_PER_PORT:
            self._drop_udp_client(port, min(port.clients, key=lambda a: port.clients[a].last))
        try:
            inner = self.connect("udp", port.spec.container_port)
        except (OSError, SandkitError):
            return None
        inner.setblocking(False)
        client = port.clients[address] = _UdpClient(inner, time.monotonic())
        assert self._selector is not None
        self._selector.register(inner, selectors.EVENT_READ, (port, address))
        return client

    def _udp_from_container(self, port: _Port, address: Address, inner: object) -> None:
        assert isinstance(inner, socket.socket)
        try:
            data = inner.recv(_UDP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # ECONNREFUSED: nothing listens in the container (yet)
        client = port.clients.get(address)
        if client is not None:
            client.last = time.monotonic()
        with contextlib.suppress(OSError):
            port.sock.sendto(data, address)

    def _drop_udp_client(self, port: _Port, address: Address) -> None:
        client = port.clients.pop(address)
        assert self._selector is not None
        self._selector.unregister(client.inner)
        client.inner.close()

    def _next_expiry(self) -> float | None:
        lasts = [c.last for p in self._ports for c in p.clients.values()]
        if not lasts:
            return None
        return max(0.0, min(lasts) + UDP_IDLE_TIMEOUT - time.monotonic())

    def _expire_udp_clients(self) -> None:
        now = time.monotonic()
        for port in self._ports:
            for address in [a for a, c in port.clients.items() if now - c.last >= UDP_IDLE_TIMEOUT]:
                self._drop_udp_client(port, address)
