"""What the CLI uses of sandkit beyond its public API: the one door from `sandkit.cli` into
`sandkit.runtime` (tests/test_layering.py keeps every other CLI module out of it).

The rest of the CLI uses the public API (`sandkit.aio`, `sandkit.errors`), the image layer
(`sandkit.images`: the CLI is the store's front end) and the base modules (`sandkit.home`,
`sandkit.sizes`). The names here are internal but stable: a change to one changes this module
and its users in the CLI together.

- `Mount`: public as `sandkit.Mount`, but `sandkit.api` imports the whole runtime; the CLI
  parses `-v`/`--tmpfs` into mounts without it.
- `AsyncInput`, `AsyncOutput`: public in `sandkit.aio`, which imports the container runtime
  (~0.2 s); `sandkit exec` wraps the fds a detached container's supervisor sends in them
  without starting any container here.
- `set_nonblocking`, `wait_ready`: the fd helpers those streams are built on.
- `ContainerOptions`: public as `sandkit.ContainerOptions`; `RunSpec` holds the options of
  `sandkit run` in it, so that a detached container's supervisor starts the same container.
- `parse_port`, `container_side`: Docker's `-p` syntax, checked by `run` before anything starts
  (and `sandkit port`'s PORT[/PROTO]), without the container runtime.
- `copy`: `sandkit cp` copies in the CLI's process with the code of
  `Container.copy_in`/`copy_out`, through fds the detached container's supervisor has its
  init open (copy.py).
- `handover`: a container's image and options as JSON, which `run -d` writes for the
  detached container's supervisor (sandkit/detached/supervisor.py) to start the same container;
  `sandkit run` resolves its IMAGE argument as the supervisor does (`image_from_text`).
- `RemoteSide`: a detached container as copy.py reaches it through its supervisor (`sandkit
  cp`; attached containers use it too); `process_streams`: the stdio fds its supervisor
  sends for an exec, as streams (`sandkit exec`; attached containers' `spawn`).
- `parse_go_duration`: `run --health-*` reads Go durations, as Docker does.
- `AsyncAttachedContainer`, `export_remote`: `sandkit diff`, `commit` and `export` ask the
  detached container's supervisor, as the attached API does (`export` to stdout writes the
  fd it sends); `remove_detached`: `sandkit rm`, which also deletes the writable layer a
  `sandkit create`d container kept on disk.

Import this module inside the commands that need it, not at the top of a command module: it
brings the protocol's modules (msgpack), which `sandkit images` or `sandkit ps` never use
(tests/test_lazy_imports.py).
"""

from __future__ import annotations

from ..runtime import copy, handover
from ..runtime.attached import (
    AsyncAttachedContainer,
    RemoteSide,
    export_remote,
    process_streams,
    remove_detached,
)
from ..runtime.health import parse_go_duration
from ..runtime.mounts import Mount
from ..runtime.options import ContainerOptions
from ..runtime.ports import container_side, parse_port
from ..runtime.process import AsyncInput, AsyncOutput, set_nonblocking, wait_ready

__all__ = [
    "AsyncAttachedContainer",
    "AsyncInput",
    "AsyncOutput",
    "ContainerOptions",
    "Mount",
    "RemoteSide",
    "container_side",
    "copy",
    "export_remote",
    "handover",
    "parse_go_duration",
    "parse_port",
    "process_streams",
    "remove_detached",
    "set_nonblocking",
    "wait_ready",
]
