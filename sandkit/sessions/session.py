"""Code sessions: one long-lived interpreter in a container, driven from the host.

The interpreter is the container's ``python3`` running agent.py (sent in through its stdin by a
one-line bootstrap), started with the container's ``spawn``: its stdin and stdout pipes are the
channel (protocol.py), its stderr only carries the agent's own start-up failures.

What a request does is written once, as a *flow*: a generator that yields commands (send these
bytes, wait for the next event until a deadline, interrupt, kill, hand this to the caller) and
gets their answers back. Two small drivers carry the commands out: the async one with
``anyio.wait_readable``; the sync one blocks the calling thread on the pipes with poll (no hop
through the event-loop thread), so that a round trip stays well under a millisecond.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs

from ..errors import (
    CallTimeoutError,
    CommandNotFoundError,
    LimitsError,
    RemoteError,
    SessionError,
)
from .protocol import AgentProtocol, Done, Event, Item, Output, Raised, Ready, Returned
from .results import DEFAULT_MAX_CODE_OUTPUT, CodeError, CodeResult, OutputChunk, OutputCollector
from .wire import ChannelGarbage, to_wire

if TYPE_CHECKING:
    from ..runtime.process import AsyncProcess

#: seconds an interpreter has to start and say it is ready
START_TIMEOUT = 30.0
#: seconds interrupted code has to stop (KeyboardInterrupt) before its interpreter is killed
INTERRUPT_GRACE = 1.0
#: items of a call_iter generator the agent may send ahead of the caller
ITEMS_AHEAD = 8

_BOOTSTRAP = (
    "import sys;"
    "sys.version_info<(3,8) and sys.exit('sandkit: code sessions need Python 3.8 or newer in "
    "the container; this is Python '+sys.version.split()[0]);"
    "n=int(sys.stdin.buffer.readline());"
    "exec(compile(sys.stdin.buffer.read(n),'<sandkit-agent>','exec'),{'__name__':'__sandkit__'})"
)
_AGENT = Path(__file__).with_name("agent.py")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_STDERR_KEPT = 4096


# --- commands a flow yields ----------------------------------------------------------------------


@attrs.frozen
class _Send:
    """Write ``data``; stop at ``deadline`` (an interpreter that reads nothing, stopped or stuck,
    must not hold the caller past its timeout: the next _Receive then times out too)."""

    data: bytes
    deadline: float | None = None


@attrs.frozen
class _Receive:
    deadline: float | None


@attrs.frozen
class _Interrupt:
    pass


@attrs.frozen
class _Kill:
    pass


@attrs.frozen
class _Deliver:
    item: Any


@attrs.frozen
class _Ended:
    """The interpreter is gone (answer to a _Receive): how it ended."""

    how: str


_TIMED_OUT = object()  # answer to a _Receive whose deadline passed


@attrs.frozen
class Final:
    """What a driver yields last: the flow's return value (a CodeResult; a call's result)."""

    value: Any


_Command = _Send | _Receive | _Interrupt | _Kill | _Deliver
_Flow = Generator[_Command, Any, Any]


class _StopIteration(Exception):
    pass


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (<= 0 once passed), None for no deadline."""
    return None if deadline is None else deadline - time.monotonic()


def run_flow(code: str, env: Mapping[str, str] | None, timeout: float | None, limit: int) -> _Flow:
    """One snippet: its output as chunks, then its `CodeResult` (its arguments checked now)."""
    return _run_steps(_code(code), _env(env), _timeout(timeout), limit)


