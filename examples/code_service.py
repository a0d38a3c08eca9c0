"""A web service that runs posted Python in a fresh, isolated container and answers with the
result as JSON: the core of an online judge or of an LLM's code interpreter.

    pip install 'sandkit[examples]'
    sandkit pull python:3.12-slim       # any image with python3 (3.8 or later); or set
                                        # SANDKIT_EXAMPLE_IMAGE to one in your store
    python examples/code_service.py [PORT]    # serves on http://127.0.0.1:8000

    curl -s 127.0.0.1:8000/run -d '{"code": "import sys\\nprint(sys.version)\\n6 * 7"}'
    {"stdout": "3.12.8 ...\\n", "value": "42", "error": null, "figures": [], ...}

Each request takes a container from a warm pool, whose interpreters are already running, so a
request waits for its own code only; the container is destroyed after it, so nothing a snippet
does (files, processes, variables) reaches the next one. Every snippet runs under the limits
below: no network but its own loopback, bounded memory, processes, CPU, disk, time and output.
A snippet that breaks them gets a result that says so (`timed_out`, `truncated`, an `error`),
never a broken server.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sandkit

IMAGE = os.environ.get("SANDKIT_EXAMPLE_IMAGE", "python:3.12-slim")
POOL_SIZE = 4  # containers kept started, each with its interpreter waiting
MAX_CODE_BYTES = 64 * 1024  # a larger request body is refused (413) before it is read whole
TIME_LIMIT = 5.0  # seconds per snippet; then it is interrupted, and killed if it must be
QUEUE_TIMEOUT = 10.0  # seconds a request waits for a container when all are busy (then 503)
LIMITS: dict[str, Any] = {
    "network": "none",  # loopback only: nothing outside the container is reachable
    "memory": "256m",
    "memory_swap": "256m",  # (no swap on top)
    "pids_limit": 64,  # processes and threads: a fork bomb stops there
    "cpus": 1.0,
    "disk_size": "64m",  # the writable layer, kept in memory
    "max_output": 1024 * 1024,  # bytes of stdout and of stderr kept; the rest is dropped
}


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with sandkit.AsyncPool(IMAGE, size=POOL_SIZE, python=True, **LIMITS) as pool:
        await pool.wait_ready()  # (the first requests then find their containers ready)
        app.state.pool = pool
        yield


async def run(request: Request) -> JSONResponse:
    """POST {"code": "..."}: runs the code, answers with its `CodeResult` as JSON."""
    body = await read_body(request, MAX_CODE_BYTES)
    if body is None:
        return JSONResponse({"detail": f"the body is over {MAX_CODE_BYTES} bytes"}, 413)
    code = code_of(body)
    if code is None:
        return JSONResponse({"detail": 'send a JSON object: {"code": "<python source>"}'}, 422)
    try:
        async with request.app.state.pool.container(timeout=QUEUE_TIMEOUT) as container:
            result = await container.run_code(code, timeout=TIME_LIMIT)
    except sandkit.errors.PoolError as e:  # every container busy for QUEUE_TIMEOUT, or closing
        return JSONResponse({"detail": str(e)}, 503, headers={"Retry-After": "1"})
    return JSONResponse(as_json(result))


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is longer than `limit` (the rest is never read)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def code_of(body: bytes) -> str | None:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # (not JSON; nested too deep for the parser)
        return None
    code = request.get("code") if isinstance(request, dict) else None
    return code if isinstance(code, str) else None


def as_json(result: sandkit.CodeResult) -> dict[str, Any]:
    """The result (an attrs class) as JSON types: its bytes, the PNG figures and a rich form
    such as image/png, in base64."""
    fields = attrs.asdict(result)  # (the error too: a dict of name, value and traceback)
    fields["rich"] = {mime: text_of(data) for mime, data in result.rich.items()}
    fields["figures"] = [text_of(png) for png in result.figures]
    return fields


def text_of(data: str | bytes) -> str:
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


app = Starlette(routes=[Route("/run", run, methods=["POST"])], lifespan=lifespan)


if __name__ == "__main__":
    import sys

    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
