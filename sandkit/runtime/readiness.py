"""Readiness: wait until a service in a container listens, logs, answers HTTP or passes a command.

Every wait polls its probe with a short back-off until the probe succeeds or the deadline passes.
Each round first makes sure there is still something to wait for: a container that stopped, or
whose main process ended, fails the wait at once (with the exit status), not at its timeout. A
wait that runs out of time raises `WaitTimeoutError`, whose message names what was awaited and
ends with the service's last log lines.

All the probes look from inside the container, through its init, so they work with
``network="none"`` and without a published port:

- a port: the init opens the container's ``/proc/1/net/tcp`` and ``tcp6`` (``udp``, ``udp6``),
  which list the sockets of the container's network namespace; nothing connects to the service.
- HTTP: the init connects a socket to the port on the container's 127.0.0.1 (the ``connect``
  request that carries published ports), and h11 speaks HTTP/1.1 over it.
- a log pattern: the main process's kept log (`AsyncContainer.logs`).
- a command: `AsyncContainer.exec`, exit status 0.
- the health check: the state its own thread keeps (runtime/health.py).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from .. import errors

if TYPE_CHECKING:
    from typing import TypeAlias

    from .attached import AsyncAttachedContainer
    from .container import AsyncContainer

    # What the waits take: a container of this process, or a detached one through its supervisor.
    Waited: TypeAlias = AsyncContainer | AsyncAttachedContainer

# The first pause between two probes, its growth and its cap: fast for a service that is up in
# milliseconds, gentle on the cores for one that takes seconds.
FIRST_PAUSE = 0.02
PAUSE_GROWTH = 1.5
MAX_PAUSE = 0.5
# How many of the service's last log lines a failed wait shows.
TAIL_LINES = 20
# What a port probe reads of one /proc/net table at most (about 28,000 sockets of 150 bytes a
# line; beyond it the rest is not looked at rather than held in memory). The kernel lists the
# listening sockets first, so a crowded table hides no listener of a real service.
MAX_PROC_NET = 4 << 20
# What an HTTP probe reads of the answer before its status line and headers are in (h11's own
# limit for a header block is 16 KiB): a service that sends an endless header stops here.
MAX_HTTP_HEAD = 64 << 10

# The /proc/net tables that list each protocol's sockets, and the state a socket that waits for
# connections is in (TCP_LISTEN; an unconnected UDP socket is TCP_CLOSE).
_TABLES = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6")}
_LISTENING = {"tcp": "0A", "udp": "07"}

Probe = Callable[[float], Awaitable[bool]]
StatusCheck = int | Callable[[int], bool]


# -- checking what the caller gave ----------------------------------------------------------


def check_timeout(timeout: object) -> float:
    """A timeout: a number of seconds > 0 (math.inf: no limit)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise errors.ReadinessSpecError(
            f"timeout={timeout!r} is not valid: give the seconds to wait, a number > 0"
        )
    return float(timeout)


