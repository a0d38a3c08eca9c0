"""RUN steps: the command runs in a sandkit container made from the stage so far (the same
isolation as any container: namespaces, seccomp, capabilities; network per ``--network``), and
the container's writable layer becomes the step's layer, written by images/changes.py as a
commit writes it (whiteouts for deletions, opaque directories), stored like a pulled layer.

A RUN that exits non-zero (or cannot start) is a `BuildError` carrying its exit code and
output; the container and its writable layer go with it, so nothing half-made remains.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ..errors import BuildError, ExecStartError
from ..images.config import ImageConfig
from ..images.image import Image
from ..images.store import LayerRecord, Store
from ..runtime import layer as writable_layer
from ..runtime.container import AsyncContainer
from ..runtime.process import AsyncOutput

# How much of a failed RUN's output its BuildError repeats (all of it was shown as it came).
MAX_ERROR_OUTPUT = 8192


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
    """Run ``command`` on ``layers`` (bottom first) with the stage's ``config`` and store what it
    changed as a layer; `BuildError` naming ``line`` when it fails."""
    # No WorkingDir in the container's image: the runtime would make it as a mount point,
    # which a commit leaves out, and a RUN's chown of it would be lost. WORKDIR steps made the
    # directory in a layer; the command runs there.
    image_config = attrs.evolve(ImageConfig.from_oci(config), working_dir="")
    image = Image(layer_dirs=tuple(layers), config=image_config, name="build step")
    environment = dict(item.partition("=")[::2] for item in env)
    async with AsyncContainer(image, network=network) as container:
        try:
            process = await container.spawn(
                command,
                env=environment,
                workdir=config.get("WorkingDir") or None,
                user=config.get("User") or None,
                stdin=False,
            )
        except ExecStartError as e:
            raise BuildError(f"Dockerfile line {line}: RUN {_shown(command)}: {e}") from None
        tail = _Tail()
        async with process, anyio.create_task_group() as pumps:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    pumps.start_soon(_pump, stream, output, tail)
            code = await process.wait()
        if code != 0:
            raise BuildError(
                f"Dockerfile line {line}: RUN {_shown(command)} failed with exit code {code}; "
                f"the end of its output:\n{tail.text()}"
            )
        return await _store_upper(store, container)


class _Tail:
    """The last bytes of a RUN's output, for its error: all of it goes to the progress as it
    comes, only this much is kept."""

    def __init__(self, limit: int = MAX_ERROR_OUTPUT) -> None:
        self.data = bytearray()
        self.limit = limit

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[: -self.limit]

    def text(self) -> str:
        return self.data.decode(errors="replace")


async def _pump(stream: AsyncOutput, output: Callable[[bytes], None], tail: _Tail) -> None:
    async for chunk in stream:
        output(chunk)
        tail.add(chunk)


async def _store_upper(store: Store, container: AsyncContainer) -> LayerRecord:
    # The container's own helpers (the ones commit uses): the init's fd on its upper directory,
    # and what sandkit wrote there that no layer keeps (/etc/hosts, mount points).
    setup = container._running_setup()
    upper = await container._open("/", "upper")
    try:
        write = writable_layer.layer_writer(upper, setup, container._userns_pid())

        def store_it() -> LayerRecord:
            with store.staging() as tmp:
                tar_path = tmp / "layer.tar"
                with open(tar_path, "wb") as out:
                    diff_id, _ = write(out)
                with open(tar_path, "rb") as tar:
                    return store.add_layer(tar, diff_id)

        return await anyio.to_thread.run_sync(store_it)
    finally:
        os.close(upper)


def _shown(command: list[str]) -> str:
    text = " ".join(command)
    return text if len(text) <= 200 else text[:200] + "..."
