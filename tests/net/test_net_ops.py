"""A running container's networks: `set_egress`, `connect` and `disconnect`, root and
rootless, against real connections (the attacker script's "connect" says what a program in the
container gets: "connected ...", "refused" at once, or "timeout")."""

from __future__ import annotations

import os
import threading

import pytest
import trio
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.net import client, store

from . import attacker
from .helpers import greeting_server, host_address
from .test_attacks import (  # noqa: F401 - fixtures
    ask,
    in_mode,
    resolve_allowed_example,
    run,
    upstream,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes networks as root and as another user"),
]

GREETED = "connected hello from the host"


def _connect_before_and_after_swaps(address: str, port: int) -> list[str]:
    seen = []
    with sandkit.Container("host", network="bridge", egress=[address]) as c:
        seen.append(run(c, "connect", address, port))
        c.set_egress([])
        seen.append(run(c, "connect", address, port))
        c.set_egress([f"{address}:{port}/tcp"])
        seen.append(run(c, "connect", address, port))
    return seen


def test_set_egress_takes_effect_at_once_both_ways(in_mode):
    address = host_address()
    with greeting_server(address) as port:
        assert in_mode(_connect_before_and_after_swaps, address, port) == [
            GREETED,
            "refused",
            GREETED,
        ]


def _async_swap(address: str, port: int) -> list[str]:
    async def main() -> list[str]:
        async with sandkit.AsyncContainer("host", network="bridge", egress=[]) as c:
            connect = attacker.argv("connect", address, port)
            before = (await c.exec(connect)).stdout.decode().strip()
            await c.set_egress([address])
            return [before, (await c.exec(connect)).stdout.decode().strip()]

    return trio.run(main)


def test_set_egress_async(in_mode):
    address = host_address()
    with greeting_server(address) as port:
        assert in_mode(_async_swap, address, port) == ["refused", GREETED]


def _dns_follows_the_policy() -> list[str]:
    with sandkit.Container("host", network="bridge", egress=[]) as c:
        answers = [ask(c, "allowed.example")]
        c.set_egress(["allowed.example:443"])
        answers.append(ask(c, "allowed.example"))
        c.set_egress([])
        answers.append(ask(c, "allowed.example"))
    return answers


def test_the_resolver_follows_set_egress(in_mode, upstream, monkeypatch):
    resolve_allowed_example(monkeypatch)
    assert in_mode(_dns_follows_the_policy) == ["REFUSED", "NOERROR 192.0.2.99", "REFUSED"]


def test_a_bad_policy_is_refused_and_the_old_one_stays():
    address = host_address()
    with (
        greeting_server(address) as port,
        sandkit.Container("host", network="bridge", egress=[address]) as c,
    ):
        with pytest.raises(errors.EgressError, match="accepted forms"):
            c.set_egress(["10.0.0.1/8"])
        with pytest.raises(errors.EgressError):
            c.set_egress(["no-such-host.invalid"])
        assert run(c, "connect", address, port) == GREETED


def test_set_egress_without_a_network_says_what_to_do():
    with sandkit.Container("host") as c:
        with pytest.raises(errors.NetworkSpecError, match=r"on no network.*connect"):
            c.set_egress([])
        assert c.exec(["true"]).exit_code == 0
    with pytest.raises(errors.ContainerNotRunningError):
        c.set_egress([])


# --- connect and disconnect ------------------------------------------------------------------

# A TCP server in a container of the host image that greets each connection, and says when it
# listens.
GREETER = [
    "/usr/bin/python3",
    "-c",
    "import socket\n"
    "s = socket.create_server(('0.0.0.0', 7000))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello from the peer'); c.close()\n",
]


def _started_greeter(container: sandkit.Container) -> sandkit.Process:
    process = container.spawn(GREETER, stdin=False)
    assert process.stdout is not None
    assert process.stdout.read() == b"ready\n"
    return process


def _addresses(container: sandkit.Container, iface: str) -> str:
    return container.exec(["sh", "-c", f"ip -o -4 addr show {iface} 2>&1"]).stdout.decode()


def _interfaces(container: sandkit.Container) -> set[str]:
    table = container.exec(["cat", "/proc/net/dev"]).stdout.decode()
    return {row.split(":")[0].strip() for row in table.splitlines()[2:]}


