"""The init configures the interface the host moved into the container's network namespace (a
veth end on a sandkit network): at set-up (setup.net) and on a running, confined container (the
netif request). Against the real kernel, through the init harness (tests/init_harness.py): two
inits joined by a veth pair the test makes, root and rootless, and real TCP traffic between them."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import init_harness as H
from polling import POLL_SH, wait_until

from sandkit.security import capabilities
from sandkit.security import seccomp as seccomp_profiles

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, veth)"),
]

CAP_NET_ADMIN = 12


@pytest.fixture(scope="session", autouse=True)
def built():
    return H.build_init()


def init_pid(i: H.Init) -> int:
    """The init's pid on the host: the only child of the `unshare --fork` the harness runs."""
    children = Path(f"/proc/{i.proc.pid}/task/{i.proc.pid}/children")
    wait_until(lambda: children.read_text().split(), "the init to be forked")
    return int(children.read_text().split()[0])


def join(a: H.Init, b: H.Init) -> None:
    """A veth pair with one end, eth0, in each container's network namespace (as the network
    keeper puts one end in a container): it goes when the namespaces do."""
    subprocess.run(
        [
            *("ip", "link", "add", "eth0", "netns", str(init_pid(a)), "type", "veth"),
            *("peer", "name", "eth0", "netns", str(init_pid(b))),
        ],
        check=True,
    )


def net(address: str, gateway: str | None = None, **over) -> dict:
    interface = {"iface": "eth0", "address": address, "prefix": 24, "mtu": 1400}
    if gateway:
        interface["gateway"] = gateway
    return {**interface, **over}


@pytest.fixture(params=[False, True], ids=["root", "rootless"])
def pair(request):
    a, b = H.Init(rootless=request.param), H.Init(rootless=request.param)
    try:
        join(a, b)
        yield a, b
    finally:
        a.close()
        b.close()


def route_hex(address: str) -> bytes:
    """An IPv4 address as /proc/net/route shows it: its 32 bits in hex, as the host stores them."""
    return b"%08X" % int.from_bytes(socket.inet_aton(address), sys.byteorder)


def sh(i: H.Init, script: str, **kw) -> bytes:
    r = i.capture(["sh", "-c", script], **kw)
    assert r["exit"] and r["exit"].get("code") == 0, r
    return r["stdout"]


def tcp_hello(server: H.Init, client: H.Init, address: str) -> None:
    """A TCP connection from ``client`` to a listener in ``server`` at ``address``: what the
    listener reads is what the client sent."""
    # busybox's nc ends at the end of its stdin, even with a connection whose data it has not
    # read yet: a fifo it opens read-write (no writer ever closes it) keeps it on the socket.
    listen = "mkfifo /tmp/in && exec nc -l -p 8080 <> /tmp/in"
    reply, (out, err) = server.start(["sh", "-c", listen])
    assert reply["t"] == "started", reply
    connect = POLL_SH.format(condition=f"echo hello-over-veth | nc {address} 8080")
    sh(client, connect)
    assert H.read_all(out) == b"hello-over-veth\n"
    H.read_all(err)
    server.wait_exit(reply["id"])


def test_setup_net_configures_address_mtu_up_and_default_route(pair):
    a, b = pair
    assert a.setup(loopback=True, net=net("10.99.0.2", gateway="10.99.0.1"))["t"] == "ready"
    assert b.setup(loopback=True, net=net("10.99.0.3", mtu=9000))["t"] == "ready"
    link = sh(a, "ip addr show eth0")
    assert b"inet 10.99.0.2/24 " in link and b"mtu 1400 " in link and b",UP," in link
    # the kernel's routing table: the default route (destination 0) through 10.99.0.1 on eth0
    # (addresses in hex, in the host's byte order: 10.99.0.1 is 0100630A on x86)
    routes = [line.split()[:3] for line in sh(a, "cat /proc/net/route").splitlines()[1:]]
    assert [b"eth0", b"00000000", route_hex("10.99.0.1")] in routes
    assert b"mtu 9000 " in sh(b, "ip link show eth0")
    assert b"default" not in sh(b, "ip route")  # no gateway given, no default route
    tcp_hello(a, b, "10.99.0.2")


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_a_missing_interface_is_a_setup_error_naming_it(rootless):
    i = H.Init(rootless=rootless)
    try:
        reply = i.setup(loopback=True, net=net("10.99.0.2"))
        assert reply["t"] == "error" and reply["errno"] == errno.ENODEV
        assert "no interface eth0" in reply["msg"]
        assert i.proc.wait(10) == 1
    finally:
        i.close()