def check_port(port: object, proto: str = "tcp") -> int:
    """A container port: an int from 1 to 65535, with proto "tcp" or "udp"."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise errors.ReadinessSpecError(
            f"port={port!r} is not valid: give the container's port, an int from 1 to 65535"
        )
    if proto not in _TABLES:
        raise errors.ReadinessSpecError(f'proto={proto!r} is not valid: give "tcp" or "udp"')
    return port


# -- the waiting loop -----------------------------------------------------------------------


async def wait_until(
    container: Waited,
    what: str,
    probe: Probe,
    timeout: float,
    last_try: Callable[[], str] | None = None,
) -> None:
    """Call ``probe(seconds_left)`` until it returns True; `WaitTimeoutError` at ``timeout``
    (with what ``last_try`` says of the last probe), `ContainerNotRunningError` as soon as the
    container or its main process has ended."""
    timeout = check_timeout(timeout)
    deadline = time.monotonic() + timeout
    pause = FIRST_PAUSE
    while True:
        ensure_alive(container, what)
        left = deadline - time.monotonic()
        ready = False
        try:
            with anyio.move_on_after(max(left, 0.0)):
                ready = await probe(left)
        except errors.ContainerError:
            ensure_alive(container, what)  # the container went away under the probe
            raise
        if ready:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.WaitTimeoutError(
                f"container {container.id[:12]}: timed out after {timeout:g} s waiting for {what}"
                f"{f' ({last_try()})' if last_try else ''}{log_tail_text(container)}"
            )
        await anyio.sleep(min(pause, left))
        pause = min(pause * PAUSE_GROWTH, MAX_PAUSE)


def ensure_alive(container: Waited, what: str) -> None:
    """Raise `ContainerNotRunningError` when there is nothing left to wait for: the container
    stopped, or its main process ended (the message has its exit status and last log lines)."""
    from .container import main_ended

    reason = main_ended(container)
    if reason is not None:  # it says the exit status and ends with the last output
        raise errors.ContainerNotRunningError(
            f"container {container.id[:12]} stopped while waiting for {what}: {reason}"
        )
    if not container.running:
        raise errors.ContainerNotRunningError(
            f"container {container.id[:12]} is not running (stopped, or never started) while "
            f"waiting for {what}: start it first, and look at its log for why it stopped"
            f"{log_tail_text(container)}"
        )


def log_tail_text(container: Waited, lines: int = TAIL_LINES) -> str:
    """What ends a failed wait's message: the main process's last log lines, or why there are
    none."""
    tail = container.log_tail(lines)
    if not tail:
        return "; the container has no log (no main process, or it printed nothing)"
    return f"; its last log lines:\n{tail.rstrip()}"


# -- ports ----------------------------------------------------------------------------------


def listening_ports(table: bytes, proto: str) -> set[int]:
    """The local ports of the sockets in a /proc/net/{tcp,tcp6,udp,udp6} table that wait for
    peers (see proc_net_tcp in the kernel's Documentation/networking/proc_net_tcp.rst)."""
    ports = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3].decode("ascii", "replace") != _LISTENING[proto]:
            continue
        _, _, port = fields[1].rpartition(b":")
        try:
            ports.add(int(port, 16))
        except ValueError:
            continue
    return ports


async def port_listens(container: Waited, port: int, proto: str) -> bool:
    """Whether a socket in the container's network namespace listens on ``port``."""
    from .container import open_in_container

    for name in _TABLES[proto]:
        try:
            fd = await open_in_container(container, f"/proc/1/net/{name}")
        except OSError:
            continue  # no IPv6 in this kernel: no tcp6 table
        try:
            table = await anyio.to_thread.run_sync(_read_capped, fd, MAX_PROC_NET)
        finally:
            os.close(fd)
        if port in listening_ports(table, proto):
            return True
    return False


