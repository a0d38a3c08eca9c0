"""The volume commands, Docker's names, output and exit codes:

    sandkit volume create [--label K=V] [-o size=1g | -o type=tmpfs -o device=tmpfs -o o=size=64m]
                          [NAME]
    sandkit volume ls [-q] [--format table|json]
    sandkit volume inspect NAME...                     sandkit volume rm NAME...
    sandkit volume prune [-a] [-f]

A volume is a directory in sandkit's home (sandkit/runtime/volumes.py) that containers mount
with ``-v NAME:/path``; these commands never start anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import errors
from ..volume import Volume
from . import exitcodes, options
from .image_commands import _human
from .output import print_table
from .parser import Subparsers


def add_volume_commands(commands: Subparsers) -> None:
    """Add ``volume create/ls/inspect/rm/prune`` to the parser."""
    volume = commands.add_parser(
        "volume", help="manage volumes", description="Manage volumes."
    ).add_subparsers(dest="volume_command", metavar="COMMAND", required=True)

    p = volume.add_parser("create", help="create a volume", description="Create a volume.")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-d", "--driver", default="local", choices=("local",), help="only: local")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="size=SIZE (an ext4 image of that size), or type=tmpfs device=tmpfs o=size=SIZE "
        "(in memory); root only",
    )
    p.add_argument("name", nargs="?", help="the volume's name (default: a random one)")
    p.set_defaults(func=cmd_create)

    for name in ("ls", "list"):
        p = volume.add_parser(name, help="list volumes", description="List volumes.")
        p.add_argument("-q", "--quiet", action="store_true", help="only volume names")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=cmd_ls)

    p = volume.add_parser(
        "inspect", help="show volumes as JSON", description="Show volumes as JSON."
    )
    p.add_argument("volumes", nargs="+")
    p.set_defaults(func=cmd_inspect)

    for name in ("rm", "remove"):
        p = volume.add_parser(name, help="remove volumes", description="Remove volumes.")
        p.add_argument("-f", "--force", action="store_true", help="no error for a missing one")
        p.add_argument("volumes", nargs="+")
        p.set_defaults(func=cmd_rm)

    p = volume.add_parser(
        "prune",
        help="remove volumes no container uses",
        description="Remove anonymous volumes no container uses; with --all, every unused one.",
    )
    p.add_argument("-a", "--all", action="store_true", help="named volumes too")
    p.add_argument("-f", "--force", action="store_true", help="do not ask (never asks anyway)")
    p.set_defaults(func=cmd_prune)


def _backing(pairs: list[str]) -> dict[str, Any]:
    """Volume keywords from Docker's local-driver ``--opt``s: ``size=`` (sandkit: an ext4 image,
    Docker: an xfs quota), or ``type=tmpfs device=tmpfs o=size=...``."""
    opts = dict(pair.partition("=")[::2] for pair in pairs)
    if not opts:
        return {}
    if set(opts) == {"size"}:
        return {"size": opts["size"]}
    mount_options = dict(o.partition("=")[::2] for o in opts.get("o", "").split(",") if o)
    if (
        opts.get("type") == "tmpfs"
        and opts.get("device") == "tmpfs"
        and set(opts) <= {"type", "device", "o"}
        and set(mount_options) <= {"size"}
    ):
        return {"tmpfs": True, "size": mount_options.get("size")}
    raise errors.VolumeSpecError(
        f"unsupported volume options {' '.join(pairs)!r}: use -o size=SIZE, or -o type=tmpfs "
        "-o device=tmpfs [-o o=size=SIZE]"
    )


def cmd_create(args: argparse.Namespace) -> int:
    """``sandkit volume create``: make the volume (an existing one is kept) and print its name."""
    print(
        Volume(
            args.name,
            labels=options.labels(args.label, errors.VolumeSpecError),
            **_backing(args.opt),
        )
        .create()
        .name
    )
    return exitcodes.OK


def cmd_ls(args: argparse.Namespace) -> int:
    """``sandkit volume ls``: Docker's columns (DRIVER, VOLUME NAME)."""
    found = Volume.all()
    if args.quiet:
        for volume in found:
            print(volume.name)
    elif args.format == "json":
        for volume in found:
            print(json.dumps(_summary(volume)))
    else:
        print_table(["DRIVER", "VOLUME NAME"], [["local", v.name] for v in found])
    return exitcodes.OK


def _summary(volume: Volume) -> dict[str, Any]:
    return {
        "Driver": "local",
        "Labels": ",".join(f"{k}={v}" for k, v in volume.labels.items()),
        "Mountpoint": str(volume.mountpoint),
        "Name": volume.name,
        "Scope": "local",
    }


def inspect_volume(volume: Volume) -> dict[str, Any]:
    """A volume as `docker volume inspect` shows one."""
    return {
        "CreatedAt": volume.created,
        "Driver": "local",
        "Labels": volume.labels or None,
        "Mountpoint": str(volume.mountpoint),
        "Name": volume.name,
        "Options": volume.options or None,
        "Scope": "local",
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    """``sandkit volume inspect``: each volume as JSON; exits 1 when one is not found."""
    found = []
    code = exitcodes.OK
    for name in args.volumes:
        try:
            found.append(inspect_volume(Volume.get(name)))
        except errors.VolumeError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = exitcodes.FAILED
    print(json.dumps(found, indent=4))
    return code


def cmd_rm(args: argparse.Namespace) -> int:
    """``sandkit volume rm``: remove each volume, printing its name; exits 1 if one failed."""
    code = exitcodes.OK
    for name in args.volumes:
        try:
            Volume.get(name).remove()
            print(name)
        except errors.VolumeNotFoundError:
            if not args.force:
                print(f"Error: no such volume: {name}", file=sys.stderr)
                code = exitcodes.FAILED
        except errors.VolumeError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = exitcodes.FAILED
    return code


def cmd_prune(args: argparse.Namespace) -> int:
    """``sandkit volume prune``: remove the unused volumes (as Docker >= 23: only anonymous ones
    unless ``--all``) and say how much was freed."""
    removed = Volume.prune(all=args.all)
    if removed:
        print("Deleted Volumes:")
        for name, _ in removed:
            print(name)
        print()
    print(f"Total reclaimed space: {_human(sum(size for _, size in removed))}")
    return exitcodes.OK
