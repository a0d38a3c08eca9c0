"""A container's main process (``run=``): the image's Entrypoint and Cmd run as Docker runs them,
their output kept in a bounded ring, their end waited for, and Docker's restart policy.

One thread per container (as runtime/forward.py serves published ports) drains the main
process's stdout and stderr into the ring and watches for its end, so that no caller has to: a
sync user never calls into sandkit while the service runs, and an async user's loop may be busy
elsewhere. A chatty service so never blocks on a full pipe, and what it prints costs the host at
most the ring's size. The thread learns of the process's exit from the container's control
socket: it reads the socket itself when nobody else does, and `ControlChannel.watch` tells it
when a reader on an event loop filed the exit event instead.

When the main process ends for good, the container stops, as Docker's does: the thread kills
the container's init, whose pid namespace takes every other process with it. Until then the
container runs as any other (exec beside the service works).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import os
import select
import signal as signals
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import anyio
import attrs

from .. import errors
from ..images.config import ImageConfig, resolve_command
from ..ipc import Error, Exec, Exit, Signal, Started
from ..sizes import parse_size
from . import sessionkill
from .channel import ControlChannel
from .outcomes import exec_failure

# The ring's default size (documented): what `logs()` can give back at most, per container.
DEFAULT_LOG_SIZE = 1 << 20
# What one kept chunk costs beyond its bytes, charged against the ring's size so that a service
# writing single bytes cannot fill memory with bookkeeping. Measured on CPython 3.11 (64-bit):
# the tuple 64 bytes with its GC header, the time's int 32, the bytes object's header 33, the
# deque's slot 8, and the allocator rounding each object up to 16 bytes: about 141 in all
# (tests/security/test_service_attacks.py measures it with tracemalloc).
RECORD_OVERHEAD = 160
# The most one read takes from a pipe.
_READ_SIZE = 1 << 16
# After the main process ended, how long its output may still come (from what it left running
# and what still holds its stdout or stderr) before the pipes are closed.
OUTPUT_GRACE = 2.0
# Docker's restart delays (its restartmanager): 100 ms, doubling after each restart, at most a
# minute, and back to 100 ms once a run lasted 10 s.
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0
# Docker's `stop` grace period, when stop() is given none.
STOP_TIMEOUT = 10.0
# What the main process's status is when the container died under it (its init was killed):
# SIGKILL's, as Docker reports a killed container.
_KILLED = 128 + signals.SIGKILL
STDOUT, STDERR = 1, 2
# How long the thread looks away from a control socket that another thread is reading.
_MIN_SOCKET_PAUSE, _MAX_SOCKET_PAUSE = 0.0001, 0.005

# One kept chunk of output: (stream, wall-clock time in ns, bytes).
Record: TypeAlias = tuple[int, int, bytes]


# -- options --------------------------------------------------------------------------------


@attrs.frozen
class RestartPolicy:
    """Docker's ``--restart``: "no", "on-failure[:N]", "always" or "unless-stopped"."""

    name: str = "no"
    max_retries: int = 0  # on-failure:N; 0 is no limit, as in Docker

    @classmethod
    def parse(cls, spec: object) -> RestartPolicy:
        """The policy ``restart=`` names; `ContainerError` saying the forms when it is none."""
        name, _, count = spec.partition(":") if isinstance(spec, str) else ("", "", "")
        if name in ("no", "always", "unless-stopped") and not count:
            return cls(name)
        if name == "on-failure" and (not count or count.isdigit()):
            return cls(name, int(count or 0))
        raise errors.ContainerError(
            f"restart={spec!r} is not a restart policy: give 'no' (the default), 'on-failure' "
            "or 'on-failure:N' (restart a failed main process, at most N times), 'always' or "
            "'unless-stopped', as docker run --restart"
        )

    def restarts(self, status: int, restarted: int) -> bool:
        """Whether a main process that ended with ``status`` is started again, after
        ``restarted`` restarts so far."""
        if self.name == "on-failure":
            return status != 0 and (not self.max_retries or restarted < self.max_retries)
        return self.name in ("always", "unless-stopped")


