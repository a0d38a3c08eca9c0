"""The async API, for trio (the default) and asyncio alike (through anyio):

async with sandkit.AsyncContainer("host") as c:
    r = await c.exec(["echo", "hi"])
"""

from .runtime.container import AsyncContainer
from .runtime.process import AsyncInput, AsyncOutput, AsyncProcess
from .runtime.results import ExecResult

__all__ = ["AsyncContainer", "AsyncInput", "AsyncOutput", "AsyncProcess", "ExecResult"]
