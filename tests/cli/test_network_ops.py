"""`sandkit run --egress`, and `sandkit network connect/disconnect` of a detached container,
with Docker's messages and exit codes (the egress flag is sandkit's own)."""

from __future__ import annotations

import json
import os

import pytest
from net import attacker
from net.helpers import greeting_server, host_address

from .conftest import sandkit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers on networks as root"),
]

# What a program in the container gets when it connects (the attacker script of the network
# tests, run by the host image's python): a greeting, or "refused" at once.
GREETED = "connected hello from the host"


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def greeter():
    address = host_address()
    with greeting_server(address) as port:
        yield address, port


def test_run_egress_in_the_foreground(greeter):
    address, port = greeter
    for flags, expected in (([address], GREETED), (["none"], "refused")):
        egress = [arg for flag in flags for arg in ("--egress", flag)]
        ran = sandkit(
            "run", "--rm", "--network", "bridge", *egress, "host",
            *attacker.argv("connect", address, port),
        )  # fmt: skip
        assert (ran.returncode, ran.stdout.strip()) == (0, expected), ran.stderr


def test_run_egress_detached(greeter):
    address, port = greeter
    started = sandkit(
        "run", "-d", "--network", "bridge", "--egress", f"{address}:{port}/tcp", "host",
        "sleep", "1000",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        done = sandkit("exec", container, *attacker.argv("connect", address, port))
        assert done.stdout.strip() == GREETED, done.stderr
        other_port = sandkit("exec", container, *attacker.argv("connect", address, 1))
        assert other_port.stdout.strip() == "refused", other_port.stderr
    finally:
        sandkit("rm", "-f", container)


def test_run_egress_malformed_or_without_a_network_fails_with_the_fix():
    bad = sandkit("run", "--rm", "--network", "bridge", "--egress", "10.0.0.1/8", "host", "true")
    assert bad.returncode == 125
    assert "accepted forms" in bad.stderr
    alone = sandkit("run", "--rm", "--egress", "none", "host", "true")
    assert alone.returncode == 125
    assert "egress= applies to a container on a network" in alone.stderr


@pytest.fixture
def detached_busybox(bb):
    started = sandkit("run", "-d", "--network", "none", "--hostname", "late", bb, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    yield container
    sandkit("rm", "-f", container)


def test_network_connect_and_disconnect_a_detached_container(detached_busybox):
    made = sandkit("network", "create", "--subnet", "10.203.0.0/24", "later")
    assert made.returncode == 0, made.stderr
    connected = sandkit("network", "connect", "--alias", "lately", "later", detached_busybox)
    assert (connected.returncode, connected.stdout, connected.stderr) == (0, "", "")
    seen = sandkit("exec", detached_busybox, "sh", "-c", "ip -o -4 addr show eth0; cat /etc/hosts")
    assert "inet 10.203.0.2/24" in seen.stdout
    assert "10.203.0.2\tlate lately\n" in seen.stdout
    again = sandkit("network", "connect", "later", detached_busybox)
    assert again.returncode == 1
    assert "already connected to network 'later'" in again.stderr
    in_use = sandkit("network", "rm", "later")
    assert in_use.returncode == 1
    (shown,) = json.loads(sandkit("network", "inspect", "later").stdout)
    (container,) = json.loads(sandkit("inspect", detached_busybox).stdout)
    assert shown["Containers"] == {
        detached_busybox: {
            "Name": container["Name"].lstrip("/"),
            "EndpointID": "",
            "MacAddress": "02:73:6b:cb:00:02",  # sandkit's: 02:73:6b, then the address's last 3
            "IPv4Address": "10.203.0.2/24",
            "IPv6Address": "",
        }
    }

    left = sandkit("network", "disconnect", "later", detached_busybox)
    assert (left.returncode, left.stdout, left.stderr) == (0, "", "")
    gone = sandkit("exec", detached_busybox, "cat", "/proc/net/dev")
    assert "eth0" not in gone.stdout
    not_on = sandkit("network", "disconnect", "later", detached_busybox)
    assert not_on.returncode == 1
    assert "is not connected to network 'later'" in not_on.stderr
    (shown,) = json.loads(sandkit("network", "inspect", "later").stdout)
    assert shown["Containers"] == {}
    assert sandkit("network", "rm", "later").returncode == 0


def test_network_connect_errors_are_dockers(detached_busybox):
    unknown_network = sandkit("network", "connect", "nosuch", detached_busybox)
    assert unknown_network.returncode == 1
    assert "Error: network 'nosuch' not found" in unknown_network.stderr
    unknown_container = sandkit("network", "connect", "bridge", "nobody")
    assert unknown_container.returncode == 1
    assert "Error: No such container: nobody" in unknown_container.stderr
    bad_alias = sandkit("network", "connect", "--alias", "a b", "bridge", detached_busybox)
    assert bad_alias.returncode == 1
    assert "cannot be looked up by name" in bad_alias.stderr
