"""The async API, for trio (the default) and asyncio alike (through anyio):

async with sandkit.AsyncContainer("host") as c:
    r = await c.exec(["echo", "hi"])
"""

from .pool import AsyncPool, PoolStats
from .runtime.container import AsyncContainer
from .runtime.process import AsyncInput, AsyncOutput, AsyncProcess
from .runtime.results import ExecResult
from .sessions import AsyncCodeSession, CodeError, CodeResult, OutputChunk

__all__ = [
    "AsyncCodeSession",
    "AsyncContainer",
    "AsyncInput",
    "AsyncOutput",
    "AsyncPool",
    "AsyncProcess",
    "CodeError",
    "CodeResult",
    "ExecResult",
    "OutputChunk",
    "PoolStats",
]
