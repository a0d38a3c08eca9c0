"""The keeper's netlink work (pyroute2), done in the network's own namespace: the bridge, and
one veth pair per container whose peer is made directly in the container's namespace.

One netlink socket serves the keeper for its life (opened on first use, in N), and the
bridge's index is looked up once: an attach is then one request."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from ..errors import NetworkError

BRIDGE_NAME = "sk0"
# veths carry whole 64 KiB segments between containers (as Docker's own veths could): fewer
# packets per byte. The container's end gets the same MTU from the init.
VETH_MTU = 65520
_ENODEV = 19

_socket: IPRoute | None = None
_bridge_index = 0


def _ipr() -> IPRoute:
    """The keeper's netlink socket, opened in the namespace of the first call (N)."""
    global _socket
    if _socket is None:
        _socket = IPRoute()
    return _socket


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NetworkError(f"interface {name} is missing in the network's namespace")
    return int(found[0])


def create_bridge(gateway: ipaddress.IPv4Address, prefix: int, mac: str) -> None:
    """The bridge ``sk0`` with the gateway's address and MAC ``mac``, up; loopback up.

    The MAC is set, not left to the kernel: a bridge without one takes the lowest MAC of its
    ports, so a container joining or leaving would change the gateway's MAC under its
    neighbours, whose ARP caches then send to a MAC nobody has for seconds (every connection
    out of the network, and the resolver, stall)."""
    global _bridge_index
    ipr = _ipr()
    ipr.link("set", index=_index(ipr, "lo"), state="up")
    ipr.link("add", ifname=BRIDGE_NAME, kind="bridge", address=mac)
    _bridge_index = _index(ipr, BRIDGE_NAME)
    ipr.addr("add", index=_bridge_index, address=str(gateway), prefixlen=prefix)
    ipr.link("set", index=_bridge_index, state="up")


def add_veth(host_name: str, peer_name: str, peer_netns_fd: int, peer_mac: str) -> None:
    """A veth pair: ``host_name`` in this namespace on the bridge and up, its peer
    ``peer_name`` with MAC ``peer_mac`` created in the namespace ``peer_netns_fd`` (down: the
    init configures it), in one request, then the port pinned to that MAC (`_pin_port`; the
    container's end is down until then, so nothing crosses the port before). NetworkError
    naming the cause when the kernel refuses (a name taken in the container, no permission over
    its namespace)."""
    ipr = _ipr()
    try:
        ipr.link(
            "add",
            ifname=host_name,
            kind="veth",
            mtu=VETH_MTU,
            master=_bridge_index,
            state="up",
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
        _pin_port(ipr, _index(ipr, host_name), _bridge_index, peer_mac)
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
    _delete(_ipr(), name)


def _delete(ipr: IPRoute, name: str) -> None:
    found = ipr.link_lookup(ifname=name)
    if found:
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != _ENODEV:  # gone in the meantime
                raise


def delete_link_aside(name: str, done: Callable[[], None]) -> bool:
    """Delete interface ``name`` off the caller's thread, then call ``done`` (there); False,
    with nothing to do, when it is gone already. A veth's deletion waits for the kernel's RCU
    grace periods (milliseconds): the keeper's loop must not. A container that ended took its
    veth with its namespace; one still there belongs to a container that is still alive."""
    if not _ipr().link_lookup(ifname=name):
        return False

    def delete() -> None:
        try:
            with IPRoute() as ipr:
                _delete(ipr, name)
        finally:
            done()

    threading.Thread(target=delete, name=f"delete {name}", daemon=True).start()
    return True


def has_address(name: str) -> bool:
    """Whether interface ``name`` of this namespace exists and has an IPv4 address."""
    ipr = _ipr()
    found = ipr.link_lookup(ifname=name)
    return bool(found) and bool(ipr.get_addr(family=socket.AF_INET, index=found[0]))