@attrs.frozen
class ServiceSpec:
    """What the ``run``, ``entrypoint``, ``restart`` and ``log_size`` options ask for, checked."""

    command: tuple[str, ...] | None  # None: the image's Cmd (run=True)
    entrypoint: str | tuple[str, ...] | None
    restart: RestartPolicy
    log_size: int

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ServiceSpec | None:
        """The service the options ask for, or None without ``run``; `ContainerError` (nothing
        made yet) for an option that is malformed or needs ``run``."""
        run = options.get("run", False)
        run = False if run is None else run  # (None, as wrappers pass it on, is no run too)
        entrypoint = options.get("entrypoint")
        restart = RestartPolicy.parse(options.get("restart", "no"))
        log_size = _log_size(options.get("log_size", DEFAULT_LOG_SIZE))
        if run is False:
            if entrypoint is not None or restart.name != "no":
                raise errors.ContainerError(
                    "entrypoint= and restart= apply to the container's main process: start "
                    "one with run=True (the image's Entrypoint and Cmd) or run=[...]"
                )
            return None
        command = None if run is True else _strings(run, "run", allow_empty=False)
        if entrypoint is not None and not isinstance(entrypoint, str):
            entrypoint = _strings(entrypoint, "entrypoint", allow_empty=True)
        return cls(command, entrypoint, restart, log_size)

    def argv(self, config: ImageConfig) -> list[str]:
        """The main process's argv, by Docker's Entrypoint/Cmd rules (`resolve_command`)."""
        overrides = {} if self.entrypoint is None else {"entrypoint": self.entrypoint}
        try:
            return resolve_command(config, self.command, **overrides)
        except errors.ImageError:
            why = (
                "the image has neither Entrypoint nor Cmd"
                if self.entrypoint is None
                else f"entrypoint={self.entrypoint!r} replaces the image's Entrypoint and drops "
                "its Cmd (as docker run --entrypoint)"
            )
            raise errors.ContainerError(
                f"run=True: {why}, so there is no program to run; name it: "
                "run=['program', 'arg', ...] (or entrypoint='program')"
            ) from None


def _strings(value: object, name: str, *, allow_empty: bool) -> tuple[str, ...]:
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
        or not (value or allow_empty)
    ):
        raise errors.ContainerError(
            f"{name}={value!r} is not valid: give True (the image's own) or a list of strings, "
            f"e.g. {name}=['sh', '-c', 'echo hi']"
        )
    return tuple(value)


def _log_size(value: object) -> int:
    size = parse_size(value)  # type: ignore[arg-type]  # (it refuses what is not a size)
    if size <= 0:
        raise errors.LimitsError(
            f"log_size={value!r} is not valid: the ring of the main process's output needs "
            f"room; give its bytes, e.g. '1m' (the default) or '64k'"
        )
    return size


def exit_status(event: Exit) -> int:
    """Docker's status of an ended process: its exit code, or 128 + N for signal N."""
    return 128 + event.signal if event.signal is not None else event.code or 0


# -- the ring -------------------------------------------------------------------------------


@attrs.define
class LogRing:
    """The newest output of the main process, at most ``capacity`` bytes (each chunk charged
    `RECORD_OVERHEAD` more); older chunks go as new ones come. Chunks are numbered from 0, so
    that a reader can ask for what came after the last one it saw."""

    capacity: int
    _records: collections.deque[Record] = attrs.field(factory=collections.deque)
    _first: int = 0  # the number of _records[0]
    _charged: int = 0

    @property
    def end(self) -> int:
        """The number the next chunk will have."""
        return self._first + len(self._records)

    def append(self, stream: int, data: bytes) -> None:
        """Keep ``data`` that came on ``stream`` now, dropping the oldest chunks over the size."""
        data = data[-self.capacity :]  # a chunk alone over the size keeps its end
        self._records.append((stream, time.time_ns(), data))
        self._charged += len(data) + RECORD_OVERHEAD
        while self._charged > self.capacity and len(self._records) > 1:
            _, _, dropped = self._records.popleft()
            self._charged -= len(dropped) + RECORD_OVERHEAD
            self._first += 1

    def since(self, number: int) -> list[Record]:
        """The chunks from number ``number`` on (from the oldest kept, if it is gone)."""
        return list(itertools.islice(self._records, max(number - self._first, 0), None))


def rfc3339_nano(time_ns: int) -> bytes:
    """``2026-12-06T13:22:26.000012345Z``: UTC, nine digits, as `docker logs -t` prints it."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % nanos


def _lines(data: bytes) -> Iterator[bytes]:
    """``data`` cut after each newline (the last piece may have none)."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start : end + 1]
        start = end + 1
    if start < len(data):
        yield data[start:]


