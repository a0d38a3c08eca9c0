"""The async API, for trio (the default) and asyncio alike (through anyio):

async with sandkit.AsyncContainer("host") as c:
    r = await c.exec(["echo", "hi"])
"""

from .pool import AsyncPool, PoolStats
from .runtime.container import AsyncContainer
from .runtime.process import AsyncInput, AsyncOutput, AsyncProcess
from .runtime.results import ExecResult

__all__ = [
    "AsyncContainer",
    "AsyncInput",
    "AsyncOutput",
    "AsyncPool",
    "AsyncProcess",
    "ExecResult",
    "PoolStats",
]
