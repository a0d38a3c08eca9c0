"""The image commands; cli/images.py adds them to the parser (add_image_commands()).

    sandkit load -i FILE [--platform os/arch]     sandkit save -o FILE [--format docker|oci] IMAGE...
    sandkit images [-q] [--format json]           sandkit rmi [-f] IMAGE...
    sandkit tag SOURCE TARGET                     sandkit inspect IMAGE... (JSON)
    sandkit image prune [-f] [-q]

Each handler takes the parsed namespace and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..errors import ImageError
from ..images import archive
from ..images.image import Image
from ..images.reference import parse
from ..images.store import Store


def add_image_commands(subparsers: Any) -> None:
    """Add the image commands (``load``, ``save``, ``images``, ``rmi``, ``tag``, ``inspect``,
    ``image prune``/``ls``) to the parser."""
    p = subparsers.add_parser("load", help="load images from a docker save archive or OCI layout")
    p.add_argument("-i", "--input", required=True, help="archive file or OCI layout directory")
    p.add_argument("--platform", help="os/arch[/variant] to pick from multi-platform images")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_load)

    p = subparsers.add_parser("save", help="write images to an archive")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=("docker", "oci"), default="docker")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_save)

    p = subparsers.add_parser("images", help="list local images")
    _list_options(p)

    p = subparsers.add_parser("rmi", help="remove images (or one tag of a multi-tagged image)")
    p.add_argument("-f", "--force", action="store_true", help="remove all tags of the image")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_rmi)

    p = subparsers.add_parser("tag", help="give an image another name")
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=cmd_tag)

    p = subparsers.add_parser("inspect", help="show image details as JSON")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_inspect)

    image = subparsers.add_parser("image", help="image management").add_subparsers(
        dest="image_command", required=True
    )
    p = image.add_parser("prune", help="remove untagged images and unreferenced layers/blobs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--force", action="store_true", help="do not ask (never asks anyway)")
    p.set_defaults(func=cmd_prune)
    _list_options(image.add_parser("ls", help="list local images"))


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only image ids")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_images)


def _err(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


def cmd_load(args: argparse.Namespace) -> int:
    """``sandkit load -i``: load every image of a ``docker save`` archive or OCI layout; prints
    what was loaded."""
    store = Store.default()
    try:
        if sys.stderr.isatty() and not args.quiet:
            from rich.console import Console

            with Console(stderr=True).status(f"loading {args.input}"):
                loaded = archive.load(store, args.input, platform=args.platform, load_all=True)
        else:
            loaded = archive.load(store, args.input, platform=args.platform, load_all=True)
    except ImageError as e:
        return _err(str(e))
    for rec, tags in loaded:
        names = [parse(t).familiar() for t in tags]
        print(
            rec.id
            if args.quiet
            else "\n".join(f"Loaded image: {n}" for n in names) or f"Loaded image ID: {rec.id}"
        )
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    """``sandkit save -o``: write the named images, with the tags named, to a Docker or OCI
    archive."""
    store = Store.default()
    try:
        chosen = []
        for ref in args.images:
            rec = store.resolve(ref)
            try:  # save the tag the user named, like docker save
                tags = [str(parse(ref))] if not parse(ref).digest and store.tags_of(rec.id) else []
            except ImageError:
                tags = []
            chosen.append((rec, tags or store.tags_of(rec.id)))
        archive.save(store, chosen, args.output, args.format)
    except ImageError as e:
        return _err(str(e))
    return 0


def _rows(store: Store) -> list[dict[str, Any]]:
    rows = []
    for rec in sorted(store.records(), key=lambda r: r.loaded, reverse=True):
        size = sum(store.layer_size(layer.diff_id) for layer in rec.layers)
        tags: list[str | None] = [*store.tags_of(rec.id)] or [None]
        for tag in tags:
            ref = parse(tag) if tag else None
            rows.append(
                {
                    "repository": ref.familiar_name if ref else "<none>",
                    "tag": (ref.tag if ref else None) or "<none>",
                    "id": rec.id,
                    "digest": rec.manifest_digest,
                    "created": rec.created,
                    "size": size,
                }
            )
    return rows


def cmd_images(args: argparse.Namespace) -> int:
    """``sandkit images``: list the local images as a table, ids (``-q``) or JSON."""
    rows = _rows(Store.default())
    if args.quiet:
        for rid in dict.fromkeys(r["id"][7:19] for r in rows):
            print(rid)
    elif args.format == "json":
        print(json.dumps(rows, indent=1))
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", box=None)
        for r in rows:
            table.add_row(
                r["repository"], r["tag"], r["id"][7:19], r["created"][:19], _human(r["size"])
            )
        Console().print(table)
    else:
        print("REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
        for r in rows:
            print(
                f"{r['repository']}\t{r['tag']}\t{r['id'][7:19]}\t{r['created'][:19]}\t{_human(r['size'])}"
            )
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """``sandkit rmi``: remove each named image; naming one of several tags only removes that
    tag, unless ``-f``. Exits 1 if any failed."""
    store = Store.default()
    code = 0
    for ref in args.images:
        try:
            rec = store.resolve(ref)
            tags = store.tags_of(rec.id)
            named = str(parse(ref)) if ref in tags or _is_name(ref) else None
            if named in tags and len(tags) > 1 and not args.force:
                store.untag(ref)  # docker: removing one of several tags only untags
                print(f"Untagged: {parse(ref).familiar()}")
                continue
            store.remove_image(rec.id)
            print(f"Deleted: {rec.id}")
        except ImageError as e:
            code = _err(str(e))
    return code


def _is_name(ref: str) -> bool:
    try:
        return not parse(ref).digest and not ref.startswith("sha256:")
    except ImageError:
        return False


def cmd_tag(args: argparse.Namespace) -> int:
    """``sandkit tag SOURCE TARGET``: give a local image another name."""
    try:
        Image.get(args.source).tag(args.target)
    except ImageError as e:
        return _err(str(e))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``sandkit inspect`` for images: print each one's details as JSON; exits 1 if any is
    unknown."""
    out, code = [], 0
    for ref in args.images:
        try:
            out.append(Image.get(ref).inspect())
        except ImageError as e:
            code = _err(str(e))
    print(json.dumps(out, indent=2))
    return code


def cmd_prune(args: argparse.Namespace) -> int:
    """``sandkit image prune``: remove untagged unused images, then unreferenced layers and
    blobs, and say how much was freed."""
    t0 = time.monotonic()
    report = Store.default().prune()
    if not args.quiet:
        for image_id in report.images:
            print(f"Deleted: {image_id}")
        staging = f", {report.staging} left by interrupted pulls or loads" if report.staging else ""
        print(
            f"Removed {report.layers} layers and {report.blobs} blobs{staging}; reclaimed "
            f"{_human(report.bytes_freed)} in {time.monotonic() - t0:.2f}s"
        )
    return 0
