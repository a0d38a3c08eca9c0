"""Network definitions (sandkit/net/store.py) and the public `sandkit.Network` over them.

Expected values come from Docker's behaviour: names follow its rule ([a-zA-Z0-9][a-zA-Z0-9_.-]*),
"bridge", "host" and "none" cannot be created, a name is unique, a network in use cannot be
removed, and ids are 64 hex digits whose unique prefix finds the network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

import pytest

import sandkit
from sandkit.net import store


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))


def test_create_list_get_remove():
    record = store.create_network("db-net")
    assert len(record.id) == 64 and int(record.id, 16) >= 0
    assert [r.name for r in store.list_networks()] == ["bridge", "db-net"]
    assert store.get_network("db-net") == record
    assert store.get_network(record.id[:5]) == record
    store.remove_network("db-net")
    assert [r.name for r in store.list_networks()] == ["bridge"]
    with pytest.raises(sandkit.NetworkNotFoundError, match="network create"):
        store.get_network("db-net")


def test_subnets_are_distinct_and_the_gateway_is_the_first_address():
    first, second = store.create_network("a"), store.create_network("b")
    assert not first.subnet.overlaps(second.subnet)
    assert not first.subnet.overlaps(store.BRIDGE.subnet)
    assert first.gateway == first.subnet.network_address + 1
    chosen = store.create_network("c", subnet="10.200.7.0/24")
    assert chosen.subnet == ipaddress.IPv4Network("10.200.7.0/24")
    with pytest.raises(sandkit.NetworkSpecError, match="overlaps network 'c'"):
        store.create_network("d", subnet="10.200.7.128/25")
    assert [r.name for r in store.list_networks()] == ["bridge", "a", "b", "c"]


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.0.0.1/24", "has host bits set"),
        ("fd00::/64", "IPv6"),
        ("10.0.0.0/30", "too small"),
        ("nonsense", "invalid subnet"),
    ],
)
def test_bad_subnets_are_refused_and_leave_nothing(subnet, message):
    with pytest.raises(sandkit.NetworkSpecError, match=message):
        store.create_network("x", subnet=subnet)
    assert [r.name for r in store.list_networks()] == ["bridge"]


@pytest.mark.parametrize("name", ["bridge", "host", "none", "", "-x", "a b", "a/b", "x" * 65])
def test_names_docker_refuses_are_refused(name):
    with pytest.raises(sandkit.NetworkSpecError):
        store.create_network(name)
    with pytest.raises(sandkit.NetworkSpecError):
        sandkit.Network(name)


def test_a_name_is_unique():
    store.create_network("twice")
    with pytest.raises(sandkit.NetworkExistsError, match="exists already"):
        store.create_network("twice")


def test_the_default_network_always_exists_and_stays():
    assert store.get_network("bridge").builtin
    with pytest.raises(sandkit.NetworkSpecError, match="cannot be removed"):
        store.remove_network("bridge")


@pytest.mark.slow
def test_a_network_with_a_keeper_is_in_use(tmp_path):
    """While something answers on the network's keeper socket (its containers' keeper), the
    network is in use; once nothing does, it can go."""
    record = store.create_network("busy")
    directory = record.directory()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as keeper:
        keeper.bind(os.fspath(store.keeper_socket(directory)))
        keeper.listen()
        with pytest.raises(sandkit.NetworkInUseError, match="stop them"):
            store.remove_network("busy")
    store.remove_network("busy")
    assert not directory.exists()


def test_the_network_directory_is_private():
    directory = store.create_network("private").directory()
    for path in (directory, directory.parent):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "network.json").st_mode) == 0o600


def test_network_object_creates_and_removes():
    with sandkit.Network() as net:
        assert net.name.startswith("sandkit-")
        assert store.get_network(net.name).id == net.id
        assert net.gateway in net.subnet
    assert [r.name for r in store.list_networks()] == ["bridge"]


def test_network_get_does_not_remove_what_it_did_not_make():
    store.create_network("kept")
    with sandkit.Network.get("kept") as net:
        assert net.name == "kept"
    assert store.get_network("kept").name == "kept"
    assert [n.name for n in sandkit.Network.all()] == ["bridge", "kept"]


@pytest.mark.trio
async def test_async_network():
    async with sandkit.AsyncNetwork("anet", internal=True) as net:
        assert store.get_network("anet").internal
        assert net.internal
    assert [r.name for r in store.list_networks()] == ["bridge"]
