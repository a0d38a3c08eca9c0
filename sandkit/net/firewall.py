"""The iptables rules of a network's namespace N (never the host's): NAT out of pasta's
interface, nothing reachable in N but the resolver, and the hook where each container's egress
rules go. Applied with one ``iptables-restore`` per change, run by the keeper inside N."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from typing import Any

from ..errors import NetworkError, NetworkUnavailableError
from .netlink import BRIDGE_NAME

UPLINK_NAME = "up0"  # pasta's interface in N
EGRESS_CHAIN = "SK-EGRESS"  # traffic from containers to the outside passes through it


def _iptables_restore() -> str:
    found = shutil.which("iptables-restore", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise NetworkUnavailableError(
            "iptables-restore is not installed: networks need it (apt install iptables)"
        )
    return found


def base_rules(
    subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, *, uplink: bool
) -> str:
    """The ruleset of N for ``iptables-restore``."""
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines.append(f":{EGRESS_CHAIN} - [0:0]")
    # N itself offers containers only the resolver; anything else fails at once.
    lines += [
        "-A INPUT -i lo -j ACCEPT",
        f"-A INPUT -i {BRIDGE_NAME} -d {gateway} -p udp --dport 53 -j ACCEPT",
        f"-A INPUT -i {BRIDGE_NAME} -d {gateway} -p tcp --dport 53 -j ACCEPT",
        f"-A INPUT -i {BRIDGE_NAME} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A INPUT -i {BRIDGE_NAME} -j REJECT --reject-with icmp-port-unreachable",
    ]
    # Between containers of the network (seen here only if br_netfilter is loaded): allowed.
    lines.append(f"-A FORWARD -i {BRIDGE_NAME} -o {BRIDGE_NAME} -j ACCEPT")
    if uplink:
        lines += [
            f"-A FORWARD -i {UPLINK_NAME} -o {BRIDGE_NAME} -m conntrack "
            "--ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"-A FORWARD -i {BRIDGE_NAME} -o {UPLINK_NAME} -s {subnet} -j {EGRESS_CHAIN}",
            # Until sandkit.net.egress fills it per container: everything out is allowed.
            f"-A {EGRESS_CHAIN} -j ACCEPT",
        ]
    lines.append(f"-A FORWARD -i {BRIDGE_NAME} -p tcp -j REJECT --reject-with tcp-reset")
    lines.append(f"-A FORWARD -i {BRIDGE_NAME} -j REJECT --reject-with icmp-port-unreachable")
    lines.append("COMMIT")
    if uplink:
        lines += [
            "*nat",
            f"-A POSTROUTING -s {subnet} -o {UPLINK_NAME} -j MASQUERADE",
            "COMMIT",
        ]
    return "\n".join(lines) + "\n"


def restore(ruleset: str, *, flush: bool, lock_file: str) -> None:
    """Load ``ruleset`` into this namespace's tables (``flush``: replacing what they hold)."""
    command = [_iptables_restore(), "-w"] + ([] if flush else ["--noflush"])
    # A rootless keeper cannot open /run/xtables.lock: each network has its own lock anyway.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "XTABLES_LOCKFILE": lock_file}
    done = subprocess.run(
        command, input=ruleset.encode(), capture_output=True, env=env, check=False
    )
    if done.returncode != 0:
        raise NetworkError(
            f"iptables-restore failed in the network's namespace: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )


def install_base(
    subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, *, uplink: bool, lock_file: str
) -> None:
    """The rules N starts with (see `base_rules`)."""
    restore(base_rules(subnet, gateway, uplink=uplink), flush=True, lock_file=lock_file)


def apply_egress(address: ipaddress.IPv4Address, policy: Any) -> None:
    """Where a container's egress rules are installed when it attaches (``policy`` as given to
    the container's ``egress=``), and `remove_egress` where they go when it detaches.

    For now every container may reach everything outside: the egress module
    (sandkit/net/egress.py) is wired here by the lead.
    """
    del address, policy


def remove_egress(address: ipaddress.IPv4Address) -> None:
    """Remove what `apply_egress` installed for ``address``."""
    del address
