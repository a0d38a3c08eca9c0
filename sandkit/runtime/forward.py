"""The host side of published ports: listeners on the host, relays into the container.

The process that owns the container listens on each published host port. For each accepted TCP
connection (or each new UDP client) it asks for a socket connected to the port inside the
container (``connect``: with ``network="none"`` the container's init makes it in the container's
network namespace and passes it back over the control socket), and relays bytes between the two.
A container with no network at all can thus serve a port, and a container process gets nothing
from it that it could not reach itself: only the init's socket crosses over, and it only ever
connects to the container's own 127.0.0.1.

It all runs on one thread per container, not on the caller's event loop: a container works
without a nursery (sync and async alike), under trio or asyncio. That thread accepts on every
listener, handles UDP, and moves each TCP connection's bytes with non-blocking ``splice`` through
a pipe per direction (zero-copy: the data never enters Python). No thread per connection: a
connection costs its two sockets and two pipes, and the rate of new ones is not bound by thread
start-up and the GIL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
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
# six fds on the host (two sockets, two pipes). A connection beyond it is closed at once (documented).
MAX_CONNECTIONS_PER_PORT = 128
# A UDP client's mapping (and its socket into the container) is dropped after this long without
# a datagram either way (documented).
UDP_IDLE_TIMEOUT = 60.0
# How long the accepting thread waits for the init to connect (a loopback connect is immediate;
# a listener whose backlog is full is the slow case).
CONNECT_TIMEOUT = 5.0
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
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
            )  # as docker-proxy: TIME_WAIT is no conflict
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
        fix = (
            f'publish on another host port ("OTHER:{spec.container_port}") or on any free one '
            f'("{spec.container_port}")'
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        why, fix = (
            "is not an address of this host",
            "give one of the host's addresses, or none (127.0.0.1)",
        )
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


# How much a relay's pipe holds (F_SETPIPE_SZ, best effort): bigger moves, fewer wake-ups.
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031
_NONBLOCK = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


@attrs.define(eq=False)
class _Direction:
    """One way of a TCP connection: what ``src`` sends goes to ``dst`` through a pipe."""

    src: socket.socket
    dst: socket.socket
    pipe: tuple[int, int]
    buffered: int = 0  # bytes in the pipe, not yet written to dst
    eof: bool = False  # src has ended and everything went to dst (dst was half-closed)

    def pump(self) -> None:
        """Move what can be moved now; OSError on a reset or error of either side."""
        while not self.eof:
            if not self.buffered:
                try:
                    self.buffered = os.splice(
                        self.src.fileno(), self.pipe[1], _PIPE_SIZE, flags=_NONBLOCK
                    )
                except BlockingIOError:
                    return
                if not self.buffered:
                    self.eof = True
                    self.dst.shutdown(socket.SHUT_WR)  # the half-close goes on
                    return
            try:
                self.buffered -= os.splice(
                    self.pipe[0], self.dst.fileno(), self.buffered, flags=_NONBLOCK
                )
            except BlockingIOError:
                return

    @property
    def wants_read(self) -> bool:
        return not self.eof and not self.buffered

    @property
    def wants_write(self) -> bool:
        return self.buffered > 0


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size for an unprivileged user
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
    return read_end, write_end


@attrs.define(eq=False)
class _Relay:
    """One TCP connection: the client's socket and the container's, one direction each way."""

    client: socket.socket
    inner: socket.socket
    ways: tuple[_Direction, _Direction] = attrs.field(init=False)
    closed: bool = False

    def __attrs_post_init__(self) -> None:
        self.client.setblocking(False)
        self.inner.setblocking(False)
        first = _pipe()
        try:
            second = _pipe()
        except OSError:
            _close_fds(first)
            raise
        self.ways = (
            _Direction(self.client, self.inner, first),
            _Direction(self.inner, self.client, second),
        )

    def pump(self) -> bool:
        """Move what can be moved; False once the connection is over (both ways ended, or an
        error on either side, which ends both)."""
        try:
            for way in self.ways:
                way.pump()
        except OSError:
            return False
        return not all(way.eof for way in self.ways)

    def events(self, sock: socket.socket) -> int:
        """What to wait for on one of the two sockets."""
        wanted = 0
        for way in self.ways:
            if way.src is sock and way.wants_read:
                wanted |= selectors.EVENT_READ
            if way.dst is sock and way.wants_write:
                wanted |= selectors.EVENT_WRITE
        return wanted

    def close(self) -> None:
        self.closed = True
        self.client.close()
        self.inner.close()
        for way in self.ways:
            _close_fds(way.pipe)


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


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
    _closed: bool = attrs.field(default=False, init=False)

    def bind(self, specs: Sequence[PortSpec]) -> list[Binding]:
        """Bind a host socket for each published port (before the container is made, so that a
        port in use fails the start with nothing made); returns where each landed. On any
        failure, the sockets bound so far are closed and PortInUseError is raised."""
        try:
            for spec in specs:
                self._ports.append(_Port(spec, _bind(spec)))
        except BaseException:
            self.close()
            raise
        return self.bindings

    @property
    def bindings(self) -> list[Binding]:
        """The host address and port of each published port, in the order they were given."""
        return [Binding(p.spec, *p.sock.getsockname()[:2]) for p in self._ports]

    def start(self) -> None:
        """Start the serving thread that accepts on the bound ports and relays each connection
        (or UDP client) to the container; nothing happens when no port is published."""
        if not self._ports:
            return
        self._selector = selectors.DefaultSelector()
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake[0], selectors.EVENT_READ, None)
        for port in self._ports:
            serve = self._accept if port.spec.proto == "tcp" else self._udp_from_client
            self._selector.register(port.sock, selectors.EVENT_READ, functools.partial(serve, port))
        self._thread = threading.Thread(target=self._serve, name="sandkit-ports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and end every connection (its client sees the connection close);
        returns once the serving thread has ended. Idempotent."""
        self._closed = True
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join()  # nothing is served after this: what is left is ours alone
        for port in self._ports:
            for relay in port.relays:
                relay.close()
            port.relays.clear()
            port.sock.close()
            for client in port.clients.values():
                client.inner.close()
            port.clients.clear()
        self._ports.clear()
        if self._selector is not None:
            self._selector.close()
        if self._wake is not None:
            _close_fds(self._wake)
            self._wake = None

    # -- the serving thread --------------------------------------------------------------

    def _serve(self) -> None:
        assert self._selector is not None
        while not self._closed:
            for key, _ in self._selector.select(timeout=self._next_expiry()):
                if key.data is None:
                    return  # woken by close()
                key.data()
            self._expire_udp_clients()

    def _watch(self, sock: socket.socket, events: int, handler: Callable[[], None]) -> None:
        """Wait for ``events`` on ``sock`` (0: for nothing) and then call ``handler``."""
        assert self._selector is not None
        registered = sock in self._selector.get_map()
        if events and registered:
            self._selector.modify(sock, events, handler)
        elif events:
            self._selector.register(sock, events, handler)
        elif registered:
            self._selector.unregister(sock)

    def _accept(self, port: _Port) -> None:
        try:
            client, _ = port.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            time.sleep(0.01)  # out of fds: let connections end rather than spin
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
        try:
            relay = _Relay(client, inner)
        except OSError:  # out of fds for its pipes
            _reset(client)
            inner.close()
            return
        port.relays.add(relay)
        self._pump(port, relay)

    def _pump(self, port: _Port, relay: _Relay) -> None:
        if relay.closed:
            return  # both its sockets were ready in one select: the first call ended it
        handler = functools.partial(self._pump, port, relay)
        if relay.pump():
            for sock in (relay.client, relay.inner):
                self._watch(sock, relay.events(sock), handler)
            return
        for sock in (relay.client, relay.inner):
            self._watch(sock, 0, handler)
        port.relays.discard(relay)
        relay.close()

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
        self._selector.register(
            inner,
            selectors.EVENT_READ,
            functools.partial(self._udp_from_container, port, address, inner),
        )
        return client

    def _udp_from_container(self, port: _Port, address: Address, inner: socket.socket) -> None:
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
