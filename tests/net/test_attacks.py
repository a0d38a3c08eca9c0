"""An attacker in a container on a network (root in the container, Docker's default
capabilities, NET_RAW among them) against what sandkit's networks claim: it reaches nothing it
is denied, cannot pass for another container, cannot use the resolver as a way out or wear the
keeper down, and leaves nothing behind however it ends.

The containers run the host's own Python (the "host" image) with the standard library only:
see `attacker`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rrset
import pytest
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.net import client, egress, keeper, portguard, protocol, store
from sandkit.net import dns as resolver

from . import attacker
from .helpers import greeting_server, host_address, in_netns, netns_process

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


def keeper_pid(network: str = "bridge") -> int:
    """The pid of the running keeper of ``network``: the process that holds the network's
    directory open."""
    directory = os.fspath(store.get_network(network).directory())
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == directory:
                        found.add(int(pid))
    # (a child the keeper forks to run ebtables or iptables holds it too until it execs)
    keepers = [pid for pid in found if parent_of(pid) not in found]
    assert len(keepers) == 1, found
    return keepers[0]


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0


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


@pytest.fixture(params=["root", "rootless"])
def in_mode(request):
    """Runs a function as root, or as the unprivileged test user (rootless: its own home,
    networks and keepers; /dev/net/tun opened to it for pasta)."""
    if request.param == "root":
        return lambda fn, *args: fn(*args)
    request.getfixturevalue("open_tun")
    return request.getfixturevalue("as_unprivileged")


def _forged_to_a_neighbour(how: str) -> None:
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(c, 9999) as listener:
            assert run(a, "spoof-udp", how, address_of(b), address_of(c), 9999, "forged") == "sent"
            run(a, "udp", address_of(c), 9999, "end")
            assert received(listener) == [f"{address_of(a)} end"]


@pytest.mark.parametrize("how", ["raw", "transparent"])
def test_a_forged_source_address_never_reaches_a_neighbour(in_mode, how):
    """A sends a datagram to C as if it came from B (a raw socket, or IP_TRANSPARENT: both
    need only NET_RAW); C gets A's genuine datagram sent after it, and never the forged one."""
    in_mode(_forged_to_a_neighbour, how)


def _forged_to_the_host(port: int) -> None:
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(sandkit.Container("host", network="bridge", egress=[]))
        b = stack.enter_context(
            sandkit.Container("host", network="bridge", egress=[host_address()])
        )
        assert run(a, "spoof-udp", "raw", address_of(b), host_address(), port, "forged") == "sent"
        run(b, "udp", host_address(), port, "end")


def test_a_forged_source_address_never_borrows_a_neighbours_egress(in_mode):
    """A, whose egress allows nothing, sends to the host as if it were B, whose egress allows
    the host: only B's own datagram arrives."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((host_address(), 0))
        server.settimeout(10)
        in_mode(_forged_to_the_host, server.getsockname()[1])
        assert server.recv(100) == b"end"


def _forged_with_net_admin() -> None:
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(sandkit.Container("host", network="bridge", cap_add=["NET_ADMIN"]))
        b, c = (stack.enter_context(sandkit.Container("host", network="bridge")) for _ in "bc")
        with udp_listener(c, 9999) as listener:
            run(a, "udp", address_of(c), 9999, "first")
            # B's address as a second one of A's: the kernel then sends from it as from its own
            done = a.exec(["ip", "addr", "add", f"{address_of(b)}/32", "dev", "eth0"])
            assert done.exit_code == 0, done.stderr
            assert (
                run(a, "spoof-udp", "freebind", address_of(b), address_of(c), 9999, "x") == "sent"
            )
            # then B's MAC as A's own: every frame A sends is B's
            done = a.exec(["ip", "link", "set", "eth0", "address", run(b, "mac")])
            assert done.exit_code == 0, done.stderr
            run(a, "udp", address_of(c), 9999, "forged")
            run(b, "udp", address_of(c), 9999, "end")
            assert received(listener) == [f"{address_of(a)} first", f"{address_of(b)} end"]


def test_net_admin_cannot_take_a_neighbours_address_or_mac(in_mode):
    """With NET_ADMIN (cap_add) A gives itself B's address, then B's MAC, and sends: C gets
    only A's genuine datagram and B's own."""
    in_mode(_forged_with_net_admin)


def _freebind() -> None:
    with containers(2) as stack:
        a, b = stack.started
        sent = run(a, "spoof-udp", "freebind", address_of(b), host_address(), 9, "forged")
        assert sent == "refused ENETUNREACH"


def test_freebind_alone_cannot_forge_a_source_address(in_mode):
    """IP_FREEBIND binds a foreign address without any capability, but the container's own
    kernel refuses to send from it (only IP_TRANSPARENT or a raw socket could)."""
    in_mode(_freebind)


def neighbour(container: sandkit.Container, address: str) -> str:
    """``container``'s ARP entry for ``address`` ("" if none)."""
    done = container.exec(["ip", "neigh", "show", address])
    assert done.exit_code == 0, done.stderr
    return done.stdout.decode().strip()


