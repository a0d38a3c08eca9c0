"""The egress policy of a container on a network: what it may reach outside its network.

A user writes ``egress=`` as ``"all"``, a list of entries (CIDRs, addresses and host names, each
with an optional port and protocol) or nothing at all (``[]``). `EgressPolicy.parse` checks the
syntax (no DNS), `EgressPolicy.resolve` turns host names into addresses on the host when the
container starts, and the result (`ResolvedEgress`) travels to the network's keeper as JSON. The
keeper turns it into iptables rules in the network's namespace N on top of `network_rules` (the
network's own filter and NAT): `default_rules`, one chain shared by every container on "all",
and `container_rules`, a chain of its own (matched by source address) for any other policy
(`has_own_chain`); `firewall.EgressTables` decides which to load.

Whatever the policy, the destinations of `always_denied` (the host's own addresses, loopback,
link-local with the cloud metadata address, 0.0.0.0/8) stay unreachable unless an entry names an
address or CIDR inside them literally: a wider CIDR that merely contains one (``10.0.0.0/8``
around the host's 10.1.2.3, or ``0.0.0.0/0``) does not open it, and neither does a host name
that happens to resolve into one (a hostile DNS answer must not open the metadata service).

Denied traffic is rejected, never dropped (TCP: a reset, the rest: ICMP port unreachable), so a
denied connection fails at once with ECONNREFUSED instead of hanging until a timeout.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Literal, cast

import attrs

from ..errors import EgressError, NetworkError

Proto = Literal["tcp", "udp"]

# Bounds on what one policy may cost: every destination becomes one or two iptables rules that
# every outbound packet of the container may walk, and every host name a lookup at start.
MAX_ENTRIES = 256
MAX_DESTINATIONS = 1024  # after host names are resolved
RESOLVE_TIMEOUT = 10.0  # seconds for all of a policy's host names together
_RESOLVE_THREADS = 8
_MAX_ENTRY_LENGTH = 300  # a 253-character host name, a port and a protocol fit

# Destinations no container reaches unless an entry names them literally (always_denied adds the
# host's own addresses): loopback, link-local (169.254.169.254 is the cloud metadata service)
# and "this network" (0.0.0.0/8, which Linux treats as the local host).
FIXED_DENIED = tuple(IPv4Network(n) for n in ("127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8"))

# Chain names in N. FORWARD hands what comes from the bridge to CONTAINERS_CHAIN, which holds
# one jump (matched by source address) per container whose policy needs a chain of its own
# (`has_own_chain`), then to DEFAULT_CHAIN, the one chain every other container shares: "all"
# but the always-denied. Telling containers apart by source address is sound only because
# `portguard` pins each bridge port to its container's address.
CONTAINERS_CHAIN = "SK-CONTAINERS"
DEFAULT_CHAIN = "SK-DEFAULT"

_FORMS = (
    "accepted forms: a CIDR (10.1.0.0/16), an address (1.2.3.4), a host name (pypi.org), each "
    "optionally with :PORT and then optionally /tcp or /udp (1.2.3.4:443, "
    '10.0.0.0/8:5432/tcp, pypi.org:443, host:53/udp); or "all"'
)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@attrs.frozen
class Destination:
    """One allowed destination: a network, with an optional port and protocol (a port without a
    protocol allows TCP and UDP). ``host`` is the name it was resolved from, None for a literal
    address or CIDR: only literals may open an always-denied destination."""

    network: IPv4Network
    port: int | None = None
    proto: Proto | None = None
    host: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The destination as `ResolvedEgress.to_json` carries it."""
        return {
            "network": str(self.network),
            "port": self.port,
            "proto": self.proto,
            "host": self.host,
        }


@attrs.frozen
class HostDestination:
    """An entry naming a host, not yet resolved."""

    host: str
    port: int | None = None
    proto: Proto | None = None