@attrs.define
class LogView:
    """How one reader sees the ring: which streams, with timestamps or not; and, across the
    chunks it has read, whether each stream is at the start of a line (where a timestamp goes,
    as `docker logs -t` puts one before each line: the time its first bytes came)."""

    stdout: bool = True
    stderr: bool = True
    timestamps: bool = False
    _at_line_start: dict[int, bool] = attrs.field(factory=lambda: {STDOUT: True, STDERR: True})

    def render(self, records: Iterable[Record], tail: int | None = None) -> bytes:
        """The wanted streams of ``records`` as one stream of bytes; with ``tail``, only the
        last ``tail`` lines of it."""
        wanted = [r for r in records if (self.stdout, self.stderr)[r[0] - 1]]
        if tail is None and not self.timestamps:
            return b"".join(data for _, _, data in wanted)
        pieces = list(self._pieces(wanted))
        if tail is not None:
            starts = [i for i, (first, _) in enumerate(pieces) if first]
            cut = len(pieces) if tail == 0 else starts[-tail] if len(starts) >= tail else 0
            pieces = pieces[cut:]
        return b"".join(piece for _, piece in pieces)

    def _pieces(self, records: Iterable[Record]) -> Iterator[tuple[bool, bytes]]:
        """Each line (or part of one) of ``records``: whether it starts a line, and its bytes
        (after the line's timestamp, if wanted and it starts one)."""
        for stream, time_ns, data in records:
            stamp = rfc3339_nano(time_ns) + b" " if self.timestamps else b""
            for piece in _lines(data):
                first = self._at_line_start[stream]
                self._at_line_start[stream] = piece.endswith(b"\n")
                yield first, stamp + piece if first else piece


def log_view(*, stdout: bool, stderr: bool, timestamps: bool, tail: int | None) -> LogView:
    """The view `logs()` and `logs_stream()` ask for; `ContainerError` for a bad ``tail``."""
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
        raise errors.ContainerError(
            f"tail={tail!r} is not valid: give the number of last lines to show (an int >= 0), "
            "or None for all of them"
        )
    return LogView(bool(stdout), bool(stderr), bool(timestamps))


# -- the service ----------------------------------------------------------------------------


@attrs.define(eq=False)
class _Run:
    """One start of the main process: its exec id, its pid in the container, when it started,
    and the host's ends of its stdout and stderr pipes (by fd, the stream each one is)."""

    exec_id: int
    pid: int
    started: float
    pipes: dict[int, int]
    status: int | None = None  # its exit status, once known

    def close_pipes(self) -> None:
        for fd in self.pipes:
            os.close(fd)
        self.pipes.clear()


