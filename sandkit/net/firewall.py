"""The iptables rules of a network's namespace N (never the host's), as `egress` writes them:
NAT out of pasta's interface, nothing reachable in N but the resolver, and each container's
egress chain. Applied with one ``iptables-restore`` per change, run by the keeper inside N."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

from ..errors import NetworkError, NetworkUnavailableError
from . import egress
from .netlink import BRIDGE_NAME

UPLINK_NAME = "up0"  # pasta's interface in N
RESTORE_TIMEOUT = 30.0  # for one *tables-restore: far more than a few hundred rules take


def _iptables_restore(ipv6: bool) -> str:
    program = "ip6tables-restore" if ipv6 else "iptables-restore"
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise NetworkUnavailableError(
            f"{program} is not installed: networks need it (apt install iptables)"
        )
    return found


def restore(ruleset: str, *, flush: bool, lock_file: str, ipv6: bool = False) -> None:
    """Load ``ruleset`` into this namespace's tables (``flush``: replacing what they hold;
    ``ipv6``: with ip6tables-restore)."""
    command = [_iptables_restore(ipv6), "-w"] + ([] if flush else ["--noflush"])
    # A rootless keeper cannot open /run/xtables.lock: each network has its own lock anyway.
    load(command, ruleset, {"XTABLES_LOCKFILE": lock_file})


def load(command: list[str], ruleset: str, env: dict[str, str] | None = None) -> None:
    """Run ``command`` (an ``*tables-restore``) with ``ruleset`` on its stdin, in this
    namespace, with ``env`` added to a fixed PATH; NetworkError naming the program and what it
    said when it fails or takes longer than `RESTORE_TIMEOUT`."""
    program = os.path.basename(command[0])
    try:
        done = subprocess.run(
            command,
            input=ruleset.encode(),
            capture_output=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})},
            timeout=RESTORE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{program} did not finish within {RESTORE_TIMEOUT:g} s") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-2000:]
        raise NetworkError(f"{program} failed in the network's namespace: {message}")


def install_base(
    subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, *, uplink: bool, lock_file: str
) -> None:
    """The rules N starts with (`egress.network_rules` and `egress.network_rules6`)."""
    rules = egress.network_rules(
        bridge=BRIDGE_NAME, subnet=subnet, gateway=gateway, uplink=UPLINK_NAME if uplink else None
    )
    restore(rules, flush=True, lock_file=lock_file)
    restore(egress.network_rules6(bridge=BRIDGE_NAME), flush=True, lock_file=lock_file, ipv6=True)


def apply_egress(
    address: ipaddress.IPv4Address,
    policy: egress.ResolvedEgress,
    denied: list[ipaddress.IPv4Network],
    *,
    lock_file: str,
) -> None:
    """Install the egress chain of the container at ``address`` (`egress.container_rules`);
    `remove_egress` removes it when the container detaches."""
    rules = egress.container_rules(address=address, policy=policy, denied=denied)
    restore(rules, flush=False, lock_file=lock_file)


def remove_egress(address: ipaddress.IPv4Address, *, lock_file: str) -> None:
    """Remove what `apply_egress` installed for ``address``."""
    restore(egress.remove_container_rules(address), flush=False, lock_file=lock_file)
