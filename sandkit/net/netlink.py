"""The keeper's netlink work (pyroute2), done in the network's own namespace: the bridge, and
one veth pair per container whose peer is made directly in the container's namespace."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from ..errors import NetworkError

BRIDGE_NAME = "sk0"
# veths carry whole 64 KiB segments between containers (as Docker's own veths could): fewer
# packets per byte. The container's end gets the same MTU from the init.
VETH_MTU = 65520


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetworkError(f"interface {name} is missing in the network's namespace")
    return int(found[0])


def create_bridge(gateway: ipaddress.IPv4Address, prefix: int) -> None:
    """The bridge ``sk0`` with the gateway's address, up; loopback up."""
    with IPRoute() as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")
        ipr.link("add", ifname=BRIDGE_NAME, kind="bridge")
        bridge = _index(ipr, BRIDGE_NAME)
        ipr.addr("add", index=bridge, address=str(gateway), prefixlen=prefix)
        ipr.link("set", index=bridge, state="up")


def add_veth(host_name: str, peer_name: str, peer_netns_fd: int, peer_mac: str) -> None:
    """A veth pair: ``host_name`` in this namespace on the bridge and up, its peer
    ``peer_name`` with MAC ``peer_mac`` created in the namespace ``peer_netns_fd`` (down: the
    init configures it).
    NetworkError naming the cause when the kernel refuses (a name taken in the container,
    no permission over its namespace)."""
    with IPRoute() as ipr:
        try:
            ipr.link(
                "add",
                ifname=host_name,
                kind="veth",
                mtu=VETH_MTU,
                peer={
                    "ifname": peer_name,
                    "net_ns_fd": peer_netns_fd,
                    "mtu": VETH_MTU,
                    "address": peer_mac,
                },
            )
        except NetlinkError as exc:
            raise NetworkError(
                f"cannot create the container's interface {peer_name}: {exc.args[-1]}"
            ) from None
        try:
            index = _index(ipr, host_name)
            bridge = _index(ipr, BRIDGE_NAME)
            ipr.link("set", index=index, master=bridge)
            _pin_port(ipr, index, bridge, peer_mac)
            ipr.link("set", index=index, state="up")
        except BaseException:
            delete_link(host_name)
            raise


def _pin_port(ipr: IPRoute, port: int, bridge: int, mac: str) -> None:
    """The bridge sends to ``port`` only what is for ``mac``, the container's: a static entry,
    no learning, no flooding of unknown unicast. A learning bridge forgets a quiet container
    (after 300 s) and then floods what comes for it to every port, where a neighbour with
    NET_RAW reads it. (Broadcasts, ARP's requests, still reach every port.)"""
    ipr.brport("set", index=port, learning=0, unicast_flood=0)
    ipr.fdb("add", ifindex=port, lladdr=mac, master=bridge, state=ndmsg.states["noarp"])


def delete_link(name: str) -> None:
    """Delete interface ``name`` of this namespace if it is still there (deleting one end of a
    veth deletes both; a container that ended took its end, and so the pair, with it)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: gone in the meantime
                    raise


def has_address(name: str) -> bool:
    """Whether interface ``name`` of this namespace exists and has an IPv4 address."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        return bool(found) and bool(ipr.get_addr(family=socket.AF_INET, index=found[0]))
