"""Published ports (`ports=`): Docker's syntax, and real traffic on 127.0.0.1 carried into a
container that has no network but its own loopback (network="none"), as root and rootless."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import pytest
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.runtime import forward
from sandkit.runtime.ports import PortSpec, parse_port, parse_ports

# A TCP echo server that keeps listening (busybox nc: -ll -e runs cat per connection), and a
# UDP echo server (busybox's nc has no -u: the host image's python).
TCP_ECHO = ["busybox", "nc", "-ll", "-p", "80", "-e", "cat"]
UDP_ECHO = [
    "python3",
    "-c",
    """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"echo:" + data, peer)
""",
]


# --- the syntax: Docker's meaning (docs.docker.com, "docker run --publish") -----------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", PortSpec(80, "tcp", "127.0.0.1", 0)),
        ("8080:80", PortSpec(80, "tcp", "127.0.0.1", 8080)),
        ("127.0.0.1::5432", PortSpec(5432, "tcp", "127.0.0.1", 0)),
        ("53/udp", PortSpec(53, "udp", "127.0.0.1", 0)),
        ("127.0.0.1:9000:9000/tcp", PortSpec(9000, "tcp", "127.0.0.1", 9000)),
        ("0.0.0.0:8053:53/UDP", PortSpec(53, "udp", "0.0.0.0", 8053)),
        ("[::1]:8080:80", PortSpec(80, "tcp", "::1", 8080)),
    ],
)
def test_docker_syntax(spec, expected):
    assert parse_port(spec) == expected


def test_mapping_syntax():
    specs = parse_ports({80: 8080, "53/udp": None, 5432: ("127.0.0.2", 15432)})
    assert specs == (
        PortSpec(80, "tcp", "127.0.0.1", 8080),
        PortSpec(53, "udp", "127.0.0.1", 0),
        PortSpec(5432, "tcp", "127.0.0.2", 15432),
    )


def test_bare_container_ports_are_published_on_ephemeral_ports():
    """``ports=[5432]`` (testcontainers' and the issue's spelling) means ``-p 5432``: the
    container port on an ephemeral host port."""
    assert parse_ports([5432, "53/udp"]) == (
        PortSpec(5432, "tcp", "127.0.0.1", 0),
        PortSpec(53, "udp", "127.0.0.1", 0),
    )


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "http",
        "80/sctp",
        "0",
        "70000",
        "8080:",
        ":80",
        "1.2.3:8080:80",
        "8000-8010:8000-8010",
        "80:80:80",
        "-1",
        "127.0.0.1:99999:80",
    ],
)
def test_malformed_spec_is_a_clear_error(spec, no_leaks, busybox):
    with pytest.raises(errors.PortSpecError, match=r"port|protocol|address"):
        sandkit.Container(busybox, ports=[spec])


def test_malformed_option_shapes(busybox):
    with pytest.raises(errors.PortSpecError, match=r"list of strings"):
        sandkit.Container(busybox, ports="80")
    with pytest.raises(errors.PortSpecError, match=r"list of strings"):
        sandkit.Container(busybox, ports=80)
    with pytest.raises(errors.PortSpecError, match=r"list of strings"):
        sandkit.Container(busybox, ports=80.5)  # type: ignore[arg-type]
    with pytest.raises(errors.PortSpecError, match="invalid port"):
        sandkit.Container(busybox, ports=[True])  # type: ignore[list-item]
    with pytest.raises(errors.PortSpecError, match="out of range"):
        sandkit.Container(busybox, ports=[0])
    with pytest.raises(errors.PortSpecError, match="host port"):
        sandkit.Container(busybox, ports={80: "8080"})
    with pytest.raises(errors.PortSpecError, match="published twice"):
        sandkit.Container(busybox, ports=["18080:80", "18080:81"])


def test_host_network_refuses_ports(busybox):
    with pytest.raises(errors.PortSpecError, match="network='host'"):
        sandkit.Container(busybox, network="host", ports=["80"])


# --- traffic -------------------------------------------------------------------------------


def _connect_when_served(address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    """A connection through the published port once the server inside answers: until then the
    host resets each connection (nothing listens in the container yet)."""
    result: list[socket.socket] = []

    def served() -> bool:
        try:
            # (the reset can come before connect returns: loopback is that fast)
            sock = socket.create_connection(address, timeout=10)
        except ConnectionResetError:
            return False
        try:
            sock.sendall(b"?")
            if sock.recv(1) == b"?":
                result.append(sock)
                return True
        except OSError:
            pass
        sock.close()
        return False

    wait_until(served, f"an echo server behind {address}", timeout=timeout)
    return result[0]


def _echo_through(address: tuple[str, int], payload: bytes) -> bytes:
    """Send ``payload`` while reading the echo, then half-close: the echo server's EOF (cat
    ends) comes back only if the half-close went through."""
    sock = _connect_when_served(address)
    with sock:
        sender = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
        sender.join()
    return bytes(received)


def _udp_echo(address: tuple[str, int], message: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        replies: list[bytes] = []

        def answered() -> bool:
            sock.sendto(message, address)  # datagrams before the server binds are lost: resend
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                replies.append(sock.recv(65535))
            return bool(replies)

        wait_until(answered, f"a UDP echo behind {address}")
        return replies[0]


def _tcp_and_udp(image: object) -> dict[str, object]:
    """Both protocols through ephemeral published ports; what each carried."""
    payload = os.urandom(6 << 20)
    with sandkit.Container(image, ports=["80", "127.0.0.1::53/udp"]) as c:
        c.spawn(TCP_ECHO, stdin=False)
        c.spawn(UDP_ECHO, stdin=False)
        tcp, udp = c.port(80), c.port("53/udp")
        echoed = _echo_through(tcp, payload)
        return {
            "tcp": tcp,
            "udp": udp,
            "ports": sorted(c.ports),
            "same": echoed == payload,
            "echoed": len(echoed),
            "udp_reply": _udp_echo(udp, b"ping"),
        }


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_tcp_and_udp_through_published_ports(mode, as_unprivileged, no_leaks):
    got = _tcp_and_udp("host") if mode == "root" else as_unprivileged(_tcp_and_udp, "host")
    assert got["same"], f"{got['echoed']} bytes came back for {6 << 20} sent"
    assert got["udp_reply"] == b"echo:ping"
    assert got["ports"] == ["53/udp", "80/tcp"]
    for host, port in (got["tcp"], got["udp"]):
        assert host == "127.0.0.1" and 1024 <= port <= 65535  # an ephemeral port on loopback


def test_busybox_server_on_a_fixed_port(busybox, no_leaks):
    port = _free_port()
    with sandkit.Container(busybox, ports=[f"{port}:80"]) as c:
        assert c.port(80) == ("127.0.0.1", port) == c.port("80/tcp")
        c.spawn(TCP_ECHO, stdin=False)
        assert _echo_through(("127.0.0.1", port), b"hello\n" * 1000) == b"hello\n" * 1000
        with pytest.raises(errors.PortSpecError, match=r"81/tcp .* not published"):
            c.port(81)
    _assert_free(port)


def test_nothing_listening_inside_resets_the_client(busybox, no_leaks):
    with sandkit.Container(busybox, ports=["80"]) as c:
        # what a client of the container's own loopback would see: refused (a reset here)
        with (
            contextlib.suppress(ConnectionResetError),
            socket.create_connection(c.port(80), timeout=10) as sock,
        ):
            assert sock.recv(1) == b""
        assert c.exec(["true"]).exit_code == 0


def test_connections_over_the_cap_are_closed(busybox, no_leaks, monkeypatch):
    monkeypatch.setattr(forward, "MAX_CONNECTIONS_PER_PORT", 2)
    with sandkit.Container(busybox, ports=["80"]) as c:
        c.spawn(TCP_ECHO, stdin=False)
        held = [_connect_when_served(c.port(80)) for _ in range(2)]
        with (
            contextlib.suppress(ConnectionResetError),
            socket.create_connection(c.port(80), timeout=10) as third,
        ):
            assert third.recv(1) == b""  # closed at once, not served
        for sock in held:
            sock.close()
        # once those are done, the port serves again
        _connect_when_served(c.port(80)).close()


# --- failures and what they leave ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_free(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> None:
    """No listener of ours is left on the port: it can be bound again (and a TCP connect to it
    is refused)."""
    if kind == socket.SOCK_STREAM:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket(socket.AF_INET, kind) as sock:
        # (a connection that was served leaves TIME_WAIT behind, which is no listener)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_port_in_use_fails_the_start_and_leaves_nothing(busybox, no_leaks):
    free, taken = _free_port(), socket.socket()
    with taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        c = sandkit.Container(busybox, ports=[f"{free}:80", f"{busy}:81"])
        with pytest.raises(
            errors.PortInUseError, match=f"127.0.0.1:{busy}/tcp: it is already in use"
        ):
            c.start()
        assert not c.running
    _assert_free(free)  # the port bound before the failure was let go


def test_failed_start_after_binding_leaves_no_listener(busybox, no_leaks, tmp_path):
    tcp, udp = _free_port(), _free_port()
    c = sandkit.Container(
        busybox, ports=[f"{tcp}:80", f"{udp}:53/udp"], mounts=[f"{tmp_path}/missing:/data"]
    )  # the init fails to mount it
    with pytest.raises(errors.SandkitError):
        c.start()
    _assert_free(tcp)
    _assert_free(udp, socket.SOCK_DGRAM)


def test_stop_closes_listeners_and_connections(busybox, no_leaks):
    with sandkit.Container(busybox, ports=["80", "53/udp"]) as c:
        c.spawn(TCP_ECHO, stdin=False)
        tcp, udp = c.port(80), c.port("53/udp")
        open_connection = _connect_when_served(tcp)
    with open_connection:
        open_connection.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert open_connection.recv(1) == b""  # ended by the stop
    _assert_free(tcp[1])
    _assert_free(udp[1], socket.SOCK_DGRAM)
    assert not [
        t for t in threading.enumerate() if t.name.startswith(("sandkit-ports", "sandkit-relay"))
    ]
    assert c.ports == {}


def test_a_container_that_ended_by_itself_resets_clients(busybox, no_leaks):
    with sandkit.Container(busybox, ports=["80"], lifetime=0.2) as c:
        c.spawn(TCP_ECHO, stdin=False)
        address = c.port(80)

        def refused_for_good() -> bool:
            # each connection now asks an init that is gone: the client is reset, and the
            # accepting thread lives on to serve (and reset) the next one
            try:
                with socket.create_connection(address, timeout=10) as sock:
                    sock.sendall(b"?")
                    return sock.recv(1) == b""
            except ConnectionResetError:
                return not c.running

        wait_until(refused_for_good, "the container's lifetime to end")
        for _ in range(3):
            with (
                contextlib.suppress(ConnectionResetError),
                socket.create_connection(address, timeout=10) as sock,
            ):
                assert sock.recv(1) == b""
        assert [t for t in threading.enumerate() if t.name == "sandkit-ports"]
    _assert_free(address[1])


def test_many_short_connections_at_once(no_leaks):
    """Connections that end on both sides at once (the server closes after its answer while the
    client closes on reading it), many after each other and side by side: every one is served,
    and the port serves afterwards (both sockets of a relay ready in one wake-up must not end
    the serving thread)."""
    with sandkit.Container("host", ports=["80"]) as c:
        c.spawn(["python3", "-c", ONE_BYTE_ECHO], stdin=False)
        wait_until(lambda: _one_byte_echo(c.port(80)), "the echo server")
        results: list[bool] = []

        def client() -> None:
            results.extend(_one_byte_echo(c.port(80)) for _ in range(300))

        clients = [threading.Thread(target=client) for _ in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        assert results == [True] * 1200
        assert [t for t in threading.enumerate() if t.name == "sandkit-ports"]


ONE_BYTE_ECHO = """
import socket
s = socket.socket()
s.bind(("127.0.0.1", 80))
s.listen(512)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(1))
    c.close()
"""


def _one_byte_echo(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"x")
            return sock.recv(1) == b"x"
    except (ConnectionResetError, ConnectionRefusedError):
        return False