def _run_steps(
    code: str, env: Mapping[str, str] | None, timeout: float | None, limit: int
) -> _Flow:
    started = time.monotonic()
    output = OutputCollector(limit)

    def result(**fields: Any) -> CodeResult:
        return CodeResult(
            output.finish("stdout"),
            output.finish("stderr"),
            duration=time.monotonic() - started,
            truncated=output.truncated or fields.pop("truncated", False),
            **fields,
        )

    deadline, timed_out, abandoned = _deadline(timeout), False, False
    yield _Send(AgentProtocol.run(code, env, limit), deadline)
    while True:
        event = yield _Receive(deadline)
        if isinstance(event, Output):
            text = output.add(event.stream, event.data)
            if not text or abandoned:
                continue
            try:
                yield _Deliver(OutputChunk(event.stream, text))
            except _StopIteration:  # the caller let go: interrupt, as a timeout would
                abandoned = timed_out = True
                deadline = _deadline(INTERRUPT_GRACE)
                yield _Interrupt()
        elif isinstance(event, Done):
            error = CodeError(*event.error) if event.error else None
            return result(
                value=event.value,
                rich=event.rich,
                figures=event.figures,
                error=error,
                timed_out=timed_out,
                truncated=event.truncated,
            )
        elif event is _TIMED_OUT and not timed_out:
            timed_out, deadline = True, _deadline(INTERRUPT_GRACE)
            yield _Interrupt()
        else:
            if event is _TIMED_OUT:
                yield _Kill()
                how = (
                    f"the snippet ran over its timeout of {timeout} s and did not stop within "
                    f"{INTERRUPT_GRACE} s of a KeyboardInterrupt: its interpreter was killed"
                )
                error = CodeError("TimeoutError", how, "")
            elif isinstance(event, _Ended):
                error = CodeError("SessionError", f"the interpreter ended: {event.how}", "")
            else:
                yield _Kill()
                error = CodeError("SessionError", f"the agent sent {event!r} during a snippet", "")
            return result(error=error, timed_out=timed_out, restarted=True)


def call_flow(
    target: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    *,
    stream: bool,
) -> _Flow:
    """One call: its items (call_iter), then its return value; raises what the call raised."""
    request = AgentProtocol.call(target, args, kwargs, ITEMS_AHEAD if stream else None)
    return _call_steps(target, request, _timeout(timeout), stream=stream)


def _call_steps(target: str, request: bytes, timeout: float | None, *, stream: bool) -> _Flow:
    deadline, timed_out, stopping = _deadline(timeout), False, False
    yield _Send(request, deadline)
    while True:
        event = yield _Receive(deadline)
        if isinstance(event, Item) and stream:
            if stopping:
                continue
            try:
                yield _Deliver(event.value)
            except _StopIteration:
                stopping, deadline = True, _deadline(INTERRUPT_GRACE)
                yield _Send(AgentProtocol.stop(), deadline)
                continue
            deadline = _deadline(timeout)  # per item: the caller's own time does not count
            yield _Send(AgentProtocol.more(1), deadline)
        elif isinstance(event, (Returned, Raised)):
            if timed_out:
                raise CallTimeoutError(f"{target} did not return within {timeout} s")
            if isinstance(event, Raised):
                raise RemoteError(event.type_name, event.message, event.traceback)
            return event.value
        elif isinstance(event, Output):
            continue  # a call's output is not kept (the agent sends none)
        elif event is _TIMED_OUT and not timed_out and not stopping:
            timed_out, deadline = True, _deadline(INTERRUPT_GRACE)
            yield _Interrupt()
        elif event is _TIMED_OUT:
            yield _Kill()
            if stopping:
                return None
            raise CallTimeoutError(
                f"{target} did not return within {timeout} s nor stop within {INTERRUPT_GRACE} s "
                "of a KeyboardInterrupt: its interpreter was killed (the next call starts a "
                "fresh one)"
            )
        elif isinstance(event, _Ended):
            raise SessionError(
                f"the interpreter ended during {target}: {event.how} (the next call starts a "
                "fresh one)"
            )
        else:
            yield _Kill()
            raise SessionError(f"the agent sent {event!r} during {target}: it was killed")


