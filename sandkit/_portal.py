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

import outcome
import trio

T = TypeVar("T")

_lock = threading.Lock()
_token: trio.lowlevel.TrioToken | None = None
_loop_thread: int | None = None


def _serve(ready: threading.Event) -> None:
    async def main() -> None:
        global _token, _loop_thread
        _token = trio.lowlevel.current_trio_token()
        _loop_thread = threading.get_ident()
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


def on_loop_thread() -> bool:
    return threading.get_ident() == _loop_thread


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` on the loop thread and return its result (or raise its error).

    A leaner hand-off than `trio.from_thread.run` (a lock instead of a queue): on a small VM
    every thread wake-up counts, and an exec is only a few of them.
    """
    token = _current_token()
    if on_loop_thread():
        raise RuntimeError(
            "sandkit's synchronous API was called from its own event loop thread (from async "
            "code run through it?): use sandkit.AsyncContainer there"
        )
    finished = threading.Lock()
    finished.acquire()
    result: list[outcome.Outcome[T]] = []

    async def call() -> None:
        result.append(await outcome.acapture(fn, *args))
        finished.release()

    token.run_sync_soon(trio.lowlevel.spawn_system_task, call)
    finished.acquire()
    # Emptied first: an error's traceback holds call()'s frame, whose closure holds this list,
    # and a cycle through it would keep every object of the failed call (open pipes) for the GC.
    return result.pop().unwrap()


def run_soon(fn: Callable[..., object], *args: Any) -> None:
    """Have the loop thread call ``fn(*args)`` (synchronous, quick, and never raising: an error
    there would end the loop) and return at once, without waiting for it."""
    _current_token().run_sync_soon(fn, *args)


def start(fn: Callable[..., Awaitable[object]]) -> Any:
    """Run ``await fn(task_status=...)`` in a task of the loop that outlives this call (a warm
    pool's life); return the value it gives ``task_status.started()``, or raise what it raised
    before then. After that it must handle its own errors: the loop can report them to no one."""

    async def begin() -> Any:
        status = _TaskStatus()

        async def life() -> None:
            try:
                await fn(task_status=status)
            except Exception as exc:
                if status.settled.is_set():
                    raise  # fn broke its promise: a bug, which ends the loop loudly
                status.outcome = outcome.Error(exc)
                status.settled.set()

        trio.lowlevel.spawn_system_task(life)
        await status.settled.wait()
        return status.outcome.unwrap()

    return run(begin)


class _TaskStatus:
    """What `start` gives its task as ``task_status`` (a nursery's would wrap an error raised
    before ``started()`` in an ExceptionGroup, which the caller should not have to unpack)."""

    def __init__(self) -> None:
        self.settled = trio.Event()
        self.outcome: outcome.Outcome[Any] = outcome.Value(None)

    def started(self, value: object = None) -> None:
        self.outcome = outcome.Value(value)
        self.settled.set()


def _forget_after_fork() -> None:
    global _token, _lock, _loop_thread
    _token = None
    _loop_thread = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
