"""``sandkit build``: a Dockerfile into the local image store, with `docker build`'s flags.

sandkit build -t NAME[:TAG] [-f FILE] [--build-arg K=V] [--target STAGE] [--no-cache]
              [--network none|host|bridge] [--label K=V] [--progress auto|plain|rich|quiet]
              [-q] CONTEXT
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import SandkitError


def add_build_command(subparsers: Any) -> None:
    """Add ``build`` to the ``sandkit`` parser."""
    p = subparsers.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("context", metavar="CONTEXT", help="the directory whose files COPY and ADD use")
    p.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] of the image")
    p.add_argument(
        "-f", "--file", default=None, help="the Dockerfile (default: CONTEXT/Dockerfile)"
    )
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="an ARG value")
    p.add_argument("--target", default=None, help="the stage to build (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="build every step again")
    p.add_argument(
        "--network",
        default="bridge",
        choices=("none", "host", "bridge", "default"),
        help="the network of RUN steps (default: bridge, as Docker's builds)",
    )
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="an image label")
    p.add_argument(
        "--progress",
        default="auto",
        choices=("auto", "plain", "rich", "quiet"),
        help="how steps are shown (auto: rich on a terminal, else plain)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.set_defaults(func=cmd_build)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise SandkitError(f"{flag} {item!r}: write {flag} KEY=VALUE")
        if not sep:
            # As Docker: --build-arg NAME takes the value from the environment, if set there.
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def cmd_build(args: argparse.Namespace) -> int:
    """Build; prints the image id on stdout (progress goes to stderr)."""
    from ..build import build

    try:
        image = build(
            args.context,
            # -f is relative to the current directory, as in Docker (the API: to the context)
            dockerfile=os.path.abspath(args.file) if args.file else "Dockerfile",
            tag=args.tag,
            build_args=_pairs(args.build_arg, "--build-arg"),
            target=args.target,
            no_cache=args.no_cache,
            network="bridge" if args.network == "default" else args.network,
            labels=_pairs(args.label, "--label"),
            progress="quiet" if args.quiet else args.progress,
        )
    except SandkitError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(image.id)
    return 0
