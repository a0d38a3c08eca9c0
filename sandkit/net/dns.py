"""A network's resolver, served by its keeper on the gateway's port 53 (UDP and TCP).

It answers A queries for the names and aliases of the containers attached to the network
(single labels, case-insensitive), says NXDOMAIN for any other single label (a container's
short name never leaks to the host's resolvers), and forwards other queries, as far as the
asking container's egress policy allows (`may_forward`; REFUSED otherwise), verbatim to the
host's resolvers through a UDP socket the keeper opened in the host's network namespace before
it left it (so it reaches a resolver on the host's loopback, which containers cannot).

Bounded: a query larger than `MAX_QUERY` is dropped; at most `MAX_PENDING` forwarded queries
wait for an answer, `MAX_PENDING_PER_CLIENT` of them from one container, each at most
`FORWARD_TIMEOUT` seconds (the client retries, as resolvers do).
"""

from __future__ import annotations

import collections
import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .egress import ResolvedEgress

MAX_QUERY = 4096  # EDNS's usual payload size; a query is far smaller
MAX_REPLY = 65535
MAX_PENDING = 256
MAX_PENDING_PER_CLIENT = 64  # of which one container may have (a flood leaves the others room)
FORWARD_TIMEOUT = 5.0
# Containers come and go: an answer about one is not cached for long.
LOCAL_TTL = 5
DNS_PORT = 53

Sink = Callable[[bytes], None]


class Names:
    """The names of the containers attached to the network, and their addresses."""

    def __init__(self) -> None:
        self._addresses: dict[str, list[ipaddress.IPv4Address]] = {}

    def add(self, names: Iterable[str], address: ipaddress.IPv4Address) -> None:
        """Register ``address`` under each of ``names`` (a name two containers share resolves
        to both, as Docker's aliases do)."""
        for name in names:
            self._addresses.setdefault(name.lower(), []).append(address)

    def remove(self, names: Iterable[str], address: ipaddress.IPv4Address) -> None:
        """Forget ``address`` under each of ``names``."""
        for name in names:
            key = name.lower()
            found = self._addresses.get(key, [])
            if address in found:
                found.remove(address)
            if not found:
                self._addresses.pop(key, None)

    def lookup(self, name: str) -> list[ipaddress.IPv4Address] | None:
        """The addresses of ``name`` (a single label), or None if no container has it."""
        return self._addresses.get(name.lower())


def local_answer(query: dns.message.Message, names: Names) -> dns.message.Message | None:
    """The answer to ``query`` if it is about a single label (a container's name), else None
    (it is the upstream resolvers' to answer)."""
    if len(query.question) != 1:
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.FORMERR)
        return reply
    question = query.question[0]
    labels = question.name.relativize(dns.name.root).labels
    if len(labels) != 1:
        return None
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    found = names.lookup(labels[0].decode("ascii", "replace"))
    if found is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A and question.rdclass == dns.rdataclass.IN:
        rrset = dns.rrset.from_text_list(
            question.name, LOCAL_TTL, "IN", "A", [str(a) for a in found]
        )
        reply.answer.append(rrset)
    # other types of a known name: NOERROR with no records (IPv4 only)
    return reply


def may_forward(query: dns.message.Message, policy: ResolvedEgress | None) -> bool:
    """Whether ``query`` (one question, not about a container) may go to the host's resolvers
    for a container with egress ``policy`` (None: not a container of the network).

    The resolver is a way out of the network of its own: a container whose egress allows
    nothing could still carry data out in the names it asks about. So a container that may
    reach everything ("all") may ask anything, and any other one only the host names its
    policy names (any record type, case-insensitive; not their subdomains).
    """
    if policy is None:
        return False
    if policy.allow_all:
        return True
    asked = query.question[0].name.to_text(omit_final_dot=True).lower()
    return any(destination.host == asked for destination in policy.destinations)


def parse_query(wire: bytes) -> dns.message.Message | None:
    """The query in ``wire``, or None for anything that is not one (dropped without answer)."""
    if len(wire) > MAX_QUERY:
        return None
    try:
        message = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError):
        return None
    if message.flags & dns.flags.QR:
        return None
    return message


def error_reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    """A reply to ``query`` with only ``rcode``."""
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply.to_wire()


class Forwarder:
    """Sends queries to the host's resolvers and routes their answers back (by a fresh query id)."""

    def __init__(self, upstream: socket.socket | None, servers: list[str]) -> None:
        self.socket = upstream  # None: no upstream (an internal network, or no resolvers)
        self._servers = [(s, DNS_PORT) for s in servers]
        # new id -> (server, original id, deadline, where the answer goes, who asked)
        self._pending: dict[int, tuple[tuple[str, int], int, float, Sink, str]] = {}
        self._pending_of: collections.Counter[str] = collections.Counter()
        self._next_server = 0

    @property
    def usable(self) -> bool:
        """Whether queries can be forwarded at all."""
        return self.socket is not None and bool(self._servers)

    def forward(self, query: dns.message.Message, wire: bytes, sink: Sink, client: str) -> bool:
        """Send ``wire`` (the query of ``client``) upstream; its answer goes to ``sink``. False
        when it cannot be (no upstream, too many queries waiting, or too many of ``client``'s):
        answer SERVFAIL then."""
        self.expire()
        if not self.usable or len(self._pending) >= MAX_PENDING:
            return False
        if self._pending_of[client] >= MAX_PENDING_PER_CLIENT:
            return False
        assert self.socket is not None
        new_id = secrets.randbelow(1 << 16)
        while new_id in self._pending:
            new_id = secrets.randbelow(1 << 16)
        server = self._servers[self._next_server % len(self._servers)]
        self._next_server += 1
        try:
            self.socket.sendto(new_id.to_bytes(2, "big") + wire[2:], server)
        except OSError:
            return False
        deadline = time.monotonic() + FORWARD_TIMEOUT
        self._pending[new_id] = (server, query.id, deadline, sink, client)
        self._pending_of[client] += 1
        return True

    def receive(self) -> None:
        """Read one answer from upstream and pass it on (anything unexpected is dropped)."""
        assert self.socket is not None
        try:
            wire, source = self.socket.recvfrom(MAX_REPLY + 1)
        except OSError:
            return
        if len(wire) < 12 or len(wire) > MAX_REPLY:
            return
        entry = self._pending.get(int.from_bytes(wire[:2], "big"))
        if entry is None or entry[0] != source[:2]:
            return
        self._forget(int.from_bytes(wire[:2], "big"))
        entry[3](entry[1].to_bytes(2, "big") + wire[2:])

    def expire(self) -> None:
        """Forget queries whose answer is overdue."""
        now = time.monotonic()
        for key in [k for k, v in self._pending.items() if v[2] < now]:
            self._forget(key)

    def _forget(self, key: int) -> None:
        client = self._pending.pop(key)[4]
        self._pending_of[client] -= 1
        if not self._pending_of[client]:
            del self._pending_of[client]
