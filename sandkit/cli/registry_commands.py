"""The registry commands; cli/images.py adds them to the parser (add_registry_commands()).

    sandkit pull [-q] [--platform os/arch] [--insecure] [--ca-file PEM] NAME[:TAG|@DIGEST]
    sandkit push [-q] [--insecure] [--ca-file PEM] [--chunk-size BYTES] NAME[:TAG] [DEST]
    sandkit login [-u USER] [-p PASSWORD | --password-stdin] [--insecure] [--ca-file PEM] [SERVER]
    sandkit logout [SERVER]

Progress: one bar per layer (rich) when stderr is a terminal; otherwise one plain line per
finished step, as `docker pull` does when piped. Handlers return an exit code (``func``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any, Self

from ..errors import SandkitError
from ..images.image import Image

if TYPE_CHECKING:
    # (the registry's modules bring the HTTP stack: imported by the commands that use it)
    from ..images.registry.events import Progress

_WORDS = {
    "exists": "Already exists",
    "complete": "Complete",
    "mounted": "Mounted",
    "waiting": "Waiting",
    "retrying": "Retrying",
    "downloading": "Downloading",
    "uploading": "Pushing",
}


def add_registry_commands(subparsers: Any) -> None:
    """Add ``pull``, ``push``, ``login`` and ``logout`` to the parser."""
    p = subparsers.add_parser("pull", help="download an image from a registry")
    p.add_argument("image", help="NAME[:TAG|@DIGEST], e.g. registry.example:5000/team/app:1.2")
    p.add_argument("--platform", help="os/arch[/variant] (default: this host)")
    _connection_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.set_defaults(func=cmd_pull)

    p = subparsers.add_parser("push", help="upload an image to a registry")
    p.add_argument("image", help="local image NAME[:TAG]")
    p.add_argument("destination", nargs="?", help="push under this reference instead of IMAGE")
    p.add_argument("--chunk-size", type=int, help="upload blobs above this many bytes in chunks")
    _connection_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser("login", help="log in to a registry (saved in the Docker config)")
    p.add_argument("server", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="insecure on a shared machine: prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _connection_options(p)
    p.set_defaults(func=cmd_login)

    p = subparsers.add_parser("logout", help="forget the saved login for a registry")
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_logout)


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP and unverified TLS for this registry",
    )
    p.add_argument("--ca-file", help="PEM file of a CA to trust for this registry")


def _err(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


class _Display:
    """Turns Progress events into bars (terminal) or lines (pipe); silent with -q."""

    def __init__(self, quiet: bool, verb: str) -> None:
        self.quiet = quiet
        self.verb = verb
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
            from rich.progress import Progress as Bars

            self.bars = Bars(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=False,
            )

    def __enter__(self) -> Self:
        if self.bars:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars:
            self.bars.stop()

    def __call__(self, e: Progress) -> None:
        if self.quiet or e.status in ("resolving", "manifest"):
            return
        short = e.id.removeprefix("sha256:")[:12]
        word = f"{self.verb} complete" if e.status == "complete" else _WORDS.get(e.status, e.status)
        if e.status == "mounted":
            word = f"Mounted from {e.detail}"
        if self.bars is None:
            if e.status not in ("downloading", "uploading", "waiting"):
                print(f"{short}: {word}", file=sys.stderr)
            return
        task = self.tasks.get(e.id)
        if task is None:
            task = self.tasks[e.id] = self.bars.add_task(short, total=e.total)
        total = e.total if e.total is not None else self.bars.tasks[task].total
        self.bars.update(task, description=f"{short}: {word}", completed=e.current, total=total)


def cmd_pull(args: argparse.Namespace) -> int:
    """``sandkit pull``: pull an image into the local store, with progress bars on a terminal."""
    try:
        with _Display(args.quiet, "Pull") as show:
            image = Image.pull(
                args.image,
                platform=args.platform,
                insecure=args.insecure,
                ca_file=args.ca_file,
                progress=show,
            )
    except (SandkitError, ValueError) as e:
        return _err(str(e))
    if not args.quiet:
        print(f"Digest: {image.digest}", file=sys.stderr)
    print(args.image if args.quiet else f"Pulled {args.image} ({image.id[:19]})")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """``sandkit push``: push a local image, under its own name or ``destination``; prints the
    manifest digest."""
    try:
        image = Image.get(args.image)
        target = args.destination or args.image
        with _Display(args.quiet, "Push") as show:
            digest = image.push(
                target,
                insecure=args.insecure,
                ca_file=args.ca_file,
                progress=show,
                chunk_size=args.chunk_size,
            )
    except (SandkitError, ValueError) as e:
        return _err(str(e))
    print(digest if args.quiet else f"{target}: digest: {digest}")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    """``sandkit login``: check the credentials against the registry, then save them in the
    Docker config (asking for what the flags and stdin did not give)."""
    from ..images.registry import login

    username = args.username or (input("Username: ") if sys.stdin.isatty() else "")
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = args.password or (getpass.getpass("Password: ") if sys.stdin.isatty() else "")
    try:
        path = login(args.server, username, password, insecure=args.insecure, ca_file=args.ca_file)
    except SandkitError as e:
        return _err(str(e))
    print(f"Login Succeeded (saved in {path})")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    """``sandkit logout``: remove the saved credentials of a registry."""
    from ..images.registry import logout

    try:
        logout(args.server)
    except SandkitError as e:
        return _err(str(e))
    print(f"Removing login credentials for {args.server}")
    return 0
