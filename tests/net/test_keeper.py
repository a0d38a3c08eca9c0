"""The network keeper against network namespaces the tests make (root): addresses, names, the
path out through pasta, isolation, and nothing left on the host however the host side ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

import pytest
from images.smallfs import small_tmpfs
from polling import wait_until

from sandkit import errors
from sandkit.net import client, egress, protocol, store, uplink
from sandkit.net.keeper import SOCKET_NAME

from .helpers import (
    configure,
    connect,
    greeting_server,
    host_address,
    in_netns,
    keeper_pid,
    killed_host_process,
    netns_fd,
    netns_process,
    network_processes,
    query,
)
from .test_attacks import greeter_in_the_networks_namespace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root"),
]


def attach(
    connection: client.KeeperConnection, pid: int, name: str, aliases=(), policy=None
) -> dict:
    fd = netns_fd(pid)
    try:
        config = connection.attach(fd, name, list(aliases), policy=policy)
    finally:
        os.close(fd)
    configure(pid, config)
    return config


def egress_policy(entries: list[str]) -> egress.ResolvedEgress:
    return egress.EgressPolicy.parse(entries).resolve()


def test_attached_namespace_gets_address_names_and_the_way_out(clean_host):
    with netns_process() as pid, greeting_server(host_address()) as port:
        connection = client.join(store.BRIDGE)
        try:
            # The host's own address is always denied, unless named literally.
            config = attach(connection, pid, "alpha", ["db"], egress_policy([host_address()]))
            assert config["gateway"] == "10.88.0.1" and config["prefix"] == 16
            shown = in_netns(pid, "ip", "-o", "-4", "addr", "show", "eth0").stdout
            assert f"inet {config['address']}/16" in shown
            for transport in ("udp", "tcp"):
                assert query(pid, "10.88.0.1", "alpha", transport) == f"NOERROR {config['address']}"
                assert query(pid, "10.88.0.1", "DB", transport) == f"NOERROR {config['address']}"
            assert query(pid, "10.88.0.1", "nobody") == "NXDOMAIN"
            # out through pasta, to a server on the host's own (non-loopback) address
            reached = connect(pid, host_address(), port)
            assert reached.stdout.strip() == "hello from the host", reached.stderr
            # nothing in the network's namespace but the resolver answers a container, not
            # even a server listening there on all addresses
            with greeter_in_the_networks_namespace(22):
                refused = connect(pid, "10.88.0.1", 22)
            assert "ConnectionRefusedError" in refused.stderr
        finally:
            connection.close()


def test_two_on_a_network_reach_each_other_but_not_another_network(clean_host):
    other = store.create_network("other-net")
    try:
        with netns_process() as a, netns_process() as b, netns_process() as c:
            first, second = client.join(store.BRIDGE), client.join(store.BRIDGE)
            third = client.join(other)
            try:
                config_a = attach(first, a, "alpha")
                config_b = attach(second, b, "beta", ["web"])
                config_c = attach(third, c, "gamma")
                assert config_a["address"] != config_b["address"]
                assert query(a, "10.88.0.1", "web") == f"NOERROR {config_b['address']}"
                server = subprocess.Popen(
                    [
                        "nsenter",
                        f"--net=/proc/{b}/ns/net",
                        sys.executable,
                        "-c",
                        "import socket; s = socket.create_server(('0.0.0.0', 7000)); "
                        "c, _ = s.accept(); c.sendall(b'beta here')",
                    ]
                )
                try:
                    wait_until(
                        lambda: ":1B58" in in_netns(b, "cat", "/proc/net/tcp").stdout,
                        "the server in b to listen",
                    )
                    # c, on another network, gets nowhere (and does not know the name)
                    assert query(c, config_c["gateway"], "beta") == "NXDOMAIN"
                    blocked = connect(c, config_b["address"], 7000)
                    assert blocked.returncode != 0
                    assert connect(a, config_b["address"], 7000).stdout.strip() == "beta here"
                finally:
                    server.kill()
                    server.wait()
            finally:
                first.close()
                second.close()
                third.close()
    finally:
        wait_until(lambda: not store.keeper_running(other.directory()), "the keeper to exit")
        store.remove_network("other-net")


def test_keeper_stays_while_a_member_is_left_and_a_probe_is_not_one(clean_host):
    with netns_process() as a, netns_process() as b:
        first, second = client.join(store.BRIDGE), client.join(store.BRIDGE)
        attach(first, a, "alpha")
        config_b = attach(second, b, "beta")
        first.close()
        # alpha is detached (its interface gone with its name), beta still served; a probe
        # does not keep the keeper
        wait_until(lambda: query(b, "10.88.0.1", "alpha") == "NXDOMAIN", "alpha to go")
        wait_until(lambda: "eth0" not in in_netns(a, "ip", "-o", "link").stdout, "alpha's eth0")
        with store.network_lock(store.BRIDGE) as directory:
            assert store.keeper_running(directory)
        assert query(b, "10.88.0.1", "beta") == f"NOERROR {config_b['address']}"
        second.close()
    wait_until(
        lambda: not (store.BRIDGE.directory() / SOCKET_NAME).exists(), "the keeper's socket to go"
    )


_KILLED_CHILD = """
import os, sys
from sandkit.net import client, store
connection = client.join(store.BRIDGE)
fd = os.open(f"/proc/{sys.argv[1]}/ns/net", os.O_RDONLY)
print(connection.attach(fd, "victim", [])["address"], flush=True)
sys.stdin.read()
"""


def test_sigkill_of_the_host_process_leaves_nothing(clean_host):
    with netns_process() as pid:
        with killed_host_process(_KILLED_CHILD, str(pid)) as first_line:
            assert first_line.startswith("10.88.")
            assert network_processes(os.environ["SANDKIT_HOME"])
            assert "eth0" in in_netns(pid, "ip", "-o", "link").stdout
        wait_until(
            lambda: "eth0" not in in_netns(pid, "ip", "-o", "link").stdout,
            "the container's interface to go",
        )


def test_deep_home_longer_than_a_socket_path(clean_host, tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("SANDKIT_HOME", str(deep))
    assert len(os.fspath(store.BRIDGE.directory() / SOCKET_NAME)) > 108
    with netns_process() as pid:
        connection = client.join(store.BRIDGE)
        try:
            assert attach(connection, pid, "alpha")["address"].startswith("10.88.")
        finally:
            connection.close()
        wait_until(lambda: not network_processes(str(deep)), "the keeper to exit")


def test_malformed_requests_are_refused_and_others_still_served(clean_host):
    with netns_process() as pid:
        connection = client.join(store.BRIDGE)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            raw.connect(os.fspath(store.BRIDGE.directory() / SOCKET_NAME))
            raw.send(b"\xff" * 5000)  # over the size limit, and not JSON: dropped
            assert raw.recv(100) == b""
            fd = netns_fd(pid)
            try:
                with pytest.raises(errors.NetworkError, match="cannot be looked up by name"):
                    connection.attach(fd, "bad name!", [])
            finally:
                os.close(fd)
            assert attach(connection, pid, "good")["address"].startswith("10.88.")
        finally:
            raw.close()
            connection.close()


_PADDED_QUERY = """
import socket, dns.edns, dns.message
q = dns.message.make_query("alpha", "A", use_edns=0, options=[dns.edns.GenericOption(12, bytes(5000))])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(q.to_wire(max_size=65535), ("10.88.0.1", 53))
s.recv(100)
"""


def test_oversized_dns_query_is_dropped(clean_host):
    with netns_process() as pid:
        connection = client.join(store.BRIDGE)
        try:
            attach(connection, pid, "alpha")
            # a well-formed query, but padded over the 4096 bytes a query may take
            send = in_netns(pid, sys.executable, "-c", _PADDED_QUERY)
            assert "timed out" in send.stderr
            assert query(pid, "10.88.0.1", "alpha").startswith("NOERROR")
        finally:
            connection.close()


def test_no_uplink_installed_is_a_clear_error_and_leaves_nothing(clean_host, tmp_path, monkeypatch):
    monkeypatch.setattr(uplink, "SEARCH_PATH", str(tmp_path))
    with pytest.raises(errors.NetworkUnavailableError, match=r"apt install slirp4netns"):
        client.join(store.BRIDGE)
    assert not (store.BRIDGE.directory() / SOCKET_NAME).exists()


def test_sigkill_of_the_keeper_takes_pasta_with_it(clean_host):
    connection = client.join(store.BRIDGE)
    try:
        assert any("up0" in p for p in network_processes(os.environ["SANDKIT_HOME"]))
        os.kill(keeper_pid(connection), signal.SIGKILL)
        wait_until(
            lambda: not network_processes(os.environ["SANDKIT_HOME"]),
            "pasta to go with its keeper",
        )
    finally:
        connection.close()


def test_a_stopped_keeper_is_an_error_not_a_hang(clean_host, monkeypatch):
    monkeypatch.setattr(client, "REPLY_TIMEOUT", 0.5)
    connection = client.join(store.BRIDGE)
    keeper = keeper_pid(connection)
    os.kill(keeper, signal.SIGSTOP)
    try:
        with (
            netns_process() as pid,
            pytest.raises(errors.NetworkError, match=r"did not answer within 0\.5 s"),
        ):
            attach(connection, pid, "alpha")
        with pytest.raises(errors.NetworkError, match=r"did not answer within 0\.5 s"):
            client.join(store.BRIDGE)  # the hello of a second container
    finally:
        os.kill(keeper, signal.SIGCONT)
        connection.close()


def test_a_full_home_is_a_network_error(clean_host, tmp_path, monkeypatch):
    with small_tmpfs(tmp_path / "home", "1m", inodes=64) as home:
        monkeypatch.setenv("SANDKIT_HOME", str(home))
        store.BRIDGE.directory()  # the network's directory, made while there is room
        filler = home / "filler"
        filler.mkdir()
        with contextlib.suppress(OSError):  # every inode taken
            for number in range(64):
                (filler / str(number)).touch()
        with pytest.raises(errors.NetworkError, match="No space left on device"):
            client.join(store.BRIDGE)
        assert not network_processes(str(home))


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_status_probe_does_not_count_a_member_that_closed_before_it_was_read(clean_host):
    """The race `store.keeper_running` runs when a network is removed right after its last
    container stopped: the probe's request is read before the container's end of file. The
    keeper is stopped while both arrive, probe first: its epoll hands them over in that order."""
    member = client.join(store.BRIDGE)
    keeper = keeper_pid(member)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        probe.settimeout(10)
        probe.connect(os.fspath(store.BRIDGE.directory() / SOCKET_NAME))
        protocol.send(probe, {"op": "status"})  # answered: the probe is accepted and served
        assert protocol.receive(probe) == ({"members": 1}, [])
        os.kill(keeper, signal.SIGSTOP)
        try:
            wait_until(lambda: _stopped(keeper), "the keeper to stop")
            protocol.send(probe, {"op": "status"})
            member.close()
        finally:
            os.kill(keeper, signal.SIGCONT)
        assert protocol.receive(probe) == ({"members": 0}, [])
