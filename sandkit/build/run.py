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

import anyio.to_thread

from ..errors import BuildError, ExecStartError
from ..images.config import ImageConfig
from ..images.image import Image
from ..images.store import LayerRecord, Store
from ..runtime import layer as writable_layer
from ..runtime.container import AsyncContainer

# What a RUN step's output may take in memory (each of stdout and stderr); the rest is dropped
# and the progress says so. Docker's plain progress keeps less.
MAX_RUN_OUTPUT = 16 << 20


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
    image = Image(layer_dirs=tuple(layers), config=ImageConfig.from_oci(config), name="build step")
    environment = dict(item.partition("=")[::2] for item in env)
    async with AsyncContainer(image, network=network) as container:
        try:
            result = await container.exec(
                command,
                env=environment,
                workdir=config.get("WorkingDir") or None,
                user=config.get("User") or None,
                max_output=MAX_RUN_OUTPUT,
            )
        except ExecStartError as e:
            raise BuildError(f"Dockerfile line {line}: RUN {_shown(command)}: {e}") from None
        output(result.stdout + result.stderr)
        if result.exit_code != 0:
            raise BuildError(
                f"Dockerfile line {line}: RUN {_shown(command)} failed with exit code "
                f"{result.exit_code}; its output:\n{_tail(result.stdout + result.stderr)}"
            )
        return await _store_upper(store, container)


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


def _tail(data: bytes, limit: int = 8192) -> str:
    text = data.decode(errors="replace")
    return text if len(text) <= limit else "...\n" + text[-limit:]