@attrs.frozen
class EgressPolicy:
    """What the user wrote, checked: ``allow_all`` (everything but the always-denied) and the
    listed destinations, host names unresolved."""

    allow_all: bool
    destinations: tuple[Destination | HostDestination, ...] = ()

    @classmethod
    def parse(cls, spec: str | Sequence[str] | None) -> EgressPolicy:
        """``"all"`` or None (the default: everything but the always-denied), or a list of
        entries (``[]``: nothing at all). Syntax only; EgressError names a malformed entry."""
        if spec is None or spec == "all":
            return cls(allow_all=True)
        if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
            raise EgressError(
                f'egress={spec!r} is not a policy: give "all", or a list of entries such as '
                f'["10.1.0.0/16", "pypi.org:443"] ([] allows nothing); {_FORMS}'
            )
        if len(spec) > MAX_ENTRIES:
            raise EgressError(
                f"egress has {len(spec)} entries, more than the {MAX_ENTRIES} allowed: join "
                "addresses into CIDRs (sandkit.net.egress.MAX_ENTRIES)"
            )
        allow_all = False
        destinations: list[Destination | HostDestination] = []
        for entry in spec:
            if entry == "all":
                allow_all = True
            else:
                destinations.append(parse_entry(entry))
        return cls(allow_all=allow_all, destinations=tuple(dict.fromkeys(destinations)))

    def resolve(self, timeout: float | None = None) -> ResolvedEgress:
        """The policy with host names replaced by their IPv4 addresses, looked up with the host's
        resolver within ``timeout`` seconds (default `RESOLVE_TIMEOUT`); EgressError names a
        host that does not resolve."""
        names = sorted({d.host for d in self.destinations if isinstance(d, HostDestination)})
        addresses = _resolve_all(names, RESOLVE_TIMEOUT if timeout is None else timeout)
        resolved: list[Destination] = []
        for d in self.destinations:
            if isinstance(d, Destination):
                resolved.append(d)
                continue
            for address in addresses[d.host]:
                resolved.append(Destination(IPv4Network(address), d.port, d.proto, d.host))
        return ResolvedEgress.make(self.allow_all, resolved)


@attrs.frozen
class ResolvedEgress:
    """A policy with addresses only: what the keeper turns into rules."""

    allow_all: bool
    destinations: tuple[Destination, ...] = ()

    @classmethod
    def make(cls, allow_all: bool, destinations: Iterable[Destination]) -> ResolvedEgress:
        """The policy of these destinations, repeats removed; EgressError past
        `MAX_DESTINATIONS`."""
        unique = tuple(dict.fromkeys(destinations))
        if len(unique) > MAX_DESTINATIONS:
            raise EgressError(
                f"egress allows {len(unique)} destinations once host names are resolved, more "
                f"than {MAX_DESTINATIONS}: use CIDRs (sandkit.net.egress.MAX_DESTINATIONS)"
            )
        return cls(allow_all=allow_all, destinations=unique)

    def to_json(self) -> dict[str, Any]:
        """The policy as JSON-ready data, for the keeper (`from_json` reads it back)."""
        return {"all": self.allow_all, "destinations": [d.to_json() for d in self.destinations]}

    @classmethod
    def from_json(cls, data: object) -> ResolvedEgress:
        """The policy back from `to_json`'s form; EgressError for anything else."""
        if not isinstance(data, dict) or set(data) != {"all", "destinations"}:
            raise EgressError(f"malformed egress policy: {data!r:.200}")
        allow_all, items = data["all"], data["destinations"]
        if type(allow_all) is not bool or not isinstance(items, list):
            raise EgressError(f"malformed egress policy: {data!r:.200}")
        if len(items) > MAX_DESTINATIONS:  # before any of them is parsed
            raise EgressError(
                f"egress policy of {len(items)} destinations, more than {MAX_DESTINATIONS}"
            )
        return cls.make(allow_all, (_destination_from_json(item) for item in items))


def _destination_from_json(item: object) -> Destination:
    if not isinstance(item, dict) or set(item) != {"network", "port", "proto", "host"}:
        raise EgressError(f"malformed egress destination: {item!r:.200}")
    network, port, proto, host = item["network"], item["port"], item["proto"], item["host"]
    valid = (
        isinstance(network, str)
        and (port is None or (type(port) is int and 1 <= port <= 65535))
        and (proto is None or (proto in ("tcp", "udp") and port is not None))
        and (host is None or (isinstance(host, str) and _is_host_name(host)))
    )
    if not valid:
        raise EgressError(f"malformed egress destination: {item!r:.200}")
    try:
        parsed = IPv4Network(network, strict=True)
    except ValueError:
        raise EgressError(f"malformed egress destination: {item!r:.200}") from None
    return Destination(parsed, port, proto, host)


