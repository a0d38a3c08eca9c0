"""An attacker in a container on a network (root in the container, Docker's default
capabilities, NET_RAW among them) against what sandkit's networks claim: it reaches nothing it
is denied, cannot pass for another container, cannot use the resolver as a way out or wear the
keeper down, and leaves nothing behind however it ends.

The containers run the host's own Python (the "host" image) with the standard library only:
see `attacker`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
from polling import wait_until

import sandkit
from sandkit.net import pasta

from . import attacker
from .helpers import host_address, network_processes

# Root makes the networks, or the unprivileged test user for the rootless ones (as_unprivileged).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes networks as root and as another user"),
]


def run(container: sandkit.Container, command: str, *args: object) -> str:
    """Run one attacker command in ``container``: its output line."""
    done = container.exec(attacker.argv(command, *args))
    assert done.exit_code == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def address_of(container: sandkit.Container) -> str:
    return container.networks["bridge"]


@contextlib.contextmanager
def udp_listener(container: sandkit.Container, port: int) -> Iterator[sandkit.Process]:
    """A UDP listener in ``container`` that prints what it gets until a datagram "end"."""
    process = container.spawn(attacker.argv("listen-udp", port), stdin=False)
    try:
        assert process.stdout is not None
        assert process.stdout.read() == b"ready\n"
        yield process
    finally:
        with contextlib.suppress(Exception):
            process.kill()


def received(process: sandkit.Process) -> list[str]:
    """What a `udp_listener` got, once its "end" came (the lines "SOURCE PAYLOAD")."""
    assert process.wait(10) == 0
    assert process.stdout is not None
    return b"".join(iter(process.stdout.read, b"")).decode().splitlines()


def containers(count: int, **options: object) -> contextlib.ExitStack:
    """``count`` containers of the host image on the default network (enter the stack; they
    are in its ``.started``)."""
    stack = contextlib.ExitStack()
    stack.started = [  # type: ignore[attr-defined]
        stack.enter_context(sandkit.Container("host", network="bridge", **options))
        for _ in range(count)
    ]
    return stack


def keeper_pid() -> int:
    """The pid of the running keeper of this test run's networks (one at a time here)."""
    home = os.environ["SANDKIT_HOME"]
    keepers = [
        line for line in network_processes(home) if "--no-map-gw" not in line.split(None, 2)[-1]
    ]
    assert len(keepers) == 1, keepers
    return int(keepers[0].split()[0])


def in_keepers_netns(*argv: str) -> str:
    done = subprocess.run(
        ["nsenter", f"--net=/proc/{keeper_pid()}/ns/net", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return done.stdout


# --- forged addresses ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["raw", "transparent"])
def test_a_forged_source_address_never_reaches_a_neighbour(how):
    """A sends a datagram to C as if it came from B (a raw socket, or IP_TRANSPARENT: both
    need only NET_RAW); C gets A's genuine datagram sent after it, and never the forged one."""
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(c, 9999) as listener:
            assert run(a, "spoof-udp", how, address_of(b), address_of(c), 9999, "forged") == "sent"
            run(a, "udp", address_of(c), 9999, "end")
            assert received(listener) == [f"{address_of(a)} end"]


def test_a_forged_source_address_never_borrows_a_neighbours_egress():
    """A, whose egress allows nothing, sends to the host as if it were B, whose egress allows
    the host: only B's own datagram arrives."""
    with (
        contextlib.ExitStack() as stack,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
    ):
        a = stack.enter_context(sandkit.Container("host", network="bridge", egress=[]))
        b = stack.enter_context(
            sandkit.Container("host", network="bridge", egress=[host_address()])
        )
        server.bind((host_address(), 0))
        server.settimeout(10)
        port = server.getsockname()[1]
        assert run(a, "spoof-udp", "raw", address_of(b), host_address(), port, "forged") == "sent"
        run(b, "udp", host_address(), port, "end")
        assert server.recv(100) == b"end"


def test_freebind_alone_cannot_forge_a_source_address():
    """IP_FREEBIND binds a foreign address without any capability, but the container's own
    kernel refuses to send from it (only IP_TRANSPARENT or a raw socket could)."""
    with containers(2) as stack:
        a, b = stack.started
        sent = run(a, "spoof-udp", "freebind", address_of(b), host_address(), 9, "forged")
        assert sent == "refused ENETUNREACH"


def neighbour(container: sandkit.Container, address: str) -> str:
    """``container``'s ARP entry for ``address`` ("" if none)."""
    done = container.exec(["ip", "neigh", "show", address])
    assert done.exit_code == 0, done.stderr
    return done.stdout.decode().strip()


def test_forged_arp_never_teaches_a_neighbour_the_gateways_address():
    """A claims the gateway's address in an ARP request to C (C would then send A everything
    it meant for the outside); C learns A's genuine claim sent after it, never the forged one."""
    with containers(2) as stack:
        a, c = stack.started
        c_mac, a_mac = run(c, "mac"), run(a, "mac")
        run(a, "arp", "request", "10.88.0.1", address_of(c), c_mac)
        run(a, "arp", "request", address_of(a), address_of(c), c_mac)
        wait_until(lambda: a_mac in neighbour(c, address_of(a)), "C to learn A's genuine claim")
        assert a_mac not in neighbour(c, "10.88.0.1")


def test_a_forged_source_mac_never_diverts_a_neighbours_traffic():
    """A sends a frame from B's MAC (a learning bridge would then send B's traffic to A's
    port); B still gets what C sends it afterwards."""
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(b, 9999) as listener:
            run(c, "udp", address_of(b), 9999, "first")  # C learns B's MAC, the bridge too
            run(a, "frame", run(b, "mac"))
            run(c, "udp", address_of(b), 9999, "end")
            assert received(listener) == [f"{address_of(c)} first", f"{address_of(c)} end"]


def test_a_ports_rules_go_when_its_container_does():
    with containers(1) as stack:
        stayer = stack.started[0]
        with sandkit.Container("host", network="bridge") as leaver:
            leaver_mac = run(leaver, "mac")
            rules = in_keepers_netns("ebtables-save")
            assert leaver_mac in rules and run(stayer, "mac") in rules
        wait_until(lambda: leaver_mac not in in_keepers_netns("ebtables-save"), "the rules to go")
        assert run(stayer, "mac") in in_keepers_netns("ebtables-save")


# --- rootless ------------------------------------------------------------------------------


@pytest.fixture
def open_tun():
    """/dev/net/tun readable and writable by everyone (0666, as most distributions ship it),
    so that a rootless pasta can open it; its mode is restored after."""
    mode = os.stat(pasta.TUN_DEVICE).st_mode & 0o777
    os.chmod(pasta.TUN_DEVICE, 0o666)
    try:
        yield
    finally:
        os.chmod(pasta.TUN_DEVICE, mode)


def _forge_rootless() -> list[str]:
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(c, 9999) as listener:
            for how in ("raw", "transparent"):
                run(a, "spoof-udp", how, address_of(b), address_of(c), 9999, "forged")
            run(a, "udp", address_of(c), 9999, "end")
            return [*received(listener), address_of(a)]


def test_rootless_a_forged_source_address_never_reaches_a_neighbour(as_unprivileged, open_tun):
    *got, sender = as_unprivileged(_forge_rootless)
    assert got == [f"{sender} end"]
