"""sandkit: run OCI/Docker images as isolated Linux containers from inside Python, no daemon."""

from .aio import AsyncContainer, AsyncProcess
from .api import Container, ExecResult, Image, Mount, Process
from .errors import *  # noqa: F403 - the exception types are part of the public API
from .errors import __all__ as _errors_all  # type: ignore[attr-defined]

__version__ = "0.1.0"
__all__ = [
    "AsyncContainer",
    "AsyncProcess",
    "Container",
    "ExecResult",
    "Image",
    "Mount",
    "Process",
    *_errors_all,
]
