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
- `copy`, `copy_side`, `open_for_copy`: `sandkit cp` copies in the CLI's process with the
  code of `Container.copy_in`/`copy_out`, through fds the detached container's supervisor
  has its init open (copy.py).
- `resolve_image`, `HOST_IMAGE`: how a container resolves the image it is given ("host", a
  store reference or an Image); `sandkit run` resolves its IMAGE argument the same way, once.
- `start_health_checks`, `parse_go_duration`: a detached container's supervisor runs the health
  check beside the main process it starts itself; `run --health-*` reads Go durations.

Import this module inside the commands that need it, not at the top of a command module: it
brings the protocol's modules (msgpack), which `sandkit images` or `sandkit ps` never use
(tests/test_lazy_imports.py).
"""

from __future__ import annotations

from ..runtime import copy
from ..runtime.container import copy_side, open_for_copy, resolve_image, start_health_checks
from ..runtime.health import parse_go_duration
from ..runtime.mounts import Mount
from ..runtime.options import ContainerOptions
from ..runtime.plan import HOST_IMAGE
from ..runtime.ports import container_side, parse_port
from ..runtime.process import AsyncInput, AsyncOutput, set_nonblocking, wait_ready

__all__ = [
    "HOST_IMAGE",
    "AsyncInput",
    "AsyncOutput",
    "ContainerOptions",
    "Mount",
    "container_side",
    "copy",
    "copy_side",
    "open_for_copy",
    "parse_go_duration",
    "parse_port",
    "resolve_image",
    "set_nonblocking",
    "start_health_checks",
    "wait_ready",
]