def _forged_arp() -> None:
    with containers(2) as stack:
        a, c = stack.started
        c_mac, a_mac = run(c, "mac"), run(a, "mac")
        run(a, "arp", "request", "10.88.0.1", address_of(c), c_mac)
        run(a, "arp", "request", address_of(a), address_of(c), c_mac)
        wait_until(lambda: a_mac in neighbour(c, address_of(a)), "C to learn A's genuine claim")
        assert a_mac not in neighbour(c, "10.88.0.1")


def test_forged_arp_never_teaches_a_neighbour_the_gateways_address(in_mode):
    """A claims the gateway's address in an ARP request to C (C would then send A everything
    it meant for the outside); C learns A's genuine claim sent after it, never the forged one."""
    in_mode(_forged_arp)


def _forged_mac() -> None:
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(b, 9999) as listener:
            run(c, "udp", address_of(b), 9999, "first")  # C learns B's MAC, the bridge too
            run(a, "frame", run(b, "mac"))
            run(c, "udp", address_of(b), 9999, "end")
            assert received(listener) == [f"{address_of(c)} first", f"{address_of(c)} end"]


def test_a_forged_source_mac_never_diverts_a_neighbours_traffic(in_mode):
    """A sends a frame from B's MAC (a learning bridge would then send B's traffic to A's
    port); B still gets what C sends it afterwards."""
    in_mode(_forged_mac)


def _port_rules(port: str) -> list[str]:
    """The lines of ebtables-save in N that concern bridge port ``port``."""
    saved = in_keepers_netns("ebtables-save").splitlines()
    return [line for line in saved if f"P-{port} " in f"{line} "]


def _container_at(stack: contextlib.ExitStack, address: str, **options: object):
    """A container on "bridge" given ``address``, entered into ``stack``: the keeper frees an
    address once it has seen its port go (a thread deletes it aside), so the first container
    started may still get the next one; those stay in ``stack`` meanwhile."""
    for _ in range(10):
        started = stack.enter_context(sandkit.Container("host", network="bridge", **options))
        if address_of(started) == address:
            return started
    raise AssertionError(f"no container was given {address} again")


def test_a_slots_port_rules_stay_and_guard_the_next_container_of_its_address():
    """A departing container's port rules stay (no ebtables run at detach: see portguard) and
    pin the next container given its address (the lowest free one) as they pinned the first:
    that one cannot pass as a neighbour either. The rule names its port exactly (an ebtables
    name ending in + would be a prefix)."""
    with containers(2) as stack:
        b, c = stack.started
        with sandkit.Container("host", network="bridge") as leaver:
            address, mac = address_of(leaver), run(leaver, "mac")
        port = portguard.veth_for(ipaddress.IPv4Address(address))
        left = _port_rules(port)
        assert f"-A PREROUTING -i {port} -j {portguard.port_chain(port)}" in left
        saved = in_keepers_netns("ebtables-save").splitlines()
        assert not any("+" in line for line in saved if line.startswith("-A PREROUTING"))
        with contextlib.ExitStack() as comers:
            comer = _container_at(comers, address)
            assert run(comer, "mac") == mac
            assert _port_rules(port) == left  # nothing loaded again
            with udp_listener(c, 9999) as listener:
                forged = run(comer, "spoof-udp", "raw", address_of(b), address_of(c), 9999, "x")
                assert forged == "sent"
                run(comer, "udp", address_of(c), 9999, "end")
                assert received(listener) == [f"{address} end"]