def test_connect_then_disconnect_a_running_container(clean_host):
    with sandkit.Network() as net:  # noqa: SIM117 - the network outlives its containers
        with (
            sandkit.Container("host", network=net, hostname="peer") as peer,
            sandkit.Container("host", network="bridge", hostname="mover") as mover,
        ):
            _started_greeter(peer)
            on_bridge = mover.networks["bridge"]
            mover.connect(net, aliases=["extra"])
            address = mover.networks[net.name]
            assert mover.networks == {"bridge": on_bridge, net.name: address}
            assert f"inet {address}/{net.subnet.prefixlen}" in _addresses(mover, "eth1")
            # the first network keeps the default route
            route = mover.exec(["ip", "route", "show", "default"]).stdout.decode()
            assert route.startswith("default via 10.88.0.1 dev eth0")
            assert run(mover, "connect", peer.networks[net.name], 7000) == (
                "connected hello from the peer"
            )
            for name in ("extra", "mover"):
                assert run(peer, "dns", net.gateway, name, "udp").split() == ["NOERROR", address]

            mover.disconnect(net)
            assert mover.networks == {"bridge": on_bridge}
            assert _interfaces(mover) == {"lo", "eth0"}
            assert run(mover, "connect", peer.networks[net.name], 7000) != (
                "connected hello from the peer"
            )
            assert run(peer, "dns", net.gateway, "extra", "udp") == "NXDOMAIN"
            # and back, on the next interface
            mover.connect(net.name)
            assert f"inet {mover.networks[net.name]}/" in _addresses(mover, "eth2")
            assert run(mover, "connect", peer.networks[net.name], 7000) == (
                "connected hello from the peer"
            )


def test_a_container_without_a_network_gets_route_resolver_and_hosts(busybox, clean_host):
    address = host_address()
    with (
        greeting_server(address) as port,
        sandkit.Container(busybox, network="none", hostname="late") as c,
    ):
        c.connect("bridge", aliases=["later"])
        mine = c.networks["bridge"]
        seen = c.exec(["sh", "-c", "ip route show default; cat /etc/resolv.conf /etc/hosts"])
        text = seen.stdout.decode()
        assert text.startswith("default via 10.88.0.1 dev eth0")
        assert "nameserver 10.88.0.1\n" in text
        assert f"{mine}\tlate later\n" in text
        c.set_egress([address])  # the host's address: denied unless named
        greeted = c.exec(["sh", "-c", f"nc -w 3 {address} {port} </dev/null"], timeout=10)
        assert greeted.stdout.decode() == "hello from the host"


def test_connect_and_disconnect_refusals_leave_the_container_as_it_was(busybox, clean_host):
    with (
        sandkit.Network() as net,
        sandkit.Container(busybox, network="bridge") as c,
        sandkit.Container("host", network="host") as on_host,
    ):
        before = c.networks
        with pytest.raises(errors.NetworkNotFoundError):
            c.connect("nosuch")
        for special in ("none", "host"):
            with pytest.raises(errors.NetworkSpecError, match="'bridge' or a user network"):
                c.connect(special)
        with pytest.raises(errors.NetworkError, match="already connected to network 'bridge'"):
            c.connect("bridge")
        with pytest.raises(errors.NetworkSpecError, match="alias"):
            c.connect(net, aliases=["no spaces"])
        with pytest.raises(errors.NetworkError, match=f"not connected to network '{net.name}'"):
            c.disconnect(net)
        with pytest.raises(errors.NetworkError, match="uses the host's network"):
            on_host.connect(net)
        assert c.networks == before
        assert _interfaces(c) == {"lo", "eth0"}
    with pytest.raises(errors.ContainerNotRunningError):
        c.connect("bridge")


def test_a_failed_connect_takes_the_interface_away_again(clean_host):
    """The host image binds the host's own /etc/hosts and /etc/resolv.conf read-only: the first
    network of a container of it started without one cannot write its own there."""
    with sandkit.Container("host", network="none") as c:
        with pytest.raises(errors.NetworkError, match="cannot take the network's /etc/hosts"):
            c.connect("bridge")
        assert c.networks == {}
        wait_until(lambda: _interfaces(c) == {"lo"}, "eth0 taken away")


