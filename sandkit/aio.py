"""The async API, for trio (the default) and asyncio alike (through anyio):

async with sandkit.AsyncContainer("host") as c:
    r = await c.exec(["echo", "hi"])
"""

from .runtime.container import AsyncContainer
from .runtime.process import AsyncInput, AsyncOutput, AsyncProcess
from .runtime.results import ExecResult
from .sessions import AsyncCodeSession, CodeError, CodeResult, OutputChunk

__all__ = [
    "AsyncCodeSession",
    "AsyncContainer",
    "AsyncInput",
    "AsyncOutput",
    "AsyncProcess",
    "CodeError",
    "CodeResult",
    "ExecResult",
    "OutputChunk",
]
