"""`sandkit cp`: copy files and directories between a detached container and the host, or a tar
on stdin/stdout, by `docker cp`'s rules.

The copy runs here, in the CLI's process, with the code of `Container.copy_in`/`copy_out`
(sandkit/runtime/copy.py): the container's supervisor only has its init open a directory (or
file) of the container, resolved in the container's root, and sends the fd over its socket.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio

from .. import errors
from ..detached import state
from .parser import Subparsers

if TYPE_CHECKING:
    pass


def add_copy_command(commands: Subparsers) -> None:
    """Add ``cp`` to the parser."""
    p = commands.add_parser(
        "cp",
        help="copy files/folders between a container and the local filesystem",
        description="Copy files/folders between a (detached) container and the local "
        "filesystem. Use '-' as the source to read a tar archive from stdin and extract it to "
        "a directory destination in a container, or as the destination to stream a tar "
        "archive of a container source to stdout.",
        usage="sandkit cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
        "       sandkit cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    )
    p.add_argument(
        "-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)"
    )
    p.add_argument(
        "-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="suppress progress output (sandkit prints none)"
    )
    p.add_argument("src", metavar="SRC_PATH")
    p.add_argument("dst", metavar="DEST_PATH")
    p.set_defaults(func=cmd_cp)


def split_argument(arg: str) -> tuple[str | None, str]:
    """(container, path) of a ``cp`` argument, by Docker's rule: an absolute path, or one whose
    part before the first ``:`` starts with ``.``, is local; ``NAME:PATH`` is a container's."""
    if arg.startswith("/"):
        return None, arg
    name, colon, path = arg.partition(":")
    if not colon or name.startswith("."):
        return None, arg
    # Docker takes a container's relative path from its root, whatever its workdir.
    return name, path if path.startswith("/") else "/" + path


def cmd_cp(args: argparse.Namespace) -> int:
    """``sandkit cp``: returns 0, or raises the copy's error."""
    src_container, src = split_argument(args.src)
    dst_container, dst = split_argument(args.dst)
    if src_container and dst_container:
        raise errors.CopyError("copying between containers is not supported")
    if not src_container and not dst_container:
        raise errors.CopyError("must specify at least one container source (CONTAINER:PATH)")
    record = state.find(src_container or dst_container or "")
    if not record.running:
        raise state.ContainerNotRunning(
            f"Container {record.id} is not running: sandkit copies to and from running "
            "containers only"
        )
    return anyio.run(_copy, record, src_container is not None, src, dst, args, backend="trio")


async def _copy(
    record: state.Record, out: bool, src: str, dst: str, args: argparse.Namespace
) -> int:
    from ._runtime import RemoteSide, copy

    side = RemoteSide(record)
    options = {"archive": args.archive, "follow_link": args.follow_link}

    def run() -> None:
        if out and dst == "-":
            for chunk in copy.archive(side, src, follow_link=args.follow_link):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        elif out:
            copy.copy_out(side, src, dst, **options)
        elif src == "-":
            copy.copy_tar_in(sys.stdin.buffer, side, dst, archive=args.archive)
        else:
            copy.copy_in(side, src, dst, **options)

    await anyio.to_thread.run_sync(run)
    return 0