def _rootless_refusal(image) -> tuple[str, str, dict[str, str]]:
    with sandkit.Network() as net:
        with sandkit.Container(image, network="bridge") as on_bridge:
            with pytest.raises(errors.NetworkError) as refused:
                on_bridge.connect(net)
            networks = on_bridge.networks
            assert on_bridge.exec(["true"]).exit_code == 0
            # the network it started on, it may leave
            on_bridge.disconnect("bridge")
            assert on_bridge.networks == {}
            assert _interfaces(on_bridge) == {"lo"}
        with sandkit.Container(image) as alone, pytest.raises(errors.NetworkError) as too:
            alone.connect("bridge")
    return str(refused.value), str(too.value), networks


def test_rootless_refuses_another_network_and_says_why(as_unprivileged, open_tun, users_busybox):
    refused, too, networks = as_unprivileged(_rootless_refusal, users_busybox)
    assert list(networks) == ["bridge"]
    for message in (refused, too):
        assert "rootless container cannot join network" in message
        assert "start the container with network=" in message


def _async_connect(image) -> list[object]:
    async def main() -> list[object]:
        async with sandkit.AsyncContainer(image, network="none") as c:
            await c.connect("bridge")
            seen: list[object] = [list(c.networks)]
            await c.disconnect("bridge")
            return [*seen, c.networks]

    return trio.run(main)


def test_connect_and_disconnect_async(busybox, clean_host):
    assert _async_connect(busybox) == [["bridge"], {}]


# --- the gateway's MAC -----------------------------------------------------------------------


def _gateway_mac(container: sandkit.Container, gateway: object) -> str:
    """The gateway's MAC in ``container``'s ARP cache, after a query to its resolver."""
    assert run(container, "dns", gateway, container.hostname, "udp").startswith("NOERROR")
    arp = container.exec(["cat", "/proc/net/arp"]).stdout.decode()
    return next(row.split()[3] for row in arp.splitlines()[1:] if row.split()[0] == str(gateway))


def test_the_gateways_mac_stays_while_containers_come_and_go(clean_host):
    """A bridge without a MAC of its own takes its ports' lowest: each container joining with a
    lower one changed the gateway's MAC, and one leaving changed it back under its neighbours'
    ARP caches, whose traffic out of the network then stalled for seconds."""
    with sandkit.Network() as net:  # noqa: SIM117 - the network outlives its containers
        with sandkit.Container("host", network=net, hostname="stays") as first:
            seen = {_gateway_mac(first, net.gateway)}
            for _ in range(8):
                with sandkit.Container("host", network=net, hostname="comes") as other:
                    seen.add(_gateway_mac(other, net.gateway))
                # answered at once (within the 5 s the attacker script waits), as before
                assert _gateway_mac(first, net.gateway) in seen
    assert len(seen) == 1


def _listed(network: sandkit.Network) -> list[tuple[str, str]]:
    return client.attached_containers(store.get_network(network.name))


def test_the_keeper_lists_its_containers_to_a_probe(clean_host):
    with sandkit.Network() as net:
        assert _listed(net) == []  # no keeper: nothing started for the asking
        with sandkit.Container("host", network=net, hostname="listed") as c:
            assert _listed(net) == [("listed", c.networks[net.name])]
        wait_until(lambda: _listed(net) == [], "the keeper's end")


def test_connects_at_once_to_one_network_join_it_once(busybox, clean_host):
    """Two threads connect one container to one network at the same time: one joins, the other
    is told it is connected already, and no second keeper connection is left behind."""
    outcomes: list[str] = []

    def connect(container: sandkit.Container) -> None:
        try:
            container.connect("bridge")
            outcomes.append("joined")
        except errors.NetworkError as exc:
            outcomes.append(str(exc))

    with sandkit.Container(busybox, network="none") as c:
        threads = [threading.Thread(target=connect, args=(c,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes)[1] == "joined"
        assert "already connected to network 'bridge'" in sorted(outcomes)[0]
        assert _interfaces(c) == {"lo", "eth0"}