# --- the resolver ----------------------------------------------------------------------------


class Upstream:
    """A stand-in for the host's resolver on 127.0.0.153:53 that records the names it is
    asked. It answers an A query with 192.0.2.99; for a name that starts with "big", with 3500
    addresses (56 KB); for one that starts with "flood", never."""

    ADDRESS = "127.0.0.153"
    BIG = 3500

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ADDRESS, 53))
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                wire, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            name = query.question[0].name
            self.asked.append(name.to_text())
            if name.labels[0].startswith(b"flood"):
                continue
            count = self.BIG if name.labels[0].startswith(b"big") else 1
            addresses = [str(ipaddress.IPv4Address("192.0.2.99") + n) for n in range(count)]
            reply = dns.message.make_response(query)
            reply.answer.append(dns.rrset.from_text_list(name, 60, "IN", "A", addresses))
            self.sock.sendto(reply.to_wire(max_size=65535), client)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def upstream(tmp_path, monkeypatch) -> Iterator[Upstream]:
    """The network's keeper forwards to `Upstream` (a fresh home: a keeper of its own)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    # readable by the rootless tests' user too (tmp_path is not)
    fd, name = tempfile.mkstemp(prefix="sandkit-attack-resolv-")
    os.write(fd, f"nameserver {Upstream.ADDRESS}\n".encode())
    os.fchmod(fd, 0o644)
    os.close(fd)
    monkeypatch.setattr(client, "RESOLV_CONF", Path(name))
    server = Upstream()
    try:
        yield server
    finally:
        wait_until(lambda: not store.keeper_running(store.BRIDGE.directory()), "the keeper's end")
        server.close()
        os.unlink(name)


def resolve_allowed_example(monkeypatch) -> None:
    """The host's resolver, as egress sees it, knows allowed.example (this machine has no DNS
    of its own to ask)."""

    def lookup(name: str) -> list[ipaddress.IPv4Address]:
        if name != "allowed.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.IPv4Address("192.0.2.99")]

    monkeypatch.setattr(egress, "_lookup", lookup)


def ask(container: sandkit.Container, name: str, transport: str = "udp") -> str:
    return run(container, "dns", "10.88.0.1", name, transport)


def _dns_policy() -> None:
    with contextlib.ExitStack() as stack:
        narrow, closed, open_ = (
            stack.enter_context(sandkit.Container("host", network="bridge", egress=egress_))
            for egress_ in (["allowed.example:443"], [], "all")
        )
        for transport in ("udp", "tcp"):
            assert ask(narrow, "allowed.example", transport) == "NOERROR 192.0.2.99"
            assert ask(narrow, "ALLOWED.Example.", transport) == "NOERROR 192.0.2.99"
            # a subdomain is another name: a way out for data, refused at once
            assert ask(narrow, "secret.allowed.example", transport) == "REFUSED"
            assert ask(narrow, "c2VjcmV0.attacker.example", transport) == "REFUSED"
            assert ask(closed, "allowed.example", transport) == "REFUSED"
            assert ask(closed, "c2VjcmV0.attacker.example", transport) == "REFUSED"
            # the names of the network's containers are answered whatever the policy
            assert ask(closed, open_.hostname, transport) == f"NOERROR {address_of(open_)}"
            assert ask(open_, "anything.example", transport) == "NOERROR 192.0.2.99"


def test_dns_forwards_only_what_the_asking_containers_egress_allows(in_mode, upstream, monkeypatch):
    resolve_allowed_example(monkeypatch)
    in_mode(_dns_policy)
    forwarded = {"allowed.example.", "ALLOWED.Example.", "anything.example."}
    assert set(upstream.asked) == forwarded


# --- what a container never reaches ----------------------------------------------------------


@contextlib.contextmanager
def greeter_in_the_networks_namespace(port: int) -> Iterator[None]:
    """A greeter on every address of the network's namespace N (as if something in N
    listened there)."""
    process = subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{keeper_pid()}/ns/net",
            attacker.PYTHON,
            "-c",
            LISTEN_AND_GREET,
            str(port),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        yield
    finally:
        process.kill()
        process.wait()


def _denied(host_port: int, loopback_port: int) -> None:
    other = store.create_network("attack-other")
    try:
        with (
            sandkit.Container("host", network="bridge") as server,
            sandkit.Container("host", network="bridge", egress=["0.0.0.0/0"]) as wide,
            sandkit.Container("host", network="bridge") as neighbour,
            sandkit.Container("host", network=other.name) as stranger,
        ):
            listening = server.spawn([attacker.PYTHON, "-c", LISTEN_AND_GREET, "7000"], stdin=False)
            assert listening.stdout is not None and listening.stdout.read() == b"ready\n"
            for container in (wide, neighbour):
                for address, port in (
                    (host_address(), host_port),
                    ("169.254.88.1", loopback_port),  # pasta's side of N's uplink
                    ("169.254.169.254", 80),
                    ("10.88.0.1", 22),  # N: the gateway
                    ("169.254.88.2", 22),  # N: its uplink's address
                ):
                    assert run(container, "connect", address, port) == "refused", address
            assert run(stranger, "connect", address_of(server), 7000) == "refused"
            assert run(stranger, "connect", "10.88.0.1", 53) == "refused"
            # the control: a neighbour on the same network gets through
            assert run(neighbour, "connect", address_of(server), 7000) == "connected hello"
    finally:
        wait_until(lambda: not store.keeper_running(other.directory()), "its keeper's end")
        store.remove_network(other.name)


def test_denied_destinations_are_refused_at_once(in_mode):
    """Whatever the policy (here even 0.0.0.0/0), a container is refused at once by the
    host's own address, its loopback seen through pasta's gateway, the metadata address, the
    network's namespace, and a container of another network."""
    with (
        greeting_server(host_address()) as host_port,
        greeting_server("127.0.0.1") as loopback_port,
    ):
        in_mode(_denied, host_port, loopback_port)


