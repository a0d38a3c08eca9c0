"""sandkit: run OCI/Docker images as isolated Linux containers from inside Python, no daemon."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403 - the exception types are part of the public API
from .errors import __all__ as _errors_all

if TYPE_CHECKING:
    from .aio import AsyncContainer as AsyncContainer
    from .aio import AsyncProcess as AsyncProcess
    from .api import CodeSession as CodeSession
    from .api import Container as Container
    from .api import ContainerOptions as ContainerOptions
    from .api import ExecResult as ExecResult
    from .api import Image as Image
    from .api import Mount as Mount
    from .api import Process as Process
    from .network import AsyncNetwork as AsyncNetwork
    from .network import Network as Network
    from .pool import AsyncPool as AsyncPool
    from .pool import Pool as Pool
    from .pool import PoolStats as PoolStats
    from .sessions import AsyncCodeSession as AsyncCodeSession
    from .sessions import CodeError as CodeError
    from .sessions import CodeResult as CodeResult
    from .sessions import OutputChunk as OutputChunk
    from .volume import Volume as Volume

__version__ = "0.1.0"

# The API's classes are imported on first use (PEP 562): the container runtime and the async machinery
# under it take ~0.2 s to import, which `sandkit images`, or a program that only needs the
# error types, should not pay.
_WHERE = {
    "AsyncCodeSession": "aio",
    "AsyncContainer": "aio",
    "CodeError": "sessions",
    "CodeResult": "sessions",
    "CodeSession": "api",
    "AsyncNetwork": "network",
    "AsyncPool": "pool",
    "AsyncProcess": "aio",
    "Container": "api",
    "ContainerOptions": "api",
    "ExecResult": "api",
    "Image": "api",
    "Mount": "api",
    "Network": "network",
    "OutputChunk": "sessions",
    "Pool": "pool",
    "PoolStats": "pool",
    "Process": "api",
    "Volume": "volume",
}
__all__ = [*_WHERE, *_errors_all]  # noqa: PLE0604 - both are lists of names (str)


def __getattr__(name: str) -> Any:  # PEP 562: called for names not (yet) in the module
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sandkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
