"""The iptables rules of a network's namespace N (never the host's), as `egress` writes them:
NAT out of the uplink's interface, nothing reachable in N but the resolver, and each container's
egress chain. Applied with one ``iptables-restore`` per change, run by the keeper inside N."""

from __future__ import annotations

import ipaddress

from . import egress, uplink
from . import restore as restore_tool
from .netlink import BRIDGE_NAME

UPLINK_NAME = uplink.TAP_NAME  # the uplink's interface in N


def restore(ruleset: str, *, flush: bool, lock_file: str | None, ipv6: bool = False) -> None:
    """Load ``ruleset`` into this namespace's tables (``flush``: replacing what they hold;
    ``ipv6``: with ip6tables-restore; ``lock_file``: the xtables lock to take, None for the
    system's)."""
    name = "ip6tables-restore" if ipv6 else "iptables-restore"
    program = restore_tool.find(
        name, missing=f"{name} is not installed: networks need it (apt install iptables)"
    )
    command = [program, "-w"] + ([] if flush else ["--noflush"])
    # A rootless keeper cannot open /run/xtables.lock: each network has its own lock anyway.
    restore_tool.run(command, ruleset, {"XTABLES_LOCKFILE": lock_file} if lock_file else None)


def install_base(
    subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, *, uplink: bool, lock_file: str
) -> None:
    """The rules N starts with (`egress.network_rules` and `egress.network_rules6`)."""
    rules = egress.network_rules(
        bridge=BRIDGE_NAME, subnet=subnet, gateway=gateway, uplink=UPLINK_NAME if uplink else None
    )
    restore(rules, flush=True, lock_file=lock_file)
    restore(egress.network_rules6(bridge=BRIDGE_NAME), flush=True, lock_file=lock_file, ipv6=True)


class EgressTables:
    """The containers' egress rules in N, by address slot, loaded with as few
    ``iptables-restore`` runs as the policies allow (each one is milliseconds of process start
    in the keeper's loop).

    A container with the default policy ("all", `egress.has_own_chain` false) has no chain of
    its own: it shares DEFAULT_CHAIN, which refuses the union of the always-denied lists of the
    containers using it (the host's addresses: the same list for every container of one host),
    so attaching it usually costs no restore at all. Any other policy gets its own chain. A
    departing container's chain is left in place (only its address can reach it, and `portguard`
    keeps that address to its own port, which is gone): the next container given that address
    replaces it, or removes it, in the same transaction as its own rules."""

    def __init__(self, lock_file: str) -> None:
        self.lock_file = lock_file
        self.own_chains: set[ipaddress.IPv4Address] = set()  # loaded, in use or left over
        # the always-denied list of each attached container on DEFAULT_CHAIN
        self.default_users: dict[ipaddress.IPv4Address, frozenset[ipaddress.IPv4Network]] = {}
        self.default_denied: frozenset[ipaddress.IPv4Network] | None = None  # None: not loaded

    def apply(
        self,
        address: ipaddress.IPv4Address,
        policy: egress.ResolvedEgress,
        denied: list[ipaddress.IPv4Network],
    ) -> None:
        """Give the container at ``address`` its ``policy`` (at attach, before its port exists,
        or to swap a running container's): one transaction, none when nothing changes."""
        own = egress.has_own_chain(policy, denied)
        lines: list[str] = []
        if own:
            replace = address in self.own_chains
            lines += egress.container_lines(
                address=address, policy=policy, denied=denied, replace=replace
            )
        elif address in self.own_chains:
            lines += egress.remove_container_lines(address)
        users = {a: d for a, d in self.default_users.items() if a != address}
        if not own:
            users[address] = frozenset(denied)
        shared = frozenset().union(*users.values())
        if not own and shared != self.default_denied:
            lines += egress.default_lines(sorted(shared))
        if lines:
            restore(egress.filter_rules(lines), flush=False, lock_file=self.lock_file)
            if not own:
                self.default_denied = shared
        self.default_users = users
        if own:
            self.own_chains.add(address)
        else:
            self.own_chains.discard(address)

    def release(self, address: ipaddress.IPv4Address) -> None:
        """The container at ``address`` left: nothing to run (see the class)."""
        self.default_users.pop(address, None)