def _a_slots_next_container(host_port: int) -> None:
    with containers(1):  # the keeper stays up: the address is given again
        with sandkit.Container("host", network="bridge", egress=[host_address()]) as opener:
            address = address_of(opener)
            assert run(opener, "connect", host_address(), host_port).startswith("connected")
        with contextlib.ExitStack() as comers:
            comer = _container_at(comers, address)
            assert run(comer, "connect", host_address(), host_port) == "refused"


def test_the_next_container_of_an_address_never_inherits_its_egress():
    """A container whose policy opens the host's address leaves its chain behind (replaced
    only at that address's next attach, see firewall.EgressTables): the next container given
    its address, on the default policy, is refused by the host all the same."""
    with greeting_server(host_address()) as host_port:
        _a_slots_next_container(host_port)


def _default_to_own_and_back(host_port: int) -> list[str]:
    seen = []
    with containers(2) as stack:
        swapped, neighbour = stack.started
        seen.append(run(swapped, "connect", host_address(), host_port))
        swapped.set_egress([host_address()])  # a chain of its own
        seen.append(run(swapped, "connect", host_address(), host_port))
        seen.append(run(neighbour, "connect", host_address(), host_port))  # still the default
        swapped.set_egress("all")  # back to the shared chain
        seen.append(run(swapped, "connect", host_address(), host_port))
    return seen


def test_set_egress_moves_a_container_off_the_shared_chain_and_back(in_mode):
    """A container on the default policy has no chain of its own: set_egress makes one (and
    its jump), and setting "all" again removes it, each in one transaction; its neighbour on
    the shared chain is refused by the host throughout."""
    with greeting_server(host_address()) as host_port:
        seen = in_mode(_default_to_own_and_back, host_port)
    assert [s.split()[0] for s in seen] == ["refused", "connected", "refused", "refused"]


def test_a_shorter_denied_list_opens_nothing_for_the_neighbours():
    """The default policy's chain is shared: an attach that brings a shorter always-denied list
    (a host process that lists fewer addresses) must not open the host to the containers
    already on it (the chain refuses what any of them was told to refuse)."""
    with (
        greeting_server(host_address()) as host_port,
        sandkit.Container("host", network="bridge") as neighbour,
        netns_process() as pid,
    ):
        assert run(neighbour, "connect", host_address(), host_port) == "refused"
        connection = client.join(store.BRIDGE)
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            protocol.send(connection._sock, attach_request("shorter"), [fd])
            received_reply = protocol.receive(connection._sock)
            assert received_reply is not None and "address" in received_reply[0]
            assert run(neighbour, "connect", host_address(), host_port) == "refused"
        finally:
            os.close(fd)
            connection.close()


