"""RUN steps: the command runs in a sandkit container made from the stage so far, and the
container's writable layer becomes the step's layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..images.store import LayerRecord, Store


async def run_step(
    store: Store,
    *,
    layers: Sequence[Path],
    config: dict[str, Any],
    command: list[str],
    env: list[str],
    network: str,
    output: Callable[[bytes], None],
    line: int,
) -> LayerRecord:
    """Run ``command`` on ``layers`` and store what it changed as a layer."""
    raise BuildError(
        f"Dockerfile line {line}: RUN is not supported by this sandkit build yet (it needs the "
        "container commit of issue 20, item 5): build the image with Docker, or use COPY/ADD"
    )