# --- parsing ---------------------------------------------------------------------------------


def _entry_error(entry: object, why: str) -> EgressError:
    return EgressError(f"invalid egress entry {entry!r}: {why}; {_FORMS}")


def parse_entry(entry: object) -> Destination | HostDestination:
    """One entry of an egress list: ``TARGET[:PORT[/PROTO]]``, TARGET a CIDR, an IPv4 address
    or a host name."""
    if not isinstance(entry, str):
        raise _entry_error(entry, "an entry is a string")
    if not entry or len(entry) > _MAX_ENTRY_LENGTH or entry.strip() != entry or " " in entry:
        raise _entry_error(entry, "empty, too long or with spaces")
    target, port, proto = _split_port(entry)
    if _looks_numeric(target):
        return Destination(_parse_network(entry, target), port, proto)
    if not _is_host_name(target):
        raise _entry_error(entry, f"{target!r} is neither an IPv4 address, a CIDR nor a host name")
    return HostDestination(target.rstrip(".").lower(), port, proto)


def _split_port(entry: str) -> tuple[str, int | None, Proto | None]:
    """TARGET, PORT and PROTO of ``TARGET[:PORT[/PROTO]]``."""
    target, colon, rest = entry.partition(":")
    if not colon:
        if entry.lower().endswith(("/tcp", "/udp")):
            raise _entry_error(entry, "a protocol needs a port (host:53/udp)")
        return entry, None, None
    port_text, slash, proto_text = rest.partition("/")
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        if ":" in rest or "::" in entry:
            raise _entry_error(entry, "IPv6 is not supported: sandkit's networks are IPv4 only")
        raise _entry_error(entry, f"port {port_text!r} is not a number from 1 to 65535")
    if not slash:
        return target, int(port_text), None
    proto = proto_text.lower()
    if proto not in ("tcp", "udp"):
        raise _entry_error(entry, f"protocol {proto_text!r} is neither tcp nor udp")
    return target, int(port_text), cast(Proto, proto)


def _looks_numeric(target: str) -> bool:
    """Whether ``target`` means an address or CIDR (its last label is a number): such a target
    must parse as one, never be looked up as a name (getaddrinfo reads "1.2.3" as 1.2.0.3)."""
    last = target.split("/")[0].rstrip(".").rsplit(".", 1)[-1]
    return last.isdigit() or "/" in target