@pytest.mark.parametrize(
    ("over", "text"),
    [
        ({"address": "10.99.0.300"}, '"address" is not an IPv4 address'),
        ({"gateway": "fe80::1"}, '"gateway" is not an IPv4 address'),
        ({"prefix": 33}, '"prefix" must be 0 to 32'),
        ({"mtu": 10}, '"mtu" must be 68 to 65535'),
        ({"iface": "../eth0"}, '"iface" is not an interface name'),
        ({"iface": "x" * 16}, '"iface" is not an interface name'),
    ],
)
def test_a_bad_net_map_is_a_clear_error(over, text):
    i = H.Init()
    try:
        reply = i.setup(loopback=True, net={**net("10.99.0.2"), **over})
        assert reply["t"] == "error" and text in reply["msg"], reply
    finally:
        i.close()


def test_net_needs_a_network_namespace_of_the_containers_own():
    i = H.Init()
    try:
        reply = i.setup(net=net("10.99.0.2"))
        assert reply["t"] == "error" and '"net" needs a network namespace' in reply["msg"]
    finally:
        i.close()


def test_netif_configures_an_interface_of_a_running_confined_container(pair):
    """The init has dropped CAP_NET_ADMIN from its bounding set (Docker's default capabilities)
    and runs under the default seccomp profile, and still configures the interface: it keeps its
    effective capabilities and a socket opened before the confinement."""
    a, b = pair
    caps = capabilities.DOCKER_DEFAULT_MASK
    profile = seccomp_profiles.resolve_seccomp("default", caps)
    assert a.setup(loopback=True, caps=caps, seccomp=profile)["t"] == "ready"
    assert b.setup(loopback=True, net=net("10.99.0.3"))["t"] == "ready"
    status = dict(line.split(":\t") for line in sh(a, "cat /proc/1/status").decode().splitlines())
    assert not int(status["CapBnd"], 16) & 1 << CAP_NET_ADMIN and status["Seccomp"] == "2"
    reply, _ = a.request({"t": "netif", "net": net("10.99.0.2", gateway="10.99.0.3")})
    assert reply == {"t": "ok", "id": reply["id"]}
    assert b"inet 10.99.0.2/24 " in sh(a, "ip addr show eth0")
    assert b"default via 10.99.0.3 dev eth0" in sh(a, "ip route")
    tcp_hello(b, a, "10.99.0.3")
    # an interface the container does not have: an error naming it, and the init serves on
    reply, _ = a.request({"t": "netif", "net": net("10.99.1.2", iface="eth1")})
    assert reply["t"] == "error" and reply["errno"] == errno.ENODEV and "eth1" in reply["msg"]
    assert a.request({"t": "ping"})[0]["t"] == "pong"


def test_netif_is_refused_without_a_network_namespace_of_the_containers_own():
    """A container on the host's network ("loopback" false) never has an interface configured:
    that would be the host's."""
    i = H.Init()
    try:
        assert i.setup()["t"] == "ready"
        reply, _ = i.request({"t": "netif", "net": net("10.99.0.2")})
        assert reply["t"] == "error" and reply["errno"] == errno.EOPNOTSUPP
        assert "no network namespace of its own" in reply["msg"]
    finally:
        i.close()