@attrs.define(eq=False)
class Service:
    """The main process of one container and what it printed. ``request`` makes the exec
    request for an argv (the container's env, workdir, user, capabilities...); ``init_pid``
    and ``init_pidfd`` are the container's init, killed when the main process ends for good
    (the caller keeps its own fd: this takes a copy)."""

    spec: ServiceSpec
    argv: list[str]
    stop_signal: int
    channel: ControlChannel
    request: Callable[[Sequence[str]], Exec]
    init_pid: int
    init_pidfd: int
    ring: LogRing = attrs.field(init=False)
    restart_count: int = attrs.field(default=0, init=False)
    # The final status, once the main process ended for good and all its output is in.
    status: int | None = attrs.field(default=None, init=False)
    ended: bool = attrs.field(default=False, init=False)
    # Set when no run follows the one that ended: the container is stopping.
    final: bool = attrs.field(default=False, init=False)
    _run: _Run | None = attrs.field(default=None, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _changed: threading.Condition = attrs.field(init=False)
    _listeners: set[int] = attrs.field(factory=set, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)
    # The thread's own fds: what wakes it, a copy of the control socket to poll (the channel's
    # own may be closed under it), /dev/null for stdin, and a copy of the init's pidfd.
    _wake: int = attrs.field(default=-1, init=False)
    _socket: int = attrs.field(default=-1, init=False)
    _devnull: int = attrs.field(default=-1, init=False)
    _pidfd: int = attrs.field(default=-1, init=False)
    _delay: float = attrs.field(default=0.0, init=False)
    _socket_pause: float = attrs.field(default=_MIN_SOCKET_PAUSE, init=False)

    def __attrs_post_init__(self) -> None:
        self.ring = LogRing(self.spec.log_size)
        self._changed = threading.Condition(self._lock)

    # -- start and stop (on the caller's event loop) ------------------------------------------

    async def start(self) -> None:
        """Start the main process and the thread that serves it. A program that cannot be
        started raises its `ExecStartError` (127: not found, 126: not executable) and leaves
        nothing running."""
        try:
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._socket = os.dup(self.channel.sock.fileno())
            self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self._pidfd = os.dup(self.init_pidfd)
            request, reads = self._send_exec()
            try:
                reply, _ = await self.channel.reply(request.id)
                self._run = self._started(request, reply, reads)
            except BaseException:
                for fd in reads:
                    os.close(fd)
                self.channel.forget(request.id)
                raise
            self._thread = threading.Thread(target=self._serve, name="sandkit-service", daemon=True)
            self._thread.start()
        except BaseException:
            self._close_fds()
            raise

    async def stop(self, timeout: float | None) -> None:
        """Docker's stop, before the container is torn down: no restart from now on, the stop
        signal to the main process, and up to ``timeout`` s (`STOP_TIMEOUT` for None) for it
        to end."""
        with self._lock:
            self._stopping = True
            run = self._run if self._run is not None and self._run.status is None else None
        self._wake_up()  # a restart delay ends at once
        if run is None or self.channel.dead:
            return
        request = Signal(
            id=self.channel.protocol.next_id(), target=run.exec_id, sig=self.stop_signal, tree=False
        )
        try:
            self.channel.send(request)
            await self.channel.reply(request.id)
        except errors.ContainerDiedError:
            return
        finally:
            self.channel.forget(request.id)
        await self._until(
            lambda: run.status is not None, STOP_TIMEOUT if timeout is None else timeout
        )

    async def close(self) -> None:
        """After the container's teardown (its processes are gone): wait for the thread to take
        the last output and end. Idempotent."""
        with self._lock:
            self._stopping = True
        self._wake_up()
        if self._thread is not None:
            await self._until(lambda: self.ended, None)
            self._thread.join()
        self._close_fds()

    # -- what callers ask (any thread) --------------------------------------------------------

    def logs(self, view: LogView, tail: int | None) -> bytes:
        """The ring's output as ``view`` shows it (its last ``tail`` lines)."""
        with self._lock:
            records = self.ring.since(0)
        return view.render(records, tail)

    def stream(self, view: LogView, tail: int | None, follow: bool) -> Iterator[bytes]:
        """The output so far (its last ``tail`` lines), then with ``follow`` what comes, until
        the main process ended for good and all of it was given; blocking."""
        first, number = self._start_stream(view, tail)
        if first:
            yield first
        while follow:
            with self._changed:
                self._changed.wait_for(functools.partial(self._has_news, number))
            chunk, number, follow = self._news(view, number)
            if chunk:
                yield chunk

    async def astream(self, view: LogView, tail: int | None, follow: bool) -> AsyncIterator[bytes]:
        """`stream` for an event loop (trio or asyncio)."""
        first, number = self._start_stream(view, tail)
        if first:
            yield first
        while follow:
            await self._until(functools.partial(self._has_news, number), None)
            chunk, number, follow = self._news(view, number)
            if chunk:
                yield chunk

    def _start_stream(self, view: LogView, tail: int | None) -> tuple[bytes, int]:
        """What a stream gives first, and the number of the chunk it waits for next."""
        with self._lock:
            number, records = self.ring.end, self.ring.since(0)
        return view.render(records, tail), number

    def _has_news(self, number: int) -> bool:
        """Under the lock: whether chunk ``number`` has come, or none will any more."""
        return self.ring.end > number or self.ended

    def _news(self, view: LogView, number: int) -> tuple[bytes, int, bool]:
        """The chunks from ``number`` on as ``view`` shows them, the next number, and whether
        more may come."""
        with self._lock:
            records, end, ended = self.ring.since(number), self.ring.end, self.ended
        return view.render(records), end, not ended

    def wait_blocking(self, timeout: float | None) -> int:
        """`wait`, blocking the caller's thread (the sync API's)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.ended, timeout):
                raise TimeoutError(self._still_running(timeout))
            assert self.status is not None
            return self.status

    async def wait(self, timeout: float | None) -> int:
        """The final status once the main process ended for good and its output is in;
        `TimeoutError` after ``timeout`` s."""
        if not await self._until(lambda: self.ended, timeout):
            raise TimeoutError(self._still_running(timeout))
        assert self.status is not None
        return self.status

    def _still_running(self, timeout: float | None) -> str:
        return f"the container's main process still runs after {timeout} s"

    def tail(self, lines: int) -> str:
        """The last ``lines`` lines of both streams, decoded (for error messages)."""
        return self.logs(LogView(), lines).decode(errors="replace")

    def stopped_reason(self) -> str | None:
        """Why the container no longer runs, once its main process ended for good."""
        if not self.final:
            return None
        last = self._run.status if self._run is not None else None
        tail = self.tail(5).rstrip()
        return (
            f"its main process ({' '.join(self.argv)}) exited with status {last}, and a "
            "container ends with its main process, as in Docker (restart= keeps it going)"
            + (f"; its last output:\n{tail}" if tail else "")
        )

    # -- waking and being woken -----------------------------------------------------------------

    def _notify(self) -> None:
        """Under the lock: tell every waiter that something changed."""
        self._changed.notify_all()
        for fd in self._listeners:
            os.eventfd_write(fd, 1)

    async def _until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait on the caller's event loop until ``ready()`` (checked under the lock) or
        ``timeout`` s; whether it is."""
        listener = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            with self._lock:
                self._listeners.add(listener)
            with anyio.move_on_after(timeout):
                while True:
                    with self._lock:
                        if ready():
                            return True
                    await anyio.wait_readable(listener)
                    _consume(listener)
            with self._lock:
                return ready()
        finally:
            with self._lock:
                self._listeners.discard(listener)
            os.close(listener)

    def _wake_up(self) -> None:
        """Wake the thread (any thread may; never with the lock held). Under the lock, so that
        `close` cannot close the fd, and another file take its number, in between."""
        with self._lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    # -- starting a run ---------------------------------------------------------------------------

    def _send_exec(self) -> tuple[Exec, list[int]]:
        """Send the exec request of a new run (stdin /dev/null, stdout and stderr pipes to us);
        the request and the host's read ends."""
        request = self.request(self.argv)
        out, err = os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
        try:
            self.channel.watch(request.id, self._wake_up)
            self.channel.send(request, [self._devnull, out[1], err[1]])
        except BaseException:
            self.channel.forget(request.id)
            os.close(out[0])
            os.close(err[0])
            raise
        finally:
            os.close(out[1])
            os.close(err[1])
        return request, [out[0], err[0]]

    def _started(self, request: Exec, reply: Any, reads: list[int]) -> _Run:
        if isinstance(reply, Error):
            error = exec_failure(reply, self.argv)
            raise type(error)(
                f"the container's main process cannot start: {error} (it runs "
                f"{self.argv}: change it with run=[...] or entrypoint=)"
            )
        if not isinstance(reply, Started):
            raise errors.ProtocolError(f"expected 'started', got {reply!r}")
        return _Run(
            request.id, reply.pid, time.monotonic(), dict(zip(reads, (STDOUT, STDERR), strict=True))
        )

    def _restart(self) -> _Run | None:
        """Start the main process again (on the thread); None when the container ended or is
        being stopped first. One that cannot start counts as a run that ended at once: status
        127 or 126 as in a shell, its error in the log."""
        try:
            request, reads = self._send_exec()
        except errors.SandkitError:  # the container stopped meanwhile
            return None
        reply = self._reply_on_thread(request.id)
        try:
            run = None if reply is None else self._started(request, reply, reads)
        except errors.ExecStartError as exc:
            with self._lock:
                self.ring.append(STDERR, f"{exc}\n".encode())
            run = _Run(request.id, 0, time.monotonic(), {})
            self._settle(run, exc.exit_code)
        if run is None or not run.pipes:
            for fd in reads:
                os.close(fd)
            self.channel.forget(request.id)
        if run is not None:
            with self._lock:
                self.restart_count += 1
                self._run = run
                self._notify()
        return run

    def _reply_on_thread(self, request_id: int) -> Any:
        """The reply to ``request_id``, waited for on the thread; None when the container ended
        or is being stopped first."""
        while not self._stopping:
            try:
                got = self.channel.reply_nowait(request_id)
            except errors.ContainerDiedError:
                return None
            if got is not None:
                for fd in got[1]:
                    os.close(fd)
                return got[0]
            self._poll(None, watch_socket=True, deadline=math.inf)
        return None

    # -- the thread -------------------------------------------------------------------------------

    def _serve(self) -> None:
        run = self._run
        assert run is not None
        try:
            while not self._follow(run) and self._pause(self._next_delay(run)):
                restarted = self._restart()
                if restarted is None:
                    break
                run = restarted
        finally:
            self._close_thread_fds()
            with self._lock:
                self.final = self.ended = True
                # The last run's status (it is always known, unless this thread failed).
                self.status = _KILLED if run.status is None else run.status
                self._notify()

    def _follow(self, run: _Run) -> bool:
        """Take the run's output into the ring until it has ended and its pipes are at end of
        file (or `OUTPUT_GRACE` has passed since it ended); whether it was the last run."""
        deadline = math.inf
        while True:
            if run.status is None and self._take_exit(run):
                deadline = time.monotonic() + OUTPUT_GRACE
            if run.status is not None and (not run.pipes or time.monotonic() >= deadline):
                run.close_pipes()
                return self.final
            self._poll(run, watch_socket=run.status is None, deadline=deadline)

    def _poll(self, run: _Run | None, *, watch_socket: bool, deadline: float) -> None:
        """Wait for output of ``run`` (taken into the ring), a wake-up, or (``watch_socket``) a
        packet on the control socket, until ``deadline`` (`time.monotonic`)."""
        poller = select.poll()
        for fd in run.pipes if run is not None else ():
            poller.register(fd, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        if watch_socket:
            poller.register(self._socket, select.POLLIN)
        left = deadline - time.monotonic()
        ready = [fd for fd, _ in poller.poll(None if left == math.inf else max(0, left) * 1e3 + 1)]
        for fd in ready:
            if fd == self._wake:
                _consume(fd)
            elif fd != self._socket and run is not None:
                self._read_pipe(run, fd)
        if ready == [self._socket]:
            # Unless we may read it (the caller's next reply_nowait does), another reader (an
            # event loop's) takes the packet and files it, and our watch wakes us: meanwhile,
            # do not spin on it.
            time.sleep(self._socket_pause)
            self._socket_pause = min(self._socket_pause * 2, _MAX_SOCKET_PAUSE)
        else:
            self._socket_pause = _MIN_SOCKET_PAUSE

    def _read_pipe(self, run: _Run, fd: int) -> None:
        chunk = os.read(fd, _READ_SIZE)
        if not chunk:
            os.close(fd)
            del run.pipes[fd]
            return
        with self._lock:
            self.ring.append(run.pipes[fd], chunk)
            self._notify()

    def _take_exit(self, run: _Run) -> bool:
        """Whether the run's exit event has come (then its status is settled)."""
        try:
            got = self.channel.reply_nowait(run.exec_id)
        except errors.ContainerDiedError:
            # The container was stopped, or its init killed, under the run.
            self._settle(run, _KILLED, died=True)
            return True
        if got is None:
            return False
        for fd in got[1]:
            os.close(fd)
        if not isinstance(got[0], Exit):
            return False
        self.channel.forget(run.exec_id)
        self._settle(run, exit_status(got[0]))
        return True

    def _settle(self, run: _Run, status: int, *, died: bool = False) -> None:
        """A run ended with ``status``: decide whether another follows, and do what its end
        means (the container stops, or what the run left running is killed before the next)."""
        with self._lock:
            run.status = status
            self.final = self._stopping or not self.spec.restart.restarts(
                status, self.restart_count
            )
            self._notify()
        if died:
            return
        if self.final and not self._stopping:
            # As Docker's: the container ends with its main process. The init's pid namespace
            # takes every other process with it; the caller's stop() cleans up the rest.
            with contextlib.suppress(ProcessLookupError):
                signals.pidfd_send_signal(self._pidfd, signals.SIGKILL)
        elif not self.final:
            # Docker restarts the whole container: nothing of this run survives into the next.
            sessionkill.kill_session(self.init_pid, run.pid)

    def _next_delay(self, run: _Run) -> float:
        """Docker's delay before a restart: 100 ms, doubled each time, at most a minute; back
        to 100 ms after a run of 10 s or more."""
        if time.monotonic() - run.started >= RESET_AFTER:
            self._delay = 0.0
        self._delay = FIRST_DELAY if not self._delay else min(self._delay * 2, MAX_DELAY)
        return self._delay

    def _pause(self, delay: float) -> bool:
        """Wait ``delay`` s before a restart; False when stop() came first."""
        deadline = time.monotonic() + delay
        poller = select.poll()
        poller.register(self._wake, select.POLLIN)
        while not self._stopping and not self.channel.dead:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            poller.poll(left * 1000 + 1)
            _consume(self._wake)
        return False

    def _close_thread_fds(self) -> None:
        """The fds only the thread uses (the wake-up fd stays until `close`: others write it)."""
        for name in ("_socket", "_devnull", "_pidfd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

    def _close_fds(self) -> None:
        self._close_thread_fds()
        with self._lock:
            if self._wake >= 0:
                fd, self._wake = self._wake, -1
                os.close(fd)


def _consume(eventfd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(eventfd)
