"""Bridge-level rules on each container's port of the network's bridge (its veth in N): what
comes in from a container must carry the container's own MAC, IPv4 packets its own source
address, ARP its own address and MAC; any other frame but IPv6 is dropped.

Why: the egress rules (iptables, in N) tell containers apart by source address, and a container
may forge one: a raw socket or IP_TRANSPARENT needs only NET_RAW, which Docker's default
capabilities include. Without these rules it could send as a neighbour with a looser policy (a
one-way UDP path out of a container whose egress denies everything), answer ARP for the gateway
or a neighbour (and receive their traffic), or teach the bridge a neighbour's MAC.

The rules sit in ebtables' nat PREROUTING, before the bridge learns the frame's source MAC and
before it is either bridged to another container or handed to N itself. They are loaded with
``ebtables-restore`` (iptables-nft's ``ebtables-nft-restore``, which works in the rootless
keeper's user namespace too), one transaction per address slot, the first time it is used.

A slot's port name, MAC and address are all functions of its address (`veth_for`, `mac_for`),
so its rules stay when its container leaves and serve the next container given that address:
no ebtables run at attach or detach once the network's addresses have been used. A slot left
over matches nothing: ``-i vN`` is an exact match on the port name (ebtables takes a name as a
prefix only when it ends in ``+``, which `veth_for` never writes), no port of that name exists
until the keeper makes the slot's next one, and nothing else names ports in N. Even if it did
match, a port chain only drops or returns, so a frame still passes its own port's chain too.
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import NetworkError
from . import restore

# iptables-nft's ebtables first: it works inside a user namespace (the legacy one does not).
_PROGRAMS = ("ebtables-nft-restore", "ebtables-restore")
_VETH = re.compile(r"v[0-9]{1,9}")
# A container's MAC: locally administered, unicast, "sk", then the low 24 bits of its address
# (unique in any network of at least 2^24 addresses; sandkit's are /8 or smaller).
_MAC_PREFIX = (0x02, 0x73, 0x6B)


def mac_for(address: ipaddress.IPv4Address) -> str:
    """The MAC a container with ``address`` gets on its interface (set by the keeper when it
    makes the veth pair, and pinned by `guard_rules`)."""
    low = int(address).to_bytes(4, "big")[1:]
    return ":".join(f"{byte:02x}" for byte in (*_MAC_PREFIX, *low))


def veth_for(address: ipaddress.IPv4Address) -> str:
    """The name of the bridge port of the container with ``address``: v and the low 24 bits of
    the address in decimal (as `mac_for`: unique in the network; 15 characters fit IFNAMSIZ)."""
    return f"v{int(address) & 0xFFFFFF}"


def port_chain(veth: str) -> str:
    """The name of a port's own chain."""
    if not _VETH.fullmatch(veth):
        raise NetworkError(f"invalid bridge port name {veth!r}")
    return f"P-{veth}"


def guard_rules(veth: str, address: ipaddress.IPv4Address, mac: str) -> str:
    """The ebtables-restore input that makes ``veth``'s chain and sends its frames through it."""
    chain = port_chain(veth)
    lines = [
        "*nat",
        f":{chain} RETURN",
        f"-A {chain} -s ! {mac} -j DROP",
        f"-A {chain} -p IPv4 --ip-src {address} -j RETURN",
        f"-A {chain} -p ARP --arp-ip-src {address} --arp-mac-src {mac} -j RETURN",
        # IPv6 (link-local only: networks are IPv4) is refused in N by ip6tables; between
        # containers it is left alone, as Docker does. The MAC above is checked all the same.
        f"-A {chain} -p IPv6 -j RETURN",
        f"-A {chain} -j DROP",
        f"-A PREROUTING -i {veth} -j {chain}",
    ]
    return "\n".join(lines) + "\n"


def apply(rules: str) -> None:
    """Load ``rules`` (ebtables-restore input) in the caller's network namespace, keeping the
    rest (``--noflush``), in one transaction."""
    program = restore.find(
        *_PROGRAMS,
        missing="ebtables-nft-restore is not installed: networks need it to keep containers "
        "from forging their addresses (Debian: apt-get install iptables)",
    )
    restore.run([program, "--noflush"], rules)


def guard(address: ipaddress.IPv4Address) -> None:
    """Pin the frames of the port of ``address`` (`veth_for`) to that address and its MAC
    (`mac_for`): once per slot, before its first port exists, so nothing passes unchecked."""
    apply(guard_rules(veth_for(address), address, mac_for(address)))