def _env(env: object) -> Mapping[str, str] | None:
    if env is not None and not (
        isinstance(env, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise TypeError(f"env must map str names to str values, not {env!r}")
    return env


def _timeout(timeout: object) -> float | None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ValueError(f"timeout={timeout!r} is not valid: give seconds, a number >= 0, or None")
    return timeout


def _max_output(limit: object) -> int:
    if limit is None:
        return DEFAULT_MAX_CODE_OUTPUT
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise LimitsError(
            f"max_output={limit!r} is not valid: give the bytes of stdout and of stderr a result "
            f"keeps, an int >= 0 (default {DEFAULT_MAX_CODE_OUTPUT})"
        )
    return limit


def check_target(target: object) -> str:
    """``target`` when it has the shape "package.module:function"; ValueError otherwise."""
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ValueError(
            f"call target {target!r} is not 'package.module:function' (or "
            "'package.module:Class.method')"
        )
    return target


def call_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as plain data, or a `TypeError` naming the first one msgpack cannot carry."""
    return (
        [to_wire(value, f"args[{i}]") for i, value in enumerate(args)],
        {name: to_wire(value, f"kwargs[{name!r}]") for name, value in kwargs.items()},
    )


# --- one running interpreter ---------------------------------------------------------------------


@attrs.define(eq=False)
class _Interpreter:
    process: AsyncProcess
    protocol: AgentProtocol = attrs.field(factory=AgentProtocol)
    version: str = ""

    @property
    def request_fd(self) -> int:
        assert self.process.stdin is not None
        return self.process.stdin.fd

    @property
    def reply_fd(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fd

    def next_event(self) -> Event | None:
        """The next event already read; raises ChannelGarbage."""
        return self.protocol.next_event()

    def read_some(self) -> bool:
        """Feed what the pipe holds to the protocol; False at end of stream."""
        try:
            data = os.read(self.reply_fd, 1 << 20)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.protocol.receive_data(data)
        return True

    def write_some(self, view: memoryview) -> memoryview:
        try:
            return view[os.write(self.request_fd, view) :]
        except BlockingIOError:
            return view

    def stderr_text(self) -> str:
        """What the agent wrote to its stderr (its own failures), bounded."""
        assert self.process.stderr is not None
        with contextlib.suppress(OSError):
            data = os.read(self.process.stderr.fd, _STDERR_KEPT)
            return data.decode("utf-8", "replace").strip()
        return ""


class SessionCore:
    """The state both the sync and the async session share: options and the interpreter."""

    def __init__(
        self,
        container: Any,
        *,
        python: str = "python3",
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        max_output: int | None = None,
    ) -> None:
        self.container = container
        self.python = python
        self.env = {"MPLBACKEND": "Agg", **(env or {})}
        self.workdir = workdir
        self.user = user
        self.max_output = _max_output(max_output)
        _env(env)
        self.interpreter: _Interpreter | None = None
        self.closed = False
        self.busy_owner: object | None = None
        self._guard = threading.Lock()

    # -- one request at a time ----------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, owner: object) -> Iterator[None]:
        """Hold the session for one request (or stream); a second one at once is an error."""
        with self._guard:
            if self.closed:
                raise SessionError("the code session is closed: open another with session()")
            if self.busy_owner is not None:
                raise SessionError(
                    "the code session is busy with another request (a run_code_stream or "
                    "call_iter not finished or closed, or another thread or task): use one "
                    "c.session() per concurrent user"
                )
            self.busy_owner = owner
        try:
            yield
        finally:
            with self._guard:
                self.busy_owner = None
                left = self.interpreter if self.closed else None
                if left is not None:  # closed while this request ran: its pipes are ours to close
                    self.interpreter = None
            if left is not None:
                left.process.close()

    def _take_for_closing(self) -> tuple[_Interpreter | None, bool]:
        """Mark the session closed: its interpreter, and whether a request is running on it. A
        running request's thread or task may be reading its pipes: they are closed by it (when
        it ends), never under it, where the fd numbers could already be another's pipes."""
        with self._guard:
            self.closed = True
            if self.busy_owner is not None:
                return self.interpreter, True
            interpreter, self.interpreter = self.interpreter, None
            return interpreter, False

    # -- start and end (on the event loop) ------------------------------------------------------

    async def start(self) -> _Interpreter:
        """Start the interpreter (if it is not running) and wait until its agent is ready."""
        if self.interpreter is not None:
            return self.interpreter
        argv = [self.python, "-c", _BOOTSTRAP]
        try:
            process = await self.container.spawn(
                argv, env=self.env, workdir=self.workdir, user=self.user, stdin=True
            )
        except CommandNotFoundError:
            raise SessionError(
                f"no {self.python} in the container: code sessions and calls need Python 3.8 or "
                "newer in the image (install python3 there, or pass python= the path of one)"
            ) from None
        interpreter = _Interpreter(process)
        self.interpreter = interpreter
        deadline = _deadline(START_TIMEOUT)
        try:
            await _AsyncLink(self).send(AgentProtocol.bootstrap(_agent_source()), deadline)
            ready = await _AsyncLink(self).receive(deadline)
        except BaseException:
            await self.kill()
            raise
        if isinstance(ready, Ready):
            interpreter.version = ready.version
            return interpreter
        if isinstance(ready, _Ended):
            raise SessionError(f"the interpreter could not start: {ready.how}")
        await self.kill()
        if ready is _TIMED_OUT:
            raise SessionError(f"the interpreter did not start within {START_TIMEOUT} s")
        raise SessionError(f"the interpreter said {ready!r} instead of being ready")

    async def kill(self) -> None:
        """Kill the interpreter and everything it started; the next request starts a fresh one."""
        interpreter, self.interpreter = self.interpreter, None
        if interpreter is not None:
            await _end(interpreter)

    async def close(self) -> None:
        """End the session: kill its interpreter; a request running on it (another thread's or
        task's) sees its channel end, is told so, and closes the pipes."""
        interpreter, busy = self._take_for_closing()
        if interpreter is None:
            return
        if busy:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await interpreter.process.kill()
        else:
            await _end(interpreter)

    async def reap(self) -> str:
        """The interpreter closed its channel: how it ended (exit status, signal, its stderr)."""
        interpreter, self.interpreter = self.interpreter, None
        assert interpreter is not None
        with anyio.CancelScope(shield=True):
            code: int | None = None
            with contextlib.suppress(Exception), anyio.move_on_after(5):
                code = await interpreter.process.wait()
            if code is None:
                with contextlib.suppress(Exception):
                    await interpreter.process.kill()
            text = interpreter.stderr_text()
            interpreter.process.close()
        how = self._describe_end(code, text)
        return f"the session was closed while it ran ({how})" if self.closed else how

    async def garbage(self, error: ChannelGarbage) -> str:
        """The channel carried garbage: kill the interpreter; how it ended."""
        await self.kill()
        return f"its channel carried garbage ({error}); it was killed"

    def _describe_end(self, code: int | None, stderr: str) -> str:
        if code is None:
            how = "it closed its channel and was killed"
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            how = f"it was killed by {name}"
            memory = _memory_limit(self.container)
            if -code == signal.SIGKILL and memory is not None:
                how += f" (the container's memory limit, {memory}, may have been reached)"
        else:
            how = f"it exited with code {code}"
        return f"{how}: {stderr}" if stderr else how

    def close_now(self) -> None:
        """Without the event loop (the container is stopping, which ends its processes): close
        the host's pipe ends, unless a request is running on them (it closes them)."""
        interpreter, busy = self._take_for_closing()
        if interpreter is not None and not busy:
            interpreter.process.close()


async def _end(interpreter: _Interpreter) -> None:
    """Kill an interpreter and everything it started, and close the host's ends of its pipes."""
    with anyio.CancelScope(shield=True):
        try:
            await interpreter.process.kill()
            with anyio.move_on_after(5):
                await interpreter.process.wait()
        except Exception:  # noqa: BLE001 - the container is gone: so is the interpreter
            pass
        finally:
            interpreter.process.close()


@functools.cache
def _agent_source() -> bytes:
    return _AGENT.read_bytes()


def _memory_limit(container: Any) -> object | None:
    options = getattr(container, "options", None)
    return options.get("memory") if isinstance(options, Mapping) else None


# --- the drivers ---------------------------------------------------------------------------------


class _AsyncLink:
    """Carries out a flow's commands on the event loop."""

    def __init__(self, core: SessionCore) -> None:
        self.core = core

    async def send(self, data: bytes, deadline: float | None) -> None:
        interpreter = self.core.interpreter
        assert interpreter is not None
        view = memoryview(data)
        try:
            while view := interpreter.write_some(view):
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return  # the receive that follows times out
                with anyio.move_on_after(remaining if remaining is not None else float("inf")):
                    await anyio.wait_writable(interpreter.request_fd)
        except BrokenPipeError:
            pass  # it died: the next receive reads the end of its channel

    async def receive(self, deadline: float | None) -> Any:
        interpreter = self.core.interpreter
        assert interpreter is not None
        try:
            while (event := interpreter.next_event()) is None:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    return _TIMED_OUT
                with anyio.move_on_after(remaining if remaining is not None else float("inf")):
                    await anyio.wait_readable(interpreter.reply_fd)
                if not interpreter.read_some():
                    return _Ended(await self.core.reap())
        except ChannelGarbage as exc:
            return _Ended(await self.core.garbage(exc))
        return event

    async def execute(self, command: _Command) -> Any:
        if isinstance(command, _Send):
            return await self.send(command.data, command.deadline)
        if isinstance(command, _Receive):
            return await self.receive(command.deadline)
        if isinstance(command, _Interrupt):
            interpreter = self.core.interpreter
            if interpreter is not None:
                await interpreter.process.send_signal(signal.SIGINT)
            return None
        assert isinstance(command, _Kill)
        return await self.core.kill()


async def drive_async(core: SessionCore, flow: _Flow) -> AsyncGenerator[Any, None]:
    """Run ``flow`` on the event loop; yields what it delivers, then what it returns."""
    with core.exclusive(anyio.get_current_task()):
        if core.interpreter is None:
            await core.start()
        link = _AsyncLink(core)
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
                        finished = await _finish_async(link, flow)
                        return
                else:
                    answer = await link.execute(command)
        finally:
            if not finished:
                await core.kill()


async def _finish_async(link: _AsyncLink, flow: _Flow) -> bool:
    try:
        with anyio.CancelScope(shield=True):
            command = flow.throw(_StopIteration())
            while True:
                answer = None if isinstance(command, _Deliver) else await link.execute(command)
                command = flow.send(answer)
    except StopIteration:
        return True
    except Exception:  # noqa: BLE001 - the caller has gone: nobody to tell; the driver kills
        return False
    return False  # not reached: the loop ends with the flow


# --- the public session objects ------------------------------------------------------------------


def _output_callback(
    on_stdout: Callable[[str], object] | None, on_stderr: Callable[[str], object] | None
) -> Callable[[OutputChunk], None] | None:
    if on_stdout is None and on_stderr is None:
        return None

    def deliver(chunk: OutputChunk) -> None:
        callback = on_stdout if chunk.stream == "stdout" else on_stderr
        if callback is not None:
            callback(chunk.data)

    return deliver


async def _unwrapped_async(delivered: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    """A run flow's chunks, then its result itself."""
    async with contextlib.aclosing(delivered):
        async for item in delivered:
            yield item.value if isinstance(item, Final) else item


def _code(code: object) -> str:
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, not {type(code).__name__}")
    return code


class AsyncCodeSession:
    """The async twin of `CodeSession` (``c.session()`` of an `AsyncContainer`)."""

    def __init__(self, core: SessionCore) -> None:
        self._core = core

    async def start(self) -> Self:
        """Start the interpreter now, so that the first call does not wait for it."""
        with self._core.exclusive(anyio.get_current_task()):
            await self._core.start()
        return self

    async def run_code(
        self,
        code: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> CodeResult:
        """Run Python source ``code`` in the interpreter and return its `CodeResult`; state
        (variables, imports) stays for the next call. ``timeout`` (seconds) interrupts it with
        KeyboardInterrupt, then kills the interpreter after a grace second (``restarted``).
        ``env`` sets environment variables for this snippet only. ``on_stdout``/``on_stderr``
        get the output as it comes. Errors in the code are in ``result.error``."""
        deliver = _output_callback(on_stdout, on_stderr)
        flow = run_flow(code, env, timeout, self._core.max_output)
        async with contextlib.aclosing(drive_async(self._core, flow)) as delivered:
            async for item in delivered:
                if isinstance(item, Final):
                    return item.value  # a run flow's: its CodeResult
                if deliver is not None:
                    deliver(item)
        raise AssertionError("a flow ends with its result")

    def run_code_stream(
        self, code: str, *, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[OutputChunk | CodeResult]:
        """`OutputChunk` s as the snippet writes them, then its `CodeResult` (use
        ``contextlib.aclosing`` to stop early)."""
        flow = run_flow(code, env, timeout, self._core.max_output)
        return _unwrapped_async(drive_async(self._core, flow))

    async def call(
        self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Import ``target`` ("package.module:function" or "package.module:Class.method"; the
        container's workdir is on sys.path) and call it with ``args`` and ``kwargs``, as
        msgpack data; returns its result likewise (attrs/dataclass instances as dicts).
        `RemoteError` for an exception inside, `CallTimeoutError` after ``timeout`` seconds,
        `SessionError` when the interpreter died."""
        flow = call_flow(check_target(target), *call_arguments(args, kwargs), timeout, stream=False)
        async with contextlib.aclosing(drive_async(self._core, flow)) as delivered:
            async for item in delivered:
                if isinstance(item, Final):
                    return item.value
        raise AssertionError("a flow ends with its result")

    async def call_iter(
        self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Call a generator function and iterate over its items as they come (a few ahead at
        most); leaving the loop closes the generator inside. ``timeout`` is per item."""
        flow = call_flow(check_target(target), *call_arguments(args, kwargs), timeout, stream=True)
        async with contextlib.aclosing(drive_async(self._core, flow)) as delivered:
            async for item in delivered:
                if isinstance(item, Final):
                    return
                yield item

    async def close(self) -> None:
        """End the interpreter and everything it started."""
        await self._core.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class ContainerSessions:
    """A container's code sessions: its default one (made on first use) and every one made, all
    closed when the container stops."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.cores: list[SessionCore] = []
        self.default: SessionCore | None = None
        # threads make sessions at once: one they dropped from the list would keep its pipes open
        # after the container stops
        self._lock = threading.RLock()

    def new(self, **options: Any) -> SessionCore:
        """A new session (``c.session()``)."""
        if options.get("max_output") is None:
            options["max_output"] = getattr(self.container, "options", {}).get("max_output")
        core = SessionCore(self.container, **options)
        with self._lock:
            self.cores = [c for c in self.cores if not c.closed]
            self.cores.append(core)
        return core

    def default_core(self) -> SessionCore:
        """The default session's (``c.run_code``...), made again after a close."""
        with self._lock:
            if self.default is None or self.default.closed:
                self.default = self.new()
            return self.default

    def close(self) -> None:
        """The container stops: close the host's ends of every interpreter's pipes."""
        with self._lock:
            cores, self.cores = self.cores, []
        for core in cores:
            core.close_now()