def _parse_network(entry: str, target: str) -> IPv4Network:
    try:
        network = ipaddress.ip_network(target, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            wider = ipaddress.ip_network(target, strict=False)
            raise _entry_error(
                entry, f"{target} has host bits set (the network is {wider})"
            ) from None
        raise _entry_error(entry, f"{target!r} is not an IPv4 address or CIDR") from None
    if not isinstance(network, IPv4Network):
        raise _entry_error(entry, "IPv6 is not supported: sandkit's networks are IPv4 only")
    return network


def _is_host_name(name: str) -> bool:
    """RFC 1123 host names (an optional final dot); the last label is not all digits."""
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    return (
        len(name) <= 253
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


# --- resolving -------------------------------------------------------------------------------


def _lookup(name: str) -> list[IPv4Address]:
    infos = socket.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({IPv4Address(info[4][0]) for info in infos})


def _resolve_all(names: list[str], timeout: float) -> dict[str, list[IPv4Address]]:
    """Each name's addresses, looked up a few at a time on daemon threads (getaddrinfo cannot be
    interrupted: a lookup still running at the deadline is left to finish on its own)."""
    results: dict[str, list[IPv4Address] | str] = {}
    pending = list(names)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                name = pending.pop()
            try:
                found: list[IPv4Address] | str = _lookup(name) or "no IPv4 address"
            except OSError as exc:
                found = exc.strerror or str(exc)
            with lock:
                results[name] = found

    threads = [
        threading.Thread(target=work, name="sandkit-egress-resolve", daemon=True)
        for _ in range(min(_RESOLVE_THREADS, len(names)))
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        missing = [n for n in names if n not in results]
        failed = {n: r for n, r in results.items() if isinstance(r, str)}
    if missing:
        raise EgressError(
            f"egress: the host's resolver did not answer for {', '.join(missing)} within "
            f"{timeout:g} s: check the host's DNS, or write addresses instead of names"
        )
    if failed:
        name, why = sorted(failed.items())[0]
        raise EgressError(
            f"egress: host name {name!r} does not resolve on this host ({why}): check the "
            "spelling and the host's DNS, or write its address instead"
        )
    return {n: r for n, r in results.items() if not isinstance(r, str)}


# --- the always-denied destinations ----------------------------------------------------------


def always_denied() -> list[IPv4Network]:
    """What no container reaches unless named literally: every IPv4 address of every interface
    in the caller's network namespace (the host's, when called at container start), and
    `FIXED_DENIED`."""
    try:
        own = sorted({IPv4Network(address) for address in local_addresses()})
    except OSError as exc:
        raise NetworkError(f"cannot list the host's addresses: {exc}") from None
    return list(dict.fromkeys([*own, *FIXED_DENIED]))


def denied_from_json(data: object) -> list[IPv4Network]:
    """The always-denied list as it travels to the keeper (``[str(network), ...]``), read back
    strictly; EgressError for anything else."""
    malformed = EgressError(f"malformed always-denied list: {data!r:.200}")
    if not isinstance(data, list) or len(data) > MAX_DESTINATIONS:
        raise malformed
    if not all(isinstance(item, str) for item in data):
        raise malformed
    try:
        return [IPv4Network(item, strict=True) for item in data]
    except ValueError:
        raise malformed from None


_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type


def local_addresses() -> list[IPv4Address]:
    """Every IPv4 address of the caller's network namespace, secondary ones included: one
    netlink address dump (RTM_GETADDR), without loading a netlink library at container start."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC) as sock:
        sock.bind((0, 0))
        request = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(request), _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        sock.send(header + request)
        addresses: list[IPv4Address] = []
        while True:
            data = sock.recv(1 << 16)
            done = _parse_address_messages(data, addresses)
            if done:
                return addresses


def _parse_address_messages(data: bytes, addresses: list[IPv4Address]) -> bool:
    """Adds the addresses of one netlink reply to ``addresses``; True at the end of the dump."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            raise NetworkError("malformed netlink reply while listing the host's addresses")
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
            raise NetworkError(f"cannot list the host's addresses: netlink error {-code}")
        if kind == _RTM_NEWADDR:
            body = data[offset + _NLMSG_HEADER.size : offset + length]
            address = _address_of(body)
            if address is not None:
                addresses.append(address)
        offset += (length + 3) & ~3
    return False


def _address_of(body: bytes) -> IPv4Address | None:
    """The local address of one RTM_NEWADDR message (IFA_LOCAL: on a point-to-point link
    IFA_ADDRESS is the peer's)."""
    found: dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        found[kind] = body[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    raw = found.get(_IFA_LOCAL) or found.get(_IFA_ADDRESS)
    return IPv4Address(raw) if raw is not None and len(raw) == 4 else None


# --- rules -----------------------------------------------------------------------------------


def _reject(chain: str, match: str, unreachable: str = "icmp-port-unreachable") -> list[str]:
    """Refuses what ``match`` selects at once: a TCP reset, else ICMP port unreachable
    (``icmp6-port-unreachable`` in ip6tables)."""
    match = f" {match}" if match else ""
    return [
        f"-A {chain}{match} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {chain}{match} -j REJECT --reject-with {unreachable}",
    ]


def _interface(name: str, what: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise NetworkError(f"invalid {what} interface name {name!r}")
    return name


def network_rules(
    *, bridge: str, subnet: IPv4Network, gateway: IPv4Address, uplink: str | None
) -> str:
    """The iptables-restore input for a new network's namespace N (load it once, with `firewall.restore`).

    INPUT: from the bridge only DNS (UDP and TCP 53) to the gateway and replies, the rest
    refused, so a container reaches nothing that listens in N. FORWARD: replies back to the
    containers, traffic between containers, each container's own chain (`container_rules`,
    through CONTAINERS_CHAIN by source address) or else the shared DEFAULT_CHAIN
    (`default_rules`); everything else refused. NAT: MASQUERADE out of
    ``uplink`` (None: an internal network, no way out at all).
    """
    bridge = _interface(bridge, "bridge")
    if gateway not in subnet:
        raise NetworkError(f"gateway {gateway} is not in subnet {subnet}")
    from_bridge = f"-i {bridge}"
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        f":{CONTAINERS_CHAIN} - [0:0]",
        f":{DEFAULT_CHAIN} - [0:0]",
        f"-A INPUT {from_bridge} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A INPUT {from_bridge} -d {gateway}/32 -p udp --dport 53 -j ACCEPT",
        f"-A INPUT {from_bridge} -d {gateway}/32 -p tcp --dport 53 -j ACCEPT",
        *_reject("INPUT", from_bridge),
        # Only replies coming back to the containers are let through by state: what the
        # containers send is checked against their policy packet by packet, so a destination
        # taken out of a policy (set_egress) is cut at once, established or not.
        f"-A FORWARD -o {bridge} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A FORWARD {from_bridge} -o {bridge} -j ACCEPT",
        f"-A FORWARD {from_bridge} -s {subnet} -j {CONTAINERS_CHAIN}",
        # Empty (so refusing, below) until the first container with the default policy comes.
        f"-A FORWARD {from_bridge} -s {subnet} -j {DEFAULT_CHAIN}",
        # Before any default policy is loaded, and anything that does not come from the bridge.
        *_reject("FORWARD", ""),
        "COMMIT",
    ]
    if uplink is not None:
        lines += [
            "*nat",
            ":POSTROUTING ACCEPT [0:0]",
            f"-A POSTROUTING -s {subnet} -o {_interface(uplink, 'uplink')} -j MASQUERADE",
            "COMMIT",
        ]
    return _restore_input(lines)


def network_rules6(*, bridge: str) -> str:
    """The ip6tables-restore input for a new network's namespace N (load it with
    ``firewall.restore(..., ipv6=True)``). Networks are IPv4 only, but every interface gets an IPv6
    link-local address: without these rules a container could reach what listens in N on
    [::] through the bridge's, and N would route IPv6 (pasta gives N an IPv6 uplink when the
    host has one) if forwarding were ever turned on. IPv6 between containers of the network
    (bridged) is left alone, as IPv4 is."""
    bridge = _interface(bridge, "bridge")
    unreachable = "icmp6-port-unreachable"
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        # neighbour discovery (IPv6's ARP) goes through ip6tables: without it a container's
        # packets to N would vanish unanswered instead of being refused
        *(
            f"-A INPUT -i {bridge} -p ipv6-icmp --icmpv6-type {kind} -j ACCEPT"
            for kind in ("neighbour-solicitation", "neighbour-advertisement")
        ),
        *_reject("INPUT", f"-i {bridge}", unreachable),
        f"-A FORWARD -i {bridge} -o {bridge} -j ACCEPT",
        *_reject("FORWARD", "", unreachable),
        "COMMIT",
    ]
    return _restore_input(lines)


def container_chain(address: IPv4Address) -> str:
    """The name of a container's own chain: E and its address in hex (unique in the network)."""
    return f"E{int(address):08x}"


def _accept(chain: str, destination: Destination) -> list[str]:
    to = f"-A {chain} -d {destination.network}"
    if destination.port is None:
        return [f"{to} -j ACCEPT"]
    protos = [destination.proto] if destination.proto else ["tcp", "udp"]
    return [f"{to} -p {proto} --dport {destination.port} -j ACCEPT" for proto in protos]


def _names_denied(destination: Destination, denied: list[IPv4Network]) -> bool:
    """Whether an entry opens an always-denied destination: a literal address or CIDR inside
    one of them (a wider CIDR around it does not, nor does a host name resolved into it)."""
    return destination.host is None and any(
        destination.network.subnet_of(network) for network in denied
    )


def has_own_chain(policy: ResolvedEgress, denied: list[IPv4Network]) -> bool:
    """Whether a container with ``policy`` needs a chain of its own: anything but "all" that
    opens no always-denied destination (those share `DEFAULT_CHAIN`)."""
    return not policy.allow_all or any(_names_denied(d, denied) for d in policy.destinations)


def container_lines(
    *, address: IPv4Address, policy: ResolvedEgress, denied: list[IPv4Network], replace: bool
) -> list[str]:
    """The body of `container_rules` (for one transaction with others, see `filter_rules`)."""
    chain = container_chain(address)
    exceptions = [d for d in policy.destinations if _names_denied(d, denied)]
    others = [d for d in policy.destinations if d not in exceptions]
    lines = [f":{chain} - [0:0]"]
    for destination in exceptions:
        lines += _accept(chain, destination)
    for network in denied:
        lines += _reject(chain, f"-d {network}")
    for destination in others:
        lines += _accept(chain, destination)
    lines += [f"-A {chain} -j ACCEPT"] if policy.allow_all else _reject(chain, "")
    if not replace:
        lines.append(f"-A {CONTAINERS_CHAIN} -s {address}/32 -j {chain}")
    return lines


def container_rules(
    *,
    address: IPv4Address,
    policy: ResolvedEgress,
    denied: list[IPv4Network],
    replace: bool = False,
) -> str:
    """The iptables-restore input (for `firewall.restore`) that fills a container's own chain, and, unless
    ``replace``, creates the chain and its jump for packets from ``address``.

    The chain holds, in order: the allowed destinations inside an always-denied one (named
    literally: they win), the always-denied ones refused, the other allowed destinations, and
    the end: accept for "all", refuse otherwise. Declaring an existing chain in
    ``iptables-restore --noflush`` flushes it within the same transaction, so ``replace=True``
    (a running container's new policy, ``set_egress``) swaps the whole policy atomically: no
    packet sees half of it, and connections the new policy still allows go on.
    """
    return filter_rules(
        container_lines(address=address, policy=policy, denied=denied, replace=replace)
    )


def remove_container_lines(address: IPv4Address) -> list[str]:
    """The body of `remove_container_rules`."""
    chain = container_chain(address)
    return [f"-D {CONTAINERS_CHAIN} -s {address}/32 -j {chain}", f"-F {chain}", f"-X {chain}"]


def remove_container_rules(address: IPv4Address) -> str:
    """The iptables-restore input that removes a container's jump and chain."""
    return filter_rules(remove_container_lines(address))


def default_lines(denied: Iterable[IPv4Network]) -> list[str]:
    """The body of `default_rules`."""
    lines = [f":{DEFAULT_CHAIN} - [0:0]"]
    for network in denied:
        lines += _reject(DEFAULT_CHAIN, f"-d {network}")
    return [*lines, f"-A {DEFAULT_CHAIN} -j ACCEPT"]


def default_rules(denied: Iterable[IPv4Network]) -> str:
    """The iptables-restore input that fills DEFAULT_CHAIN, the policy "all" of every container
    without a chain of its own: ``denied`` refused, the rest accepted. Declaring the chain
    flushes it in the same transaction (see `container_rules`): a refresh is atomic."""
    return filter_rules(default_lines(denied))


def filter_rules(lines: list[str]) -> str:
    """``lines`` as one transaction of the filter table."""
    return _restore_input(["*filter", *lines, "COMMIT"])


def _restore_input(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


__all__ = [
    "FIXED_DENIED",
    "MAX_DESTINATIONS",
    "MAX_ENTRIES",
    "RESOLVE_TIMEOUT",
    "Destination",
    "EgressPolicy",
    "HostDestination",
    "ResolvedEgress",
    "always_denied",
    "container_chain",
    "container_lines",
    "container_rules",
    "default_lines",
    "default_rules",
    "denied_from_json",
    "filter_rules",
    "has_own_chain",
    "local_addresses",
    "network_rules",
    "network_rules6",
    "parse_entry",
    "remove_container_lines",
    "remove_container_rules",
]
