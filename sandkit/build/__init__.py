"""Building images: Dockerfiles (parser.py) and the instruction lists of the Python DSL, run
by the engine (engine.py) into the image store.

``build`` is the synchronous entry (``sandkit.Image.build``), ``build_async`` its twin for
trio/asyncio programs; both return the built `Image`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import BuildContextError, DockerfileSyntaxError
from .parser import Instruction, parse

if TYPE_CHECKING:
    from ..images.image import Image
    from ..images.store import Store
    from .progress import Progress

__all__ = ["Instruction", "build", "build_async", "build_instructions", "parse"]

MAX_DOCKERFILE = 1 << 20  # a Dockerfile is KBs; refuse to read a huge or endless one


def read_dockerfile(context: Path, dockerfile: str | os.PathLike[str]) -> str:
    """The text of ``dockerfile`` (relative to the context, or absolute); bounded, regular
    files only (a fifo or device would block or never end)."""
    path = Path(dockerfile)
    if not path.is_absolute():
        path = context / path
    from .context import read_bounded

    try:
        data = read_bounded(path, "Dockerfile", MAX_DOCKERFILE)
    except FileNotFoundError:
        raise BuildContextError(
            f"Dockerfile {str(path)!r} does not exist: pass dockerfile= (-f) or add it to the "
            "context"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DockerfileSyntaxError(
            "the Dockerfile is not UTF-8 text: save it as UTF-8", line
        ) from None


async def build_instructions(
    instructions: Sequence[Instruction],
    context: str | os.PathLike[str],
    *,
    tag: str | Sequence[str] | None = None,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    no_cache: bool = False,
    network: str = "bridge",
    labels: Mapping[str, str] | None = None,
    progress: str | Progress | None = "auto",
    stream: TextIO | None = None,
    store: Store | None = None,
) -> Image:
    """Build ``instructions`` (from `parse` or the DSL) with the files of ``context``."""
    from ..images.image import Image
    from ..images.store import Store
    from .engine import Builder, BuildRequest
    from .progress import make_progress

    store = store or Store.default()
    tags = (tag,) if isinstance(tag, str) else tuple(tag or ())
    request = BuildRequest(
        Path(context),
        tags=tags,
        build_args=dict(build_args or {}),
        target=target,
        no_cache=no_cache,
        network=network,
        labels=dict(labels or {}),
    )
    shown = make_progress(progress, stream)
    with store.loading():
        record = await Builder(store, request, shown).build(instructions)
    shown.done(record.id, tags)
    return Image.from_record(store, record)


async def build_async(
    context: str | os.PathLike[str],
    *,
    dockerfile: str | os.PathLike[str] = "Dockerfile",
    **options: object,
) -> Image:
    """Build the Dockerfile ``dockerfile`` (relative to ``context``) with the files of
    ``context``; options as `build`."""
    text = read_dockerfile(Path(context), dockerfile)
    return await build_instructions(parse(text), context, **options)  # type: ignore[arg-type]


def build(
    context: str | os.PathLike[str],
    *,
    dockerfile: str | os.PathLike[str] = "Dockerfile",
    **options: object,
) -> Image:
    """The synchronous `build_async`: run on sandkit's event-loop thread."""
    from .. import _portal

    return _portal.run(functools.partial(build_async, context, dockerfile=dockerfile, **options))
