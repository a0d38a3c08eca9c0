"""The sync side of code sessions: `CodeSession`, and the driver that runs a request's flow on
the calling thread, blocking on the interpreter's pipes with poll. Only starting, signalling and
killing the interpreter go through the event-loop thread (`sandkit._portal`); a round trip does
not, which keeps it well under a millisecond."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, Self

from .. import _portal
from ..runtime.process import wait_ready
from .results import CodeResult, OutputChunk
from .session import (
    _TIMED_OUT,
    Final,
    SessionCore,
    _AsyncLink,
    _Command,
    _Deliver,
    _Ended,
    _Flow,
    _output_callback,
    _Receive,
    _remaining,
    _Send,
    _StopIteration,
    call_arguments,
    call_flow,
    check_target,
    run_flow,
)
from .wire import ChannelGarbage


class _SyncLink:
    """Carries out a flow's commands on the calling thread: poll on the pipes; only starting,
    signalling and killing go through the event loop."""

    def __init__(self, core: SessionCore) -> None:
        self.core = core

    def send(self, data: bytes, deadline: float | None) -> None:
        interpreter = self.core.interpreter
        assert interpreter is not None
        view = memoryview(data)
        try:
            while view := interpreter.write_some(view):
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return  # the receive that follows times out
                wait_ready(interpreter.request_fd, write=True, timeout=remaining)
        except BrokenPipeError:
            pass  # it died: the next receive reads the end of its channel

    def receive(self, deadline: float | None) -> Any:
        interpreter = self.core.interpreter
        assert interpreter is not None
        try:
            while (event := interpreter.next_event()) is None:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return _TIMED_OUT
                if wait_ready(interpreter.reply_fd, timeout=remaining) and not (
                    interpreter.read_some()
                ):
                    return _Ended(_portal.run(self.core.reap))
        except ChannelGarbage as exc:
            return _Ended(_portal.run(self.core.garbage, exc))
        return event

    def execute(self, command: _Command) -> Any:
        if isinstance(command, _Send):
            return self.send(command.data, command.deadline)
        if isinstance(command, _Receive):
            return self.receive(command.deadline)
        return _portal.run(_AsyncLink(self.core).execute, command)


def drive_sync(core: SessionCore, flow: _Flow) -> Generator[Any, None, None]:
    """Run ``flow`` on this thread; yields what it delivers, then what it returns."""
    with core.exclusive(threading.current_thread()):
        if core.interpreter is None:
            _portal.run(core.start)
        link = _SyncLink(core)
        finished = False
        try:
            answer = None
            while True:
                try:
                    command = flow.send(answer)
                except StopIteration as done:
                    finished = True
                    yield Final(done.value)
                    return
                except BaseException:
                    finished = True
                    raise
                if isinstance(command, _Deliver):
                    answer = None
                    try:
                        yield command.item
                    except GeneratorExit:
                        finished = _finish_sync(link, flow)
                        return
                else:
                    answer = link.execute(command)
        finally:
            if not finished:  # interrupted mid-request: the interpreter's state is unknown
                _portal.run(core.kill)


def _finish_sync(link: _SyncLink, flow: _Flow) -> bool:
    """The caller let go of a stream: let the flow stop the remote side, delivering nothing."""
    try:
        command = flow.throw(_StopIteration())
        while True:
            answer = None if isinstance(command, _Deliver) else link.execute(command)
            command = flow.send(answer)
    except StopIteration:
        return True
    except Exception:  # noqa: BLE001 - the caller has gone: nobody to tell; the driver kills
        return False
    return False  # not reached: the loop ends with the flow


def _final(delivered: Iterator[Any], deliver: Callable[[Any], None] | None = None) -> Any:
    """The flow's result, handing what it delivers on the way to ``deliver``."""
    with contextlib.closing(delivered):  # type: ignore[type-var] # a generator
        for item in delivered:
            if isinstance(item, Final):
                return item.value
            if deliver is not None:
                deliver(item)
    raise AssertionError("a flow ends with its result")


class CodeSession:
    """A Python interpreter of its own in a container (``c.session()``); state persists between
    calls. Started on first use (or `start`); `close` (or leaving ``with``) ends it."""

    def __init__(self, core: SessionCore) -> None:
        self._core = core

    def start(self) -> Self:
        """Start the interpreter now, so that the first call does not wait for it."""
        with self._core.exclusive(threading.current_thread()):
            _portal.run(self._core.start)
        return self

    def run_code(
        self,
        code: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> CodeResult:
        """Run ``code``; see `AsyncCodeSession.run_code`."""
        flow = run_flow(code, env, timeout, self._core.max_output)
        return _final(drive_sync(self._core, flow), _output_callback(on_stdout, on_stderr))

    def run_code_stream(
        self, code: str, *, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> Iterator[OutputChunk | CodeResult]:
        """`OutputChunk` s as the snippet writes them, then its `CodeResult`."""
        flow = run_flow(code, env, timeout, self._core.max_output)
        return _unwrapped(drive_sync(self._core, flow))

    def call(self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Import and call ``target``; see `AsyncCodeSession.call`."""
        flow = call_flow(check_target(target), *call_arguments(args, kwargs), timeout, stream=False)
        return _final(drive_sync(self._core, flow))

    def call_iter(
        self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Call a generator function ``target`` and iterate over its items as they come."""
        flow = call_flow(check_target(target), *call_arguments(args, kwargs), timeout, stream=True)
        return _items(drive_sync(self._core, flow))

    def close(self) -> None:
        """End the interpreter and everything it started."""
        _portal.run(self._core.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _items(delivered: Iterator[Any]) -> Iterator[Any]:
    """The items of a call_iter, without the flow's final return value (None)."""
    with contextlib.closing(delivered):  # type: ignore[type-var] # a generator
        for item in delivered:
            if isinstance(item, Final):
                return
            yield item


def _unwrapped(delivered: Iterator[Any]) -> Iterator[Any]:
    """A run flow's chunks, then its result itself."""
    with contextlib.closing(delivered):  # type: ignore[type-var] # a generator
        for item in delivered:
            yield item.value if isinstance(item, Final) else item
