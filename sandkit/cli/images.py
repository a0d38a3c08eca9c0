"""Image and registry commands (image_commands.py, registry_commands.py) are wired in here,
and `inspect` learns containers (as `docker inspect` takes either)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import errors
from ..detached import state
from ..images.image import Image
from . import exitcodes
from .containers import inspect_record
from .image_commands import add_image_commands
from .parser import Subparsers
from .registry_commands import add_registry_commands


def add_image_and_registry_commands(commands: Subparsers) -> None:
    """Add the image and registry commands (``images``, ``pull``, ``push``, ``load``, ``save``,
    ``login``...) to the parser, and ``inspect`` for containers and images alike."""
    add_image_commands(commands)
    add_registry_commands(commands)
    inspect = commands.choices["inspect"]
    inspect.description = "Show details of containers or images as JSON."
    inspect.add_argument(
        "-f",
        "--format",
        choices=("json",),
        default="json",
        help="output format (JSON, the only one)",
    )
    inspect.add_argument(
        "--type", choices=("container", "image"), help="only look for this kind of object"
    )
    inspect.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    """``sandkit inspect``: print each named container or image as JSON (``--type`` narrows the
    search); exits 1 when one is not found."""
    found: list[dict[str, Any]] = []
    code = exitcodes.OK
    for ref in args.images:
        try:
            found.append(_inspect_one(ref, args.type))
        except errors.SandkitError:
            print(f"Error: No such object: {ref}", file=sys.stderr)
            code = exitcodes.FAILED
    print(json.dumps(found, indent=4))
    return code


def _inspect_one(ref: str, kind: str | None) -> dict[str, Any]:
    if kind != "image":
        try:
            return inspect_record(state.find(ref))
        except errors.SandkitError:
            if kind == "container":
                raise
    return Image.get(ref).inspect()
