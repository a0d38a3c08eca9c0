"""Connect this terminal (or these pipes) to a process in a container, as `docker run`/`exec` do.

Used by the foreground `run` (streams straight from `AsyncProcess`) and by `exec` against a
detached container (the supervisor passes the process's pipe or pty fds over its socket), so
both behave the same: raw terminal and window-size following with -t, stdin with -i, signals
forwarded without -t, the process's exit code at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
import tty as ttymod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import attrs

from ..detached.control import OUTPUT_GRACE

if TYPE_CHECKING:
    from ..aio import AsyncInput, AsyncOutput


# Docker's --sig-proxy forwards every signal it can catch; these are the ones a user sends.
PROXIED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


@attrs.define
class Streams:
    """The host ends of a process's stdio. With a tty, ``stdout`` is the pty master."""

    stdin: AsyncInput | None
    stdout: AsyncOutput
    stderr: AsyncOutput | None
    tty: bool = False


def host_terminal_fd() -> int | None:
    """The terminal we are attached to (stdin first, then stdout), if any."""
    for fd in (0, 1):
        if os.isatty(fd):
            return fd
    return None


def terminal_size() -> tuple[int, int]:
    """(rows, cols) of our terminal, or 24x80 when there is none."""
    fd = host_terminal_fd()
    if fd is not None:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
        if rows and cols:
            return rows, cols
    return 24, 80


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Our terminal in raw mode: keys (Ctrl-C too) go to the container's pty untouched, and its
    line discipline, not ours, does the editing and the signals. Restored on the way out."""
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    try:
        ttymod.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


async def attach(
    streams: Streams,
    *,
    wait: Callable[[], Awaitable[int]],
    forward_signal: Callable[[int], Awaitable[None]] | None = None,
    after_exit: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Pump stdio until the process exits; returns its return code (negative: signal).

    ``after_exit`` runs once the process has ended and before its output is drained (the
    foreground run stops the container there, which closes every pipe the process left open).
    """
    # The signal handlers are in place before any output is shown, so that whoever reacts to
    # that output with a signal (a person, a test) reaches the process, not sandkit's default.
    if streams.tty:
        watched: tuple[signal.Signals, ...] = (signal.SIGWINCH,)
    else:
        watched = PROXIED_SIGNALS if forward_signal is not None else ()
    with raw_terminal(streams.tty and streams.stdin is not None), _receiver(watched) as received:
        async with anyio.create_task_group() as helpers:
            if streams.stdin is not None:
                helpers.start_soon(_pump_stdin, streams.stdin, streams.tty)
            if received is not None and streams.tty:
                helpers.start_soon(_follow_window_size, received, streams.stdout.fd)
            elif received is not None and forward_signal is not None:
                helpers.start_soon(_proxy_signals, received, forward_signal)
            async with anyio.create_task_group() as outputs:
                outputs.start_soon(_pump_output, streams.stdout, 1)
                if streams.stderr is not None:
                    outputs.start_soon(_pump_output, streams.stderr, 2)
                returncode = await wait()
                if after_exit is not None:
                    await after_exit()
                outputs.cancel_scope.deadline = anyio.current_time() + OUTPUT_GRACE
            helpers.cancel_scope.cancel()
    return returncode


async def _pump_output(source: AsyncOutput, fd: int) -> None:
    while chunk := await source.read():
        try:
            _write_all(fd, chunk)
        except BrokenPipeError:
            return  # our reader went away (`| head`): keep running, stop printing


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            # our stdout was left non-blocking by someone else; wait for room
            from ._runtime import wait_ready

            wait_ready(fd, write=True)


async def _pump_stdin(sink: AsyncInput, tty: bool) -> None:
    """Our stdin to the process. Read in a worker thread: stdin may be a regular file (epoll
    refuses those), and making a shared terminal non-blocking would upset the shell after us."""
    try:
        while chunk := await anyio.to_thread.run_sync(os.read, 0, 65536, abandon_on_cancel=True):
            await sink.write(chunk)
    except (BrokenPipeError, OSError):
        return  # the process closed its stdin or exited
    finally:
        if not tty:
            sink.close()  # EOF for the process, as when a pipe's writer closes


def _receiver(
    signums: tuple[signal.Signals, ...],
) -> contextlib.AbstractContextManager[AsyncIterator[int] | None]:
    if not signums:
        return contextlib.nullcontext()
    return anyio.open_signal_receiver(*signums)


async def _follow_window_size(changes: AsyncIterator[int], master_fd: int) -> None:
    """Copy our terminal's size to the container's pty on each SIGWINCH; the kernel then sends
    SIGWINCH to the foreground process inside."""
    async for _ in changes:
        rows, cols = terminal_size()
        with contextlib.suppress(OSError):
            fcntl.ioctl(master_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _proxy_signals(
    received: AsyncIterator[int], forward: Callable[[int], Awaitable[None]]
) -> None:
    async for signum in received:
        with contextlib.suppress(Exception):  # the process may have just exited
            await forward(signum)


def stdin_is_terminal() -> bool:
    """True when this process's standard input is a terminal (``-t`` with ``-i`` needs one)."""
    return sys.stdin is not None and os.isatty(0)
