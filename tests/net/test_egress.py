"""The egress policy without namespaces: parsing (each form the issue names, each malformed one
with its message), resolving on the host, the JSON that goes to the keeper, the host's addresses
and the text of the rules. The rules themselves are tested on real traffic in
test_egress_rules.py."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from sandkit.errors import EgressError, NetworkError, NetworkUnavailableError
from sandkit.net import egress, firewall, restore
from sandkit.net.egress import (
    MAX_DESTINATIONS,
    MAX_ENTRIES,
    Destination,
    EgressPolicy,
    HostDestination,
    ResolvedEgress,
    always_denied,
    container_rules,
    denied_from_json,
    network_rules,
)

# --- parse: the forms of issue 17 ("Egress policy") --------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("10.1.0.0/16", Destination(IPv4Network("10.1.0.0/16"))),
        ("1.2.3.4", Destination(IPv4Network("1.2.3.4/32"))),
        ("1.2.3.4:443", Destination(IPv4Network("1.2.3.4/32"), 443)),
        ("10.0.0.0/8:5432/tcp", Destination(IPv4Network("10.0.0.0/8"), 5432, "tcp")),
        ("pypi.org:443", HostDestination("pypi.org", 443)),
        ("pypi.org", HostDestination("pypi.org")),
        ("host:53/udp", HostDestination("host", 53, "udp")),
        # names are case-insensitive, and a final dot changes nothing (RFC 1034)
        ("PyPI.org.:443/TCP", HostDestination("pypi.org", 443, "tcp")),
        ("0.0.0.0/0", Destination(IPv4Network("0.0.0.0/0"))),
    ],
)
def test_each_accepted_form(entry: str, expected: object) -> None:
    assert EgressPolicy.parse([entry]) == EgressPolicy(allow_all=False, destinations=(expected,))


def test_all_none_and_nothing() -> None:
    assert EgressPolicy.parse("all") == EgressPolicy(allow_all=True)
    assert EgressPolicy.parse(None) == EgressPolicy(allow_all=True)  # the default is "all"
    assert EgressPolicy.parse([]) == EgressPolicy(allow_all=False)
    # "all" in a list: everything, plus what it names literally among the always-denied
    assert EgressPolicy.parse(["all", "169.254.169.254"]) == EgressPolicy(
        allow_all=True, destinations=(Destination(IPv4Network("169.254.169.254/32")),)
    )


def test_a_repeated_entry_counts_once() -> None:
    policy = EgressPolicy.parse(["1.2.3.4:443", "1.2.3.4:443", "pypi.org", "PYPI.ORG"])
    assert len(policy.destinations) == 2


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("", "empty"),
        (" pypi.org", "spaces"),
        ("pypi.org :443", "spaces"),
        ("10.1.0.0/33", "is not an IPv4 address or CIDR"),
        ("10.1.2.3/16", "has host bits set (the network is 10.1.0.0/16)"),
        ("1.2.3", "is not an IPv4 address or CIDR"),  # never looked up (1.2.0.3 for inet_aton)
        ("256.1.1.1", "is not an IPv4 address or CIDR"),
        ("0177.0.0.1", "is not an IPv4 address or CIDR"),  # octal to inet_aton: ambiguous
        ("1.2.3.4:0", "port '0' is not a number from 1 to 65535"),
        ("1.2.3.4:65536", "port '65536' is not a number from 1 to 65535"),
        ("pypi.org:https", "port 'https' is not a number"),
        ("pypi.org:", "port '' is not a number"),
        ("1.2.3.4:-1", "port '-1' is not a number"),
        ("1.2.3.4:53/icmp", "protocol 'icmp' is neither tcp nor udp"),
        ("1.2.3.4:53/", "protocol '' is neither tcp nor udp"),
        ("1.2.3.4/udp", "a protocol needs a port"),
        ("::1", "IPv6 is not supported"),
        ("2001:db8::/32", "IPv6 is not supported"),
        ("[2001:db8::1]:443", "IPv6 is not supported"),
        ("-pypi.org", "is neither an IPv4 address, a CIDR nor a host name"),
        ("pypi..org", "is neither"),
        ("py_pi.org", "is neither"),
        ("a" * 64 + ".org", "is neither"),
        ("pypi.org/24", "is not an IPv4 address or CIDR"),
        ("x" * 301, "too long"),
    ],
)
def test_each_malformed_entry_is_named_with_the_accepted_forms(entry: str, why: str) -> None:
    with pytest.raises(EgressError) as caught:
        EgressPolicy.parse(["10.0.0.0/8", entry])
    message = str(caught.value)
    assert f"invalid egress entry {entry!r}" in message
    assert why in message
    assert "accepted forms" in message and "pypi.org:443" in message


@pytest.mark.parametrize("spec", ["pypi.org", b"all", 443, {"1.2.3.4"}, {"all": True}])
def test_a_spec_that_is_not_a_list_is_refused(spec: object) -> None:
    with pytest.raises(EgressError, match='is not a policy: give "all", or a list'):
        EgressPolicy.parse(spec)  # type: ignore[arg-type]


def test_an_entry_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(EgressError, match="invalid egress entry 443: an entry is a string"):
        EgressPolicy.parse([443])  # type: ignore[list-item]


def test_egress_errors_are_network_and_value_errors() -> None:
    with pytest.raises(NetworkError):
        EgressPolicy.parse(["nope:"])
    with pytest.raises(ValueError):
        EgressPolicy.parse(["nope:"])


def test_too_many_entries_are_refused() -> None:
    with pytest.raises(EgressError, match=f"more than the {MAX_ENTRIES} allowed"):
        EgressPolicy.parse([f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ENTRIES + 1)])


# --- resolve -----------------------------------------------------------------------------


def test_a_host_name_resolves_with_the_hosts_resolver() -> None:
    # "localhost" is the loopback address (RFC 6761), from the host's /etc/hosts
    resolved = EgressPolicy.parse(["localhost:8080/tcp", "10.1.0.0/16"]).resolve()
    assert resolved == ResolvedEgress(
        allow_all=False,
        destinations=(
            Destination(IPv4Network("127.0.0.1/32"), 8080, "tcp", host="localhost"),
            Destination(IPv4Network("10.1.0.0/16")),
        ),
    )


def test_a_name_that_does_not_resolve_is_an_egress_error() -> None:
    # .invalid never resolves (RFC 6761)
    policy = EgressPolicy.parse(["10.1.0.0/16", "no-such-host.invalid:443"])
    with pytest.raises(EgressError, match=r"host name 'no-such-host\.invalid' does not resolve"):
        policy.resolve()


@pytest.fixture
def stuck_resolver(monkeypatch) -> Iterator[None]:
    """A resolver that never answers (until the test is over)."""
    release = threading.Event()

    def lookup(name: str) -> list[IPv4Address]:
        release.wait()
        return [IPv4Address("192.0.2.1")]

    monkeypatch.setattr(egress, "_lookup", lookup)
    yield
    release.set()


def test_resolving_is_bounded_in_time(stuck_resolver) -> None:
    policy = EgressPolicy.parse(["pypi.org:443", "files.pythonhosted.org"])
    with pytest.raises(EgressError, match=r"did not answer for .*pypi\.org within 0\.2 s"):
        policy.resolve(timeout=0.2)


# --- the JSON that goes to the keeper ----------------------------------------------------


def test_json_round_trip() -> None:
    resolved = ResolvedEgress(
        allow_all=True,
        destinations=(
            Destination(IPv4Network("10.0.0.0/8"), 5432, "tcp"),
            Destination(IPv4Network("151.101.0.223/32"), 443, None, host="pypi.org"),
            Destination(IPv4Network("169.254.169.254/32")),
        ),
    )
    assert ResolvedEgress.from_json(resolved.to_json()) == resolved


def _good() -> dict:
    return {"network": "10.0.0.0/8", "port": 443, "proto": "tcp", "host": None}


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"all": True},
        {"all": True, "destinations": [], "extra": 1},
        {"all": 1, "destinations": []},
        {"all": True, "destinations": {}},
        {"all": False, "destinations": [{**_good(), "port": True}]},
        {"all": False, "destinations": [{**_good(), "port": 0}]},
        {"all": False, "destinations": [{**_good(), "port": 65536}]},
        {"all": False, "destinations": [{**_good(), "port": "443"}]},
        {"all": False, "destinations": [{**_good(), "proto": "icmp"}]},
        {"all": False, "destinations": [{**_good(), "port": None}]},  # a protocol needs a port
        {"all": False, "destinations": [{**_good(), "network": "10.1.2.3/8"}]},
        {"all": False, "destinations": [{**_good(), "network": "::/0"}]},
        {"all": False, "destinations": [{**_good(), "network": 167772160}]},
        {"all": False, "destinations": [{**_good(), "host": "bad host"}]},
        {"all": False, "destinations": [{**_good(), "more": 1}]},
        {"all": False, "destinations": ["10.0.0.0/8"]},
    ],
)
def test_from_json_refuses_anything_else(data: object) -> None:
    with pytest.raises(EgressError, match="malformed egress"):
        ResolvedEgress.from_json(data)


def test_from_json_bounds_the_number_of_destinations() -> None:
    many = [
        {"network": f"10.{i // 256}.{i % 256}.0/24", "port": None, "proto": None, "host": None}
        for i in range(MAX_DESTINATIONS + 1)
    ]
    with pytest.raises(EgressError, match=f"more than {MAX_DESTINATIONS}"):
        ResolvedEgress.from_json({"all": False, "destinations": many})


# --- the always-denied destinations ------------------------------------------------------


def test_the_denied_list_travels_as_json() -> None:
    denied = always_denied()
    assert denied_from_json(json.loads(json.dumps([str(n) for n in denied]))) == denied


@pytest.mark.parametrize(
    "data", [None, "127.0.0.0/8", ["127.0.0.1/8"], ["::1/128"], [2130706433], ["x"] * 1025]
)
def test_a_malformed_denied_list_is_refused(data: object) -> None:
    with pytest.raises(EgressError, match="malformed always-denied list"):
        denied_from_json(data)


def _iproute2_addresses() -> set[IPv4Network]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {IPv4Network(line.split()[3].split("/")[0]) for line in out.splitlines()}


FIXED = [IPv4Network("127.0.0.0/8"), IPv4Network("169.254.0.0/16"), IPv4Network("0.0.0.0/8")]


def test_always_denied_is_every_host_address_loopback_link_local_and_this_network() -> None:
    denied = always_denied()
    assert set(denied) == _iproute2_addresses() | set(FIXED)
    assert all(network.prefixlen == 32 for network in denied if network not in FIXED)


def _in_new_netns(fn: Callable[[], str]) -> str:
    """What ``fn()`` returns, called by a child of ours in a new network namespace."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(write_end, fn().encode())
        except BaseException as exc:  # noqa: BLE001 - the parent fails on it
            os.write(write_end, f"failed: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        found = pipe.read()
    os.waitpid(pid, 0)
    return found


def _denied_after(commands: str) -> list[IPv4Network]:
    """always_denied() in a new network namespace set up with ``commands`` (ip -batch)."""

    def run() -> str:
        subprocess.run(["ip", "-batch", "-"], input=commands, text=True, check=True)
        return " ".join(map(str, always_denied()))

    return [IPv4Network(n) for n in _in_new_netns(run).split()]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="makes a network namespace")