def _read_capped(fd: int, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def wait_for_port(
    container: Waited, port: int, *, timeout: float, proto: str = "tcp"
) -> None:
    """See `AsyncContainer.wait_for_port`."""
    check_port(port, proto)

    async def probe(_: float) -> bool:
        return await port_listens(container, port, proto)

    await wait_until(container, f"port {port}/{proto} to listen", probe, timeout)


# -- log patterns ---------------------------------------------------------------------------


def compile_pattern(pattern: object) -> re.Pattern[bytes]:
    """A regex over the log's bytes: a str pattern is encoded as UTF-8 (so it matches the text
    the service printed), a bytes pattern is taken as is, a compiled one likewise."""
    if isinstance(pattern, re.Pattern):
        pattern = pattern.pattern
    if isinstance(pattern, str):
        pattern = pattern.encode()
    if not isinstance(pattern, bytes):
        raise errors.ReadinessSpecError(
            f"pattern={pattern!r} is not valid: give a regular expression, a str or bytes"
        )
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise errors.ReadinessSpecError(
            f"pattern {pattern!r} is not a valid regex: {exc}"
        ) from None


async def wait_for_log(
    container: Waited, pattern: object, *, timeout: float, times: int = 1
) -> None:
    """See `AsyncContainer.wait_for_log`."""
    regex = compile_pattern(pattern)
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise errors.ReadinessSpecError(
            f"times={times!r} is not valid: give how many matches to wait for, an int >= 1"
        )

    async def probe(_: float) -> bool:
        return sum(1 for _ in regex.finditer(await container.logs())) >= times

    shown = regex.pattern.decode("utf-8", "backslashreplace")
    what = f"the log to match {shown!r}" + (f" {times} times" if times > 1 else "")
    await wait_until(container, what, probe, timeout)


# -- commands -------------------------------------------------------------------------------


async def wait_for_exec(container: Waited, argv: Sequence[str], *, timeout: float) -> None:
    """See `AsyncContainer.wait_for_exec`."""
    if isinstance(argv, str | bytes) or not argv or not all(isinstance(a, str) for a in argv):
        raise errors.ReadinessSpecError(
            f"argv={argv!r} is not valid: give the command as a list of str, e.g. "
            '["pg_isready", "-q"]'
        )
    argv = list(argv)

    async def probe(left: float) -> bool:
        result = await container.exec(argv, timeout=left, max_output=0)
        return result.exit_code == 0

    await wait_until(container, f"{argv!r} to exit 0", probe, timeout)


# -- the health check -------------------------------------------------------------------------


async def wait_for_healthy(container: Waited, *, timeout: float) -> None:
    """Wait until the container's health check says "healthy" (an "unhealthy" one may still
    recover, as in Docker, so it is waited on too, and named in the timeout's message)."""
    if container.health is None:
        raise errors.ReadinessSpecError(
            f"container {container.id[:12]} has no health check to wait for: the image has no "
            "HEALTHCHECK (or it is NONE), or the container has no main process. Give one with "
            'healthcheck={"test": [...]} and run=, or wait for a port, a log line or a command'
        )

    async def probe(left: float) -> bool:
        return container.health == "healthy"

    def last_try() -> str:
        report = container.health_report() or {}
        checks = report.get("Log") or [{}]
        output = str(checks[-1].get("Output", "")).strip()[-200:]
        return f"it is {container.health}" + (f"; the last check said: {output}" if output else "")

    await wait_until(container, "the health check to pass", probe, timeout, last_try)


# -- HTTP -----------------------------------------------------------------------------------


def check_status(status: object) -> Callable[[int], bool]:
    """The status an HTTP wait accepts, as a predicate."""
    if callable(status):
        return status
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise errors.ReadinessSpecError(
            f"status={status!r} is not valid: give an HTTP status (an int from 100 to 599) or a "
            "callable that takes the status and returns True when it is the one awaited"
        )
    return lambda got: got == status


def check_path(path: object) -> str:
    """A request target: an absolute path (with its query), printable ASCII, no spaces."""
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or not path.isascii()
        or any(not 0x21 <= ord(c) <= 0x7E for c in path)
    ):
        raise errors.ReadinessSpecError(
            f"path={path!r} is not valid: give the path to GET, starting with / (printable "
            "ASCII, no spaces: percent-encode the rest)"
        )
    return path


async def http_status(container: Waited, port: int, path: str) -> int | None:
    """The status of ``GET path`` on the container's 127.0.0.1:port, or None when nothing
    answers (refused, reset, or not HTTP)."""
    from .container import connect_in_container

    try:
        sock = await connect_in_container(container, "tcp", port)
    except OSError:
        return None
    with sock:
        try:
            return await _exchange(sock, port, path)
        except (OSError, _NotHttp):
            return None


class _NotHttp(Exception):
    """The peer's answer is not an HTTP/1.x response we can read."""


async def _exchange(sock: socket.socket, port: int, path: str) -> int:
    import h11

    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HTTP_HEAD)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[
            ("Host", f"localhost:{port}"),
            ("User-Agent", "sandkit-wait"),
            ("Accept", "*/*"),
            ("Connection", "close"),
        ],
    )
    await _send_all(sock, conn.send(request) + conn.send(h11.EndOfMessage()))
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _NotHttp(str(exc)) from None
        if event is h11.NEED_DATA:
            await anyio.wait_readable(sock)
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            return int(event.status_code)
        elif isinstance(event, h11.ConnectionClosed):
            raise _NotHttp("the connection closed before a response")
        # an InformationalResponse (1xx): the final one follows


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await anyio.wait_writable(sock)


async def wait_for_http(
    container: Waited,
    path: str,
    *,
    port: int,
    status: StatusCheck = 200,
    timeout: float,
) -> None:
    """See `AsyncContainer.wait_for_http`."""
    check_path(path)
    check_port(port)
    accepts = check_status(status)
    seen: list[int | None] = []

    async def probe(_: float) -> bool:
        got = await http_status(container, port, path)
        seen[:] = [got]
        return got is not None and bool(accepts(got))

    def last_try() -> str:
        last = seen[0] if seen else None
        return "last try: " + ("no HTTP answer" if last is None else f"status {last}")

    wanted = f"status {status}" if isinstance(status, int) else "an accepted status"
    what = f"GET {path} on port {port} to answer {wanted}"
    await wait_until(container, what, probe, timeout, last_try)