def test_the_hosts_loopback_stays_out_of_reach_even_when_named(in_mode):
    """pasta could map its gateway to the host's loopback (sandkit starts it with
    --no-map-gw): a policy that names the gateway and loopback literally still reaches
    nothing on the host's loopback."""
    with greeting_server("127.0.0.1") as port:
        reached = in_mode(_named_loopback, port)
    assert not any(outcome.startswith("connected") for outcome in reached), reached


def _named_loopback(port: int) -> list[str]:
    named = ["169.254.88.1", "127.0.0.1", "169.254.88.2"]
    with sandkit.Container("host", network="bridge", egress=named) as container:
        return [run(container, "connect", address, port) for address in named]


def test_nothing_listening_in_the_networks_namespace_is_reached():
    with containers(1) as stack, greeter_in_the_networks_namespace(7777):
        (container,) = stack.started
        for address in ("10.88.0.1", "169.254.88.2"):  # the gateway, N's uplink address
            assert run(container, "connect", address, 7777) == "refused", address
        # the control: the resolver, there too, answers
        assert ask(container, container.hostname, "tcp") == f"NOERROR {address_of(container)}"


LISTEN_AND_GREET = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello")
    c.close()
"""


# --- wearing the keeper down -----------------------------------------------------------------


def test_answers_a_container_never_reads_do_not_freeze_the_keeper(upstream):
    """A opens ever more TCP connections to the resolver (more than the keeper takes at once),
    each asking for a 56 KB answer that A never reads; the keeper goes on answering B, and
    attaching and answering C over TCP, meanwhile."""
    with containers(2) as stack:
        a, b = stack.started
        holder = a.spawn(
            attacker.argv("dns-hold", "10.88.0.1", "big.example", keeper.MAX_DNS_TCP + 8),
            stdin=False,
        )
        try:
            assert holder.stdout is not None and holder.stdout.read() == b"held\n"
            wait_until(
                lambda: len(upstream.asked) >= keeper.MAX_DNS_TCP_PER_CLIENT,
                "the keeper to forward A's queries",
            )
            assert ask(b, a.hostname) == f"NOERROR {address_of(a)}"
            with sandkit.Container("host", network="bridge") as c:
                rcode, *addresses = ask(c, "big.example", "tcp").split()
                assert rcode == "NOERROR" and len(addresses) == Upstream.BIG
        finally:
            holder.kill()


def test_a_flood_of_queries_leaves_the_others_their_share(upstream):
    """A floods the resolver with queries the upstream never answers (more than the keeper
    keeps waiting at once); B's query, asked after them, is still forwarded and answered."""
    with containers(2) as stack:
        a, b = stack.started
        assert run(a, "dns-flood", "10.88.0.1", "flood", resolver.MAX_PENDING + 44) == "sent"
        assert ask(b, "other.example") == "NOERROR 192.0.2.99"


def _header(flags: int, questions: int) -> bytes:
    return (0x1234).to_bytes(2, "big") + flags.to_bytes(2, "big") + questions.to_bytes(2, "big")


MALFORMED = {
    "empty": b"",
    "one byte": b"\x01",
    "a header only, claiming a question": _header(0x0100, 1) + bytes(6),
    "a name pointing at itself": _header(0x0100, 1) + bytes(6) + b"\xc0\x0c\x00\x01\x00\x01",
    "a name longer than 255": _header(0x0100, 1)
    + bytes(6)
    + (b"\x3f" + b"a" * 63) * 5
    + b"\x00\x00\x01\x00\x01",
    "an answer, not a query": _header(0x8180, 1) + bytes(6) + b"\x01a\x00\x00\x01\x00\x01",
    "two questions": _header(0x0100, 2) + bytes(6) + b"\x01a\x00\x00\x01\x00\x01" * 2,
    "a question of no class": _header(0x0100, 1) + bytes(6) + b"\x01a\x01b\x00\x00\x01",
    "4000 random bytes": os.urandom(4000),
    "larger than any query": _header(0x0100, 1) + bytes(6) + os.urandom(8000),
}