def test_always_denied_sees_secondary_and_point_to_point_addresses() -> None:
    denied = _denied_after(
        "link set lo up\n"
        "link add d0 type bridge\n"
        "addr add 10.9.9.9/24 dev d0\n"
        "addr add 10.9.9.10/24 dev d0\n"  # a secondary address of the same subnet
        "addr add 10.7.0.1 peer 10.7.0.2 dev d0\n"  # point-to-point: 10.7.0.2 is the peer
    )
    expected = {"127.0.0.1/32", "10.9.9.9/32", "10.9.9.10/32", "10.7.0.1/32"}
    assert set(denied) == {IPv4Network(n) for n in expected} | set(FIXED)


def _restore_error(rules: str) -> str:
    try:
        firewall.restore(rules, flush=False, lock_file=None)
    except NetworkError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "applied"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="makes a network namespace")
def test_restore_reports_what_iptables_refused() -> None:
    message = _in_new_netns(lambda: _restore_error("*filter\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n"))
    assert message.startswith("NetworkError: iptables-restore failed (exit 1):")
    assert "line 2" in message  # iptables-restore's own words, with the line it failed on


def test_restore_without_iptables_says_what_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(restore, "SEARCH_PATH", str(tmp_path))
    with pytest.raises(NetworkUnavailableError, match="apt install iptables"):
        firewall.restore("*filter\nCOMMIT\n", flush=False, lock_file=None)


