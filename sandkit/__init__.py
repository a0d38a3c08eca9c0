"""sandkit: run OCI/Docker images as isolated Linux containers from inside Python, no daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .errors import *  # noqa: F403 - the exception types are part of the public API
from .errors import __all__ as _errors_all  # type: ignore[attr-defined]

if TYPE_CHECKING:
    from .aio import AsyncContainer as AsyncContainer
    from .aio import AsyncProcess as AsyncProcess
    from .api import Container as Container
    from .api import ExecResult as ExecResult
    from .api import Image as Image
    from .api import Mount as Mount
    from .api import Process as Process

__version__ = "0.1.0"

# The API's classes are imported on first use: the container runtime and the async machinery
# under it take ~0.2 s to import, which `sandkit images`, or a program that only needs the
# error types, should not pay.
_WHERE = {
    "AsyncContainer": "aio",
    "AsyncProcess": "aio",
    "Container": "api",
    "ExecResult": "api",
    "Image": "api",
    "Mount": "api",
    "Process": "api",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
__all__ = [*_WHERE, *_errors_all]
