"""The network commands, Docker's names and output:

    sandkit network create [--subnet CIDR] [--internal] [--label K=V] NAME
    sandkit network ls [-q] [--format table|json]      sandkit network inspect NAME...
    sandkit network rm NAME...                         sandkit network prune [-f]
    sandkit network connect [--alias A] NAME CONTAINER  sandkit network disconnect NAME CONTAINER

A network is a definition (sandkit/net/store.py); what makes it work exists only while
containers are on it, so these commands never start anything (but connect, whose container's
supervisor joins the network).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import errors
from ..detached import state
from ..net import store
from ..net.store import NetworkRecord
from . import containers, exitcodes, options
from .output import print_table
from .parser import Subparsers


def add_network_commands(commands: Subparsers) -> None:
    """Add ``network create/ls/inspect/rm/prune`` to the parser."""
    network = commands.add_parser(
        "network", help="manage networks", description="Manage networks."
    ).add_subparsers(dest="network_command", metavar="COMMAND", required=True)

    p = network.add_parser("create", help="create a network", description="Create a network.")
    p.add_argument("--subnet", help="IPv4 subnet in CIDR form (default: a free /24 of 10.89/16)")
    p.add_argument(
        "--internal", action="store_true", help="no outbound access: containers reach each other"
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "-d", "--driver", default="bridge", choices=("bridge",), help="the only driver: bridge"
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_create)

    for name in ("ls", "list"):
        p = network.add_parser(name, help="list networks", description="List networks.")
        p.add_argument("-q", "--quiet", action="store_true", help="only network ids")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=cmd_ls)

    p = network.add_parser(
        "inspect", help="show networks as JSON", description="Show networks as JSON."
    )
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=cmd_inspect)

    for name in ("rm", "remove"):
        p = network.add_parser(name, help="remove networks", description="Remove networks.")
        p.add_argument("networks", nargs="+")
        p.set_defaults(func=cmd_rm)

    p = network.add_parser(
        "connect",
        help="connect a running container to a network",
        description="Connect a running (detached) container to a network.",
    )
    p.add_argument("--alias", action="append", default=[], metavar="NAME", help="another name")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_connect)

    p = network.add_parser(
        "disconnect",
        help="disconnect a running container from a network",
        description="Disconnect a running (detached) container from a network.",
    )
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=cmd_disconnect)

    p = network.add_parser(
        "prune",
        help="remove networks no container is on",
        description="Remove all networks that no container is on.",
    )
    p.add_argument("-f", "--force", action="store_true", help="do not ask (never asks anyway)")
    p.set_defaults(func=cmd_prune)


def cmd_create(args: argparse.Namespace) -> int:
    """``sandkit network create``: record the network and print its id (as Docker does)."""
    record = store.create_network(
        args.name,
        subnet=args.subnet,
        internal=args.internal,
        labels=options.labels(args.label, errors.NetworkSpecError),
    )
    print(record.id)
    return exitcodes.OK


def cmd_ls(args: argparse.Namespace) -> int:
    """``sandkit network ls``: Docker's columns (NETWORK ID, NAME, DRIVER, SCOPE)."""
    records = store.list_networks()
    if args.quiet:
        for record in records:
            print(record.short_id)
    elif args.format == "json":
        for record in records:
            print(json.dumps(_summary(record)))
    else:
        rows = [[r.short_id, r.name, "bridge", "local"] for r in records]
        print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows)
    return exitcodes.OK


def _summary(record: NetworkRecord) -> dict[str, Any]:
    return {
        "ID": record.short_id,
        "Name": record.name,
        "Driver": "bridge",
        "Scope": "local",
        "Internal": str(record.internal).lower(),
        "Labels": ",".join(f"{k}={v}" for k, v in record.labels.items()),
    }


def inspect_network(record: NetworkRecord) -> dict[str, Any]:
    """A network as `docker network inspect` shows one (the fields that apply here)."""
    return {
        "Name": record.name,
        "Id": record.id,
        "Created": record.created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": str(record.subnet), "Gateway": str(record.gateway)}],
        },
        "Internal": record.internal,
        "Attachable": True,
        "Ingress": False,
        "Containers": _containers_on(record),
        "Options": {},
        "Labels": dict(record.labels),
    }


def _containers_on(record: NetworkRecord) -> dict[str, dict[str, str]]:
    """Docker's "Containers" of a network, as its keeper lists them: by container id, its
    name, address and MAC. A detached container's name is its ``--name``; any other's (one
    of a program using the library) its host name."""
    from ..net import client  # the keeper's side: only for inspect

    names = {r.id: r.name for r in state.records()}
    return {
        container_id: {
            "Name": names.get(container_id) or entry["Name"],
            "EndpointID": "",
            "MacAddress": entry["MacAddress"],
            "IPv4Address": entry["IPv4Address"],
            "IPv6Address": "",
        }
        for container_id, entry in client.attached_containers(record).items()
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    """``sandkit network inspect``: each network as JSON; exits 1 when one is not found."""
    found = []
    code = exitcodes.OK
    for name in args.networks:
        try:
            found.append(inspect_network(store.get_network(name)))
        except errors.NetworkNotFoundError:
            print(f"Error: No such network: {name}", file=sys.stderr)
            code = exitcodes.FAILED
    print(json.dumps(found, indent=4))
    return code


def cmd_rm(args: argparse.Namespace) -> int:
    """``sandkit network rm``: remove each network, printing its name; exits 1 if one failed."""
    code = exitcodes.OK
    for name in args.networks:
        try:
            store.remove_network(name)
            print(name)
        except errors.NetworkError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = exitcodes.FAILED
    return code


def cmd_connect(args: argparse.Namespace) -> int:
    """``sandkit network connect``: the detached container's supervisor joins the network;
    nothing printed, exit 1 with Docker's "Error: ..." when it cannot."""
    store.get_network(args.network)  # Docker names an unknown network before the container
    request = {"op": "connect", "network": args.network, "aliases": list(args.alias)}
    containers.ask_supervisor(args.container, request)
    return exitcodes.OK


def cmd_disconnect(args: argparse.Namespace) -> int:
    """``sandkit network disconnect``: the detached container leaves the network."""
    store.get_network(args.network)
    containers.ask_supervisor(args.container, {"op": "disconnect", "network": args.network})
    return exitcodes.OK


def cmd_prune(args: argparse.Namespace) -> int:
    """``sandkit network prune``: remove every user network no container is on."""
    removed = []
    for record in store.list_networks():
        if record.builtin:
            continue
        try:
            store.remove_network(record.id)
        except errors.NetworkInUseError:
            continue
        removed.append(record.name)
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return exitcodes.OK