# --- the text of the rules ---------------------------------------------------------------

SUBNET, GATEWAY = IPv4Network("10.88.0.0/16"), IPv4Address("10.88.0.1")


def test_an_internal_network_has_no_way_out() -> None:
    rules = network_rules(bridge="sk0", subnet=SUBNET, gateway=GATEWAY, uplink=None)
    assert "MASQUERADE" not in rules and "*nat" not in rules
    with_uplink = network_rules(bridge="sk0", subnet=SUBNET, gateway=GATEWAY, uplink="up0")
    assert "-A POSTROUTING -s 10.88.0.0/16 -o up0 -j MASQUERADE" in with_uplink


@pytest.mark.parametrize("name", ["sk0\n-A INPUT -j ACCEPT", "", "a" * 16, "sk 0"])
def test_interface_names_cannot_smuggle_rules(name: str) -> None:
    with pytest.raises(NetworkError, match="invalid bridge interface name"):
        network_rules(bridge=name, subnet=SUBNET, gateway=GATEWAY, uplink=None)
    with pytest.raises(NetworkError, match="invalid uplink interface name"):
        network_rules(bridge="sk0", subnet=SUBNET, gateway=GATEWAY, uplink=name)


def test_a_gateway_outside_the_subnet_is_refused() -> None:
    with pytest.raises(
        NetworkError, match=r"gateway 10\.89\.0\.1 is not in subnet 10\.88\.0\.0/16"
    ):
        network_rules(bridge="sk0", subnet=SUBNET, gateway=IPv4Address("10.89.0.1"), uplink=None)


def test_replacing_a_policy_does_not_add_a_second_jump() -> None:
    policy = EgressPolicy.parse(["10.1.0.0/16"]).resolve()
    address = IPv4Address("10.88.0.5")
    first = container_rules(address=address, policy=policy, denied=FIXED)
    again = container_rules(address=address, policy=policy, denied=FIXED, replace=True)
    assert first.count("-j E0a580005") == 1
    assert "-j E0a580005" not in again and ":E0a580005 - [0:0]" in again


@pytest.mark.parametrize(
    ("spec", "own"),
    [
        ("all", False),
        (["all", "1.2.3.4:443"], False),  # nothing but what "all" allows anyway
        ([], True),
        (["1.2.3.4"], True),
        (["all", "169.254.169.254"], True),  # opens an always-denied address: not the default
    ],
)
def test_only_the_default_policy_shares_the_default_chain(spec: object, own: bool) -> None:
    policy = EgressPolicy.parse(spec).resolve()
    assert egress.has_own_chain(policy, list(egress.FIXED_DENIED)) is own
