"""Asking a detached container's supervisor for something: the CLI's commands and attached
containers (`Container.attach`) both go through here."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from .. import errors
from . import control, state

# After asking a supervisor to stop, how long past the stop timeout before it is SIGKILLed (its
# init then kills the container).
STOP_SLACK = 5.0
# How often a wait for a supervisor to end looks again.
_POLL_INTERVAL = 0.02


def running(record: state.Record) -> state.Record:
    """``record``, or `ContainerNotRunning` when its container has stopped."""
    if not record.running:
        raise state.ContainerNotRunning(f"Container {record.id} is not running")
    return record


async def connect(record: state.Record) -> socket.socket:
    """A connection to the container's supervisor; `ContainerNotRunning` when none listens."""
    try:
        return await control.connect(record.socket_path)
    except OSError:
        raise state.ContainerNotRunning(f"Container {record.id} is not running") from None


async def request(
    record: state.Record, message: dict[str, Any], wait_reply: bool
) -> dict[str, Any] | None:
    """Send ``message`` to the container's supervisor; with ``wait_reply``, its answer (None
    when it hung up without one), its refusal raised as `ContainerError`."""
    with await connect(record) as sock:
        try:
            await control.send(sock, message)
            if not wait_reply:
                return None
            reply, fds = await control.receive(sock)
        except (ConnectionResetError, BrokenPipeError):
            # It accepted, then ended (its container stopped) before reading what we sent.
            raise state.ContainerNotRunning(f"Container {record.id} is not running") from None
        for fd in fds:
            os.close(fd)
    if reply is not None and "error" in reply:
        raise errors.ContainerError(reply["error"])
    return reply


async def log_chunks(record: state.Record, request: dict[str, Any]) -> AsyncIterator[bytes]:
    """The chunks of output the supervisor sends for a ``logs`` request, each in a memfd,
    until it says it has sent them all (or the container ends)."""
    with await connect(record) as sock:
        await control.send(sock, request)
        while True:
            message, fds = await control.receive(sock)
            try:
                if message is None or message.get("end"):
                    return
                if "error" in message or len(fds) != 1:
                    raise control.error_from(message, errors.ContainerError)
                chunk = control.memfd_content(fds[0])
            finally:
                for fd in fds:
                    os.close(fd)
            yield chunk


def stop(record: state.Record, timeout: float) -> None:
    """Docker's stop: the stop signal, SIGKILL after ``timeout`` s; returns once the container
    has ended. Stopping a stopped container succeeds."""
    if not record.running:
        return
    anyio.run(request, record, {"op": "stop", "timeout": timeout}, False, backend="trio")
    wait_for_exit(record, timeout + STOP_SLACK)


def kill(record: state.Record, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to the container's main process (SIGKILL: the whole container)."""
    anyio.run(request, running(record), {"op": "kill", "signal": signum}, True, backend="trio")


def remove(record: state.Record, *, force: bool) -> None:
    """Remove the container's state (and name); ``force``: kill a running one first, as
    ``docker rm -f``."""
    if record.running:
        if not force:
            raise errors.ContainerError(
                f"You cannot remove a running container {record.id}. "
                "Stop the container before attempting removal or force remove"
            )
        try:
            kill(record)
        except errors.ContainerNotRunningError:
            pass  # it ended meanwhile
        wait_for_exit(record, STOP_SLACK)
    state.remove(record)


def wait_for_exit(record: state.Record, timeout: float) -> None:
    """Until the supervisor is gone; past ``timeout`` it is SIGKILLed (its container dies with
    it, since the init sees the control socket close)."""
    deadline = time.monotonic() + timeout
    while state.supervisor_alive(record.state):
        if time.monotonic() > deadline:
            try:
                os.kill(int(record.state["supervisor_pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = float("inf")
        time.sleep(_POLL_INTERVAL)
