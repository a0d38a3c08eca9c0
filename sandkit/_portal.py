"""One background thread running a trio loop, through which the sync API calls the async core.

A daemon thread, started on first use: it never keeps the interpreter alive, and at exit the
kernel closes every container's control socket, which makes each container's init kill its
processes and exit. After `os.fork()` the child starts a thread of its own on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

_lock = threading.Lock()
_token: trio.lowlevel.TrioToken | None = None


def _serve(ready: threading.Event) -> None:
    async def main() -> None:
        global _token
        _token = trio.lowlevel.current_trio_token()
        ready.set()
        await trio.sleep_forever()

    trio.run(main)


def _current_token() -> trio.lowlevel.TrioToken:
    with _lock:
        if _token is None:
            ready = threading.Event()
            threading.Thread(target=_serve, args=(ready,), name="sandkit-loop", daemon=True).start()
            ready.wait()
        assert _token is not None
        return _token


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` on the loop thread and return its result (or raise its error)."""
    return trio.from_thread.run(fn, *args, trio_token=_current_token())


def _forget_after_fork() -> None:
    global _token, _lock
    _token = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