def test_malformed_queries_break_nothing(upstream):
    with containers(2) as stack:
        a, b = stack.started
        for name, wire in MALFORMED.items():
            assert run(a, "dns-raw", "10.88.0.1", wire.hex()) == "sent", name
        assert ask(a, b.hostname) == f"NOERROR {address_of(b)}"
        assert ask(a, "after.example", "tcp") == "NOERROR 192.0.2.99"
    assert upstream.asked == ["after.example."]


# --- another local user ----------------------------------------------------------------------


def _reach_keeper(directory: str) -> str:
    """As another user: list the network's directory and connect to its keeper."""
    outcomes = []
    try:
        os.listdir(directory)
        outcomes.append("listed")
    except PermissionError:
        outcomes.append("denied")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(os.path.join(directory, keeper.SOCKET_NAME))
            outcomes.append("connected")
        except PermissionError:
            outcomes.append("denied")
    return " ".join(outcomes)


def test_another_user_cannot_reach_the_keeper(as_unprivileged):
    """The network's directory is private; and the keeper's socket refuses another user by
    itself, even with every directory above it opened and whatever the umask of the process
    that started the keeper."""
    umask = os.umask(0)
    try:
        with sandkit.Container("host", network="bridge"):
            directory = store.BRIDGE.directory()
            above = [directory.parent.parent, directory.parent, directory]
            assert [os.stat(path).st_mode & 0o077 for path in above] == [0, 0, 0]
            assert as_unprivileged(_reach_keeper, os.fspath(directory)) == "denied denied"
            modes = {path: os.stat(path).st_mode & 0o7777 for path in above}
            try:
                for path in above:
                    os.chmod(path, 0o755)
                assert as_unprivileged(_reach_keeper, os.fspath(directory)) == "listed denied"
            finally:
                for path, mode in modes.items():
                    os.chmod(path, mode)
    finally:
        os.umask(umask)


# --- nothing stays behind ----------------------------------------------------------------------


def networks_namespace_state() -> dict[str, str]:
    """What N holds besides the bridge and the uplink: container ports, their bridge rules
    (those of address slots without a port stay by design, see portguard), their egress chains
    (read in N)."""
    links = in_keepers_netns("ip", "-o", "link", "show", "master", "sk0")
    ports = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    return {
        "ports": " ".join(ports),
        "bridge rules": " ".join(
            line
            for line in in_keepers_netns("ebtables-save").splitlines()
            if any(f"P-{port} " in f"{line} " for port in ports)
        ),
        "egress chains": " ".join(
            line
            for line in in_keepers_netns("iptables-save", "-t", "filter").splitlines()
            if line.startswith(":E")
        ),
    }


def test_a_container_that_dies_mid_attach_leaves_nothing_in_the_network():
    """The container's namespace is gone by the time its interface is made (only the fd the
    host passed keeps it), and then its host side goes: its port, rules and chain all go,
    while a neighbour stays attached."""
    with sandkit.Container("host", network="bridge") as neighbour:
        before = networks_namespace_state()
        with netns_process() as pid:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            connection = client.join(store.BRIDGE)
            try:
                connection.attach(fd, "dying", [])
                assert networks_namespace_state() != before
            finally:
                os.close(fd)  # the last reference to the dead container's namespace
                connection.close()
            wait_until(lambda: networks_namespace_state() == before, "N to be as before")
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        assert ask(neighbour, neighbour.hostname) == f"NOERROR {address_of(neighbour)}"


def _attach_and_die(netns_path: str) -> None:
    """In a child: join, ask for an attach, and be killed before the answer comes."""
    connection = client.join(store.BRIDGE)
    fd = os.open(netns_path, os.O_RDONLY)
    protocol.send(connection._sock, attach_request("killed"), [fd])
    os.kill(os.getpid(), signal.SIGKILL)


def attach_request(name: str) -> dict:
    return {
        "op": "attach",
        "id": "f" * 64,
        "name": name,
        "aliases": [],
        "iface": "eth0",
        "egress": egress.ResolvedEgress(allow_all=True).to_json(),
        "denied": [],
    }


def test_a_host_process_killed_mid_attach_leaves_nothing_in_the_network():
    with sandkit.Container("host", network="bridge"), netns_process() as pid:
        before = networks_namespace_state()
        child = os.fork()
        if child == 0:
            try:
                _attach_and_die(f"/proc/{pid}/ns/net")
            finally:
                os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        wait_until(lambda: networks_namespace_state() == before, "N to be as before")
        assert "eth0" not in in_netns(pid, "ip", "-o", "link").stdout


