"""`sandkit diff`, `commit`, `export` (a detached container's writable layer, through its
supervisor) and `history` (an image's)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import errors
from .output import print_table, truncate
from .parser import Subparsers

if TYPE_CHECKING:
    from ._runtime import AsyncAttachedContainer

T = TypeVar("T")


def add_layer_commands(commands: Subparsers) -> None:
    """Add ``diff``, ``commit``, ``export`` and ``history`` to the parser."""
    p = commands.add_parser(
        "diff",
        help="inspect changes to files on a container's filesystem",
        description="List what a running container changed: A added, C changed, D deleted.",
    )
    p.add_argument("container")
    p.set_defaults(func=cmd_diff)

    p = commands.add_parser(
        "commit",
        help="create a new image from a container's changes",
        description="Make an image of a running container: its image plus a layer of its changes.",
    )
    p.add_argument("-a", "--author", default="", help='author (e.g. "Jane <jane@example.com>")')
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, "
        "EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL)",
    )
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("container")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(func=cmd_commit)

    p = commands.add_parser(
        "export",
        help="export a container's filesystem as a tar archive",
        description="Write a running container's whole filesystem as one tar.",
    )
    p.add_argument("-o", "--output", help="write to a file, instead of STDOUT")
    p.add_argument("container")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "history",
        help="show the history of an image",
        description="The steps an image was made by, newest first.",
    )
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("image")
    p.set_defaults(func=cmd_history)


def _on_container(ref: str, work: Callable[[AsyncAttachedContainer], Awaitable[T]]) -> T:
    """``work(container)`` on the running detached container ``ref``."""
    import anyio

    from ._runtime import AsyncAttachedContainer

    async def run() -> T:
        return await work(await AsyncAttachedContainer.attach(ref))

    return anyio.run(run, backend="trio")


def cmd_diff(args: argparse.Namespace) -> int:
    """``sandkit diff``: one ``KIND /path`` line per change."""
    for change in _on_container(args.container, lambda c: c.diff()):
        print(change)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    """``sandkit commit``: print the new image's id."""
    image = _on_container(
        args.container,
        lambda c: c.commit(
            args.repository, changes=args.change, message=args.message, author=args.author
        ),
    )
    print(image.id)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``sandkit export``: the tar to ``-o`` (replaced whole, or not at all) or to stdout."""
    if args.output:
        _on_container(args.container, lambda c: c.export(args.output))
        return 0
    if sys.stdout.isatty():
        raise errors.SandkitError(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
        )
    from ._runtime import export_remote

    sys.stdout.flush()
    out = os.dup(sys.stdout.fileno())
    try:
        _on_container(args.container, lambda c: export_remote(c._live(), out))
    finally:
        os.close(out)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """``sandkit history``: the image's history entries, newest first, each with the size of
    the layer it made."""
    from ..images.store import Store
    from .image_commands import _human

    store = Store.default()
    record = store.resolve(args.image)
    config = json.loads(store.read_blob(record.id))
    rows = _history_rows(config, [store.layer_size(x.diff_id) for x in record.layers])
    top = record.id if args.no_trunc else record.id[7:19]
    if args.quiet:
        print(top)
        return 0
    table = []
    for k, (entry, size) in enumerate(reversed(rows)):
        created_by = str(entry.get("created_by") or "")
        table.append(
            [
                top if k == 0 else "<missing>",
                str(entry.get("created") or "")[:19],
                created_by if args.no_trunc else truncate(created_by, 45),
                _human(size),
                str(entry.get("comment") or ""),
            ]
        )
    print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], table)
    return 0


def _history_rows(config: dict[str, Any], sizes: list[int]) -> list[tuple[dict[str, Any], int]]:
    """(history entry, size of its layer: 0 for an empty one) oldest first; an image without
    history gets one row per layer, as Docker shows it."""
    history = [h for h in config.get("history") or [] if isinstance(h, dict)]
    if not history:
        return [({}, size) for size in sizes]
    layers = iter(sizes)
    return [(h, 0 if h.get("empty_layer") else next(layers, 0)) for h in history]
