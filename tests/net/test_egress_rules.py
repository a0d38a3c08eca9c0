"""The egress rules on real namespaces and real connections, root and rootless (netlab.py: a
container C behind a network namespace N with the rules, and OUT standing for the outside).

What is expected comes from the issue (17, item 4) and the agreed design: allowed destinations
reach, everything else is refused at once (TCP: ECONNREFUSED from a reset; UDP: ECONNREFUSED
from ICMP port unreachable), the host's own addresses, the metadata address and N itself stay
out of reach unless named literally, and a policy is replaced and removed without a trace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from sandkit.net.egress import (
    EgressPolicy,
    always_denied,
    container_chain,
    container_rules,
    default_rules,
    network_rules,
    network_rules6,
    remove_container_rules,
)

from .netlab import (
    CONTAINER,
    GATEWAY,
    METADATA,
    N_TCP_PORT,
    N_UDP_PORT,
    N_UPLINK_ADDRESS,
    OTHER,
    PUBLIC,
    SUBNET,
    UPLINK,
    Lab,
    namespaces_in_use,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds namespaces as root and as a test user"),
]

REFUSED = "ECONNREFUSED"


@pytest.fixture(params=["root", "rootless"])
def lab(request) -> Iterator[Lab]:
    built = Lab(request.param)
    try:
        built.build()
        built.apply(network_rules(bridge="sk0", subnet=SUBNET, gateway=GATEWAY, uplink=UPLINK))
        built.apply(network_rules6(bridge="sk0"), ipv6=True)
        yield built
    finally:
        built.close()
        assert not namespaces_in_use(built.inodes), "a namespace of the test outlived it"


def allow(lab: Lab, spec, replace: bool = False) -> None:
    policy = EgressPolicy.parse(spec).resolve()
    lab.apply(
        container_rules(address=CONTAINER, policy=policy, denied=always_denied(), replace=replace)
    )


def test_nothing_reaches_the_network_itself_over_ipv6(lab: Lab) -> None:
    # networks are IPv4 only, but the bridge has a link-local address all the same
    allow(lab, "all")
    bridge = lab.bridge_link_local()
    assert lab.container.connect("tcp", bridge, N_TCP_PORT) == REFUSED
    assert lab.container.connect("udp", bridge, N_UDP_PORT) == REFUSED


def test_an_allowed_cidr_and_port_reach_and_nothing_else_does(lab: Lab) -> None:
    allow(lab, ["203.0.113.0/24:443/tcp"])
    c = lab.container
    assert c.connect("tcp", PUBLIC, 443) == "ok"
    assert c.connect("tcp", PUBLIC, 80) == REFUSED  # OUT listens there too: the rule refuses
    assert c.connect("udp", PUBLIC, 443) == REFUSED  # /tcp: not UDP
    assert c.connect("tcp", OTHER, 443) == REFUSED  # outside the CIDR


def test_a_port_without_protocol_allows_tcp_and_udp(lab: Lab) -> None:
    allow(lab, ["203.0.113.10:443"])
    assert lab.container.connect("tcp", PUBLIC, 443) == "ok"
    assert lab.container.connect("udp", PUBLIC, 443) == "ok"
    assert lab.container.connect("udp", PUBLIC, 53) == REFUSED


@pytest.mark.parametrize("chain", ["own", "shared"])
def test_all_reaches_out_but_not_the_host_metadata_or_the_network_itself(
    lab: Lab, chain: str
) -> None:
    if chain == "shared":  # the keeper's way for "all": one chain for every such container
        lab.apply(default_rules(always_denied()))
    else:
        allow(lab, "all")
    c = lab.container
    assert c.connect("tcp", PUBLIC, 80) == "ok"
    assert c.connect("udp", OTHER, 53) == "ok"
    assert c.connect("tcp", METADATA, 80) == REFUSED
    assert c.connect("udp", METADATA, 53) == REFUSED
    assert lab.host_address is not None, "the host has no address but loopback"
    assert c.connect("tcp", lab.host_address, 80) == REFUSED
    # N's own addresses: something listens there on every address, and only DNS is let in
    assert c.connect("tcp", GATEWAY, N_TCP_PORT) == REFUSED
    assert c.connect("tcp", N_UPLINK_ADDRESS, N_TCP_PORT) == REFUSED
    assert c.connect("udp", GATEWAY, 53) == "ok"
    assert c.connect("tcp", GATEWAY, 53) == "ok"


def test_a_denied_destination_named_literally_is_allowed(lab: Lab) -> None:
    assert lab.host_address is not None
    allow(lab, ["169.254.169.254:80", str(lab.host_address)])
    c = lab.container
    assert c.connect("tcp", METADATA, 80) == "ok"
    assert c.connect("tcp", METADATA, 443) == REFUSED
    assert c.connect("tcp", lab.host_address, 5432) == "ok"
    assert c.connect("tcp", PUBLIC, 80) == REFUSED


def test_a_wider_cidr_does_not_open_the_host_or_the_metadata_address(lab: Lab) -> None:
    allow(lab, ["0.0.0.0/0"])
    c = lab.container
    assert c.connect("tcp", PUBLIC, 80) == "ok"
    assert lab.host_address is not None
    assert c.connect("tcp", lab.host_address, 80) == REFUSED
    assert c.connect("tcp", METADATA, 80) == REFUSED


def test_an_empty_policy_refuses_everything(lab: Lab) -> None:
    allow(lab, [])
    c = lab.container
    assert c.connect("tcp", PUBLIC, 443) == REFUSED
    assert c.connect("udp", PUBLIC, 53) == REFUSED
    assert c.connect("tcp", OTHER, 80) == REFUSED
    assert c.connect("udp", GATEWAY, 53) == "ok"  # the network's own DNS stays


def test_a_source_without_rules_is_refused(lab: Lab) -> None:
    # the container is on the bridge, but no policy has been loaded for its address
    assert lab.container.connect("tcp", PUBLIC, 443) == REFUSED
    assert lab.container.connect("udp", PUBLIC, 53) == REFUSED


def test_replacing_a_policy_keeps_allowed_connections_and_cuts_the_others(lab: Lab) -> None:
    allow(lab, ["203.0.113.10:443/tcp", "198.51.100.7:80/tcp"])
    c = lab.container
    assert c.connect("tcp", PUBLIC, 443, keep="stays") == "ok"
    assert c.connect("tcp", OTHER, 80, keep="goes") == "ok"

    allow(lab, ["203.0.113.10:443/tcp"], replace=True)

    assert c.echo("stays") == "ok"  # the same TCP connection, still working
    assert c.echo("goes") == "ECONNRESET"  # taken out of the policy: cut at once
    assert c.connect("tcp", OTHER, 80) == REFUSED
    assert c.connect("tcp", PUBLIC, 443) == "ok"
    assert lab.iptables_save().count(f"-j {container_chain(CONTAINER)}") == 1


def _rules_only(saved: str) -> list[str]:
    """iptables-save's output without its comments and packet counters (which traffic moves)."""
    lines = (line for line in saved.splitlines() if not line.startswith("#"))
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in lines]


def test_removing_a_container_leaves_nothing_of_it(lab: Lab) -> None:
    before = lab.iptables_save()
    allow(lab, ["203.0.113.10:443", "169.254.169.254"])
    assert container_chain(CONTAINER) in lab.iptables_save()

    lab.apply(remove_container_rules(CONTAINER))

    after = lab.iptables_save()
    assert container_chain(CONTAINER) not in after
    assert str(CONTAINER) not in after
    assert _rules_only(after) == _rules_only(before)  # the network's own rules, as they were
    assert lab.container.connect("tcp", PUBLIC, 443) == REFUSED