def keepers_children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _kill_the_keeper() -> None:
    with sandkit.Container("host", network="bridge") as orphan:
        connection = client.join(store.BRIDGE)
        try:
            keeper_process = keeper_pid()
            children = keepers_children(keeper_process)
            assert children  # pasta
            os.kill(keeper_process, signal.SIGKILL)
            wait_until(lambda: not any(alive(child) for child in children), "pasta to end")
            wait_until(
                lambda: orphan.exec(["ip", "link", "show", "eth0"]).exit_code != 0,
                "the container's interface to go",
            )
            # (any namespace: the request never reaches a keeper)
            fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with pytest.raises(errors.NetworkError, match="keeper"):
                    connection.attach(fd, "late", [])
            finally:
                os.close(fd)
        finally:
            connection.close()
        with sandkit.Container("host", network="bridge") as newcomer:
            assert ask(newcomer, newcomer.hostname) == f"NOERROR {address_of(newcomer)}"
            assert ask(newcomer, "out.example") == "NOERROR 192.0.2.99"


def test_sigkill_of_the_keeper(in_mode, upstream):
    """pasta goes with the keeper; a container on the network loses its interface; the host's
    next attach through its connection is a clear NetworkError; a new keeper starts cleanly."""
    in_mode(_kill_the_keeper)


def test_a_neighbour_cannot_sniff_traffic_for_a_container_the_bridge_forgot():
    """A learning bridge forgets a quiet container's MAC (after 300 s; here at once) and then
    floods what comes for it to every port, where a raw socket (NET_RAW) reads it. A sniffs
    while C sends B a secret: B gets it, A never sees it."""
    with containers(3) as stack:
        a, b, c = stack.started
        with udp_listener(b, 9999) as listener:
            run(c, "udp", address_of(b), 9999, "first")  # C knows B's MAC
            sniffer = a.spawn(attacker.argv("sniff", "secret-for-b", "end-of-test"), stdin=False)
            assert sniffer.stdout is not None and sniffer.stdout.read() == b"ready\n"
            b_mac = run(b, "mac")
            in_keepers_netns("ip", "link", "set", "sk0", "type", "bridge", "ageing_time", "10")
            wait_until(lambda: not learned(b_mac), "the bridge to forget B's MAC")
            run(c, "udp", address_of(b), 9999, "secret-for-b")
            run(c, "udp", address_of(a), 9, "end-of-test")
            assert sniffer.wait(10) == 0
            assert b"".join(iter(sniffer.stdout.read, b"")) == b"nothing\n"
            run(c, "udp", address_of(b), 9999, "end")
            assert received(listener)[1:] == [
                f"{address_of(c)} secret-for-b",
                f"{address_of(c)} end",
            ]


def learned(mac: str) -> bool:
    """Whether N's bridge has a learned (not a static) entry for ``mac``."""
    entries = in_keepers_netns("bridge", "fdb", "show", "br", "sk0").splitlines()
    return any(
        mac in entry and "static" not in entry and "permanent" not in entry for entry in entries
    )


def test_egress_is_checked_before_anything_is_made():
    with pytest.raises(
        errors.NetworkSpecError, match="egress= applies to a container on a network"
    ):
        sandkit.Container("host", egress=[])
    with pytest.raises(errors.EgressError, match="invalid egress entry"):
        sandkit.Container("host", network="bridge", egress=["10.0.0.1/8"])


def test_without_ebtables_a_container_is_refused_with_the_fix(tmp_path, monkeypatch):
    """A host without ebtables-nft-restore (Debian's iptables package) cannot pin ports: the
    start fails naming the package, and the keeper it started ends."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    # (the keeper is forked: it sees the change)
    monkeypatch.setattr(portguard, "_PROGRAMS", ("no-such-ebtables-nft-restore",))
    with pytest.raises(
        errors.NetworkError, match=r"ebtables-nft-restore.*apt-get install iptables"
    ):
        sandkit.Container("host", network="bridge").start()
    wait_until(lambda: not store.keeper_running(store.BRIDGE.directory()), "the keeper's end")
