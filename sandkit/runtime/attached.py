"""Detached containers (``detach=True``) as any process of their user sees them.

A detached container lives in a supervisor process of its own (sandkit/detached/supervisor.py,
the one `sandkit run -d` uses), found by name or id through its state directory in the user's
private ``$SANDKIT_HOME/run``. `AsyncAttachedContainer` is the handle: what `AsyncContainer`
does, asked of that supervisor over its socket. The process that made the container holds one
too (``AsyncContainer(image, detach=True)`` returns it), and nothing about it is special:
leaving a ``with`` block detaches, `remove()` ends the container.

Commands run in the supervisor (``run``: `AsyncContainer.exec` there, the result and its
output sent back in memfds), so their timeouts, output limits and process-tree kills are the
in-process ones; files are opened by the container's init there and the fd sent here, so reads,
writes and copies run in this process with the in-process code (copy.py), never through a
path of the host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import anyio
import attrs

from .. import errors
from ..detached import client, control, launch, state
from ..detached.control import STOP_TIMEOUT
from ..images.image import Image
from ..ipc import Exit
from . import handover
from .container import (
    AsyncContainer,
    ImageSource,
    ProcessLink,
    check_argv,
    published_on,
    remove_path,
)
from .forward import Binding
from .outcomes import raise_for
from .ports import parse_port
from .process import AsyncInput, AsyncOutput, AsyncProcess, set_nonblocking
from .results import ExecResult
from .service import LogView, log_view

if TYPE_CHECKING:
    from ..images.changes import Change
    from ..security.seccomp import SeccompSpec
    from . import copy
    from .cgroups import CgroupStats

T = TypeVar("T")

# How often `wait` looks whether the supervisor has gone, once it said the container ended.
_EXIT_POLL = 0.02


def _process_request(
    op: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    workdir: str | None,
    user: str | None,
) -> dict[str, Any]:
    """The fields a supervisor's ``run`` (captured) and ``exec`` (streamed) requests share:
    which command, and as whom and where it runs."""
    return {
        "op": op,
        "argv": [str(a) for a in argv],
        "env": dict(env or {}),
        "workdir": workdir,
        "user": user,
    }


@attrs.define(eq=False)
class AsyncAttachedContainer:
    """A detached container, reached through its supervisor; see the module's doc."""

    # What to start (``detach=True`` before `start`); None once there is a record.
    _config: dict[str, Any] | None
    _wanted_name: str | None = None
    _record: state.Record | None = None

    @classmethod
    def create(cls, image: ImageSource, **options: Any) -> AsyncAttachedContainer:
        """The handle of a container to start detached; its options are checked here, as an
        in-process container's are, so that bad ones fail before any process is started."""
        kept = {k: v for k, v in options.items() if k not in handover.HANDOVER_OPTIONS}
        AsyncContainer(image, **kept)  # raises for a bad option; starts nothing
        config: dict[str, Any] = {
            "image": handover.image_to_text(image),
            "options": handover.options_to_json(kept),
            "command": [],
            "main": None,
        }
        return cls(config, options.get("name"))

    @classmethod
    async def attach(cls, name_or_id: str) -> AsyncAttachedContainer:
        """The running detached container ``name_or_id``; see `AsyncContainer.attach`."""
        try:
            record = state.find(name_or_id)
        except errors.NoSuchContainerError as exc:
            raise errors.NoSuchContainerError(
                f"{exc}: no detached container of this user (uid {os.geteuid()}) has that name "
                f"or id; they live in {state.run_dir()}, and each user sees only their own"
            ) from None
        _check_running(record)
        return cls(None, record=record)

    async def start(self) -> Self:
        """Hand the container to a new supervisor and return once it runs: `NameInUseError`
        when the name is taken; the supervisor's own error when the container cannot start
        (then nothing is left: no state, no name)."""
        if self._config is None:
            raise errors.ContainerError("this container was already started; make a new one")
        config, self._config = self._config, None
        self._record = await anyio.to_thread.run_sync(
            launch.start_supervisor, config, self._wanted_name
        )
        return self

    async def __aenter__(self) -> Self:
        return await self.start() if self._config is not None else self

    async def __aexit__(self, *exc_info: object) -> None:
        """Detach: the container goes on (`remove` ends it)."""

    # -- what it is ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The container's id (64 hex digits); empty before `start`."""
        return self._record.id if self._record is not None else ""

    @property
    def name(self) -> str:
        """The container's name (the one given, or the one generated for it)."""
        return self._record.name if self._record is not None else (self._wanted_name or "")

    @property
    def image(self) -> str:
        """The image as the supervisor was given it."""
        config = self._config if self._config is not None else self._current().config
        return str(config.get("image", ""))

    @property
    def options(self) -> dict[str, Any]:
        """The container's options, as the supervisor was given them (JSON values)."""
        config = self._config if self._config is not None else self._current().config
        return dict(config.get("options") or {})

    @property
    def hostname(self) -> str:
        """The container's host name (``hostname=``, else the first 12 digits of its id)."""
        return str(self.options.get("hostname") or self.id[:12])

    @property
    def running(self) -> bool:
        """True while the container runs (its supervisor is alive)."""
        return self._record is not None and self._record.reload().running

    @property
    def networks(self) -> dict[str, str]:
        """The container's address on each network it is on, by network name."""
        return {name: entry["IPAddress"] for name, entry in self._recorded("networks").items()}

    @property
    def ports(self) -> dict[str, list[Binding]]:
        """The published ports, by container port ("80/tcp"), as the supervisor bound them."""
        published: dict[str, list[Binding]] = {}
        for entry in self._recorded("ports"):
            spec = parse_port(str(entry["port"]))
            binding = Binding(spec, str(entry["host_ip"]), int(entry["host_port"]))
            published.setdefault(spec.key, []).append(binding)
        return published

    def port(self, container_port: int | str) -> tuple[str, int]:
        """Where ``container_port`` is published: (host address, host port)."""
        return published_on(self.ports, container_port, self._live)

    # -- commands -------------------------------------------------------------------------------

    async def exec(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        check: bool = False,
        max_output: int | None = None,
        seccomp: SeccompSpec = "default",
    ) -> ExecResult:
        """Run ``argv`` to completion in the container; see `AsyncContainer.exec`. It runs in the
        supervisor: if this process dies meanwhile, the command is killed, the container goes
        on."""
        check_argv(argv)
        if not (seccomp is None or isinstance(seccomp, str | dict)):
            raise errors.ContainerError(
                "an attached container's exec takes seccomp= as a name, a dict or None"
            )
        request = {
            **_process_request("run", argv, env, workdir, user),
            "timeout": timeout,
            "max_output": max_output,
            "seccomp": seccomp,
        }
        reply, fds = await self._ask_with_input(request, input)
        try:
            if reply is None:
                raise errors.ContainerDiedError(
                    f"container {self.name} ended while {argv[0]!r} ran in it"
                )
            if "error" in reply or len(fds) != 2:
                raise control.error_from(reply, errors.ContainerError)
            fields = reply["result"]
            stdout, stderr = (control.memfd_content(fd) for fd in fds)
            result = ExecResult(stdout=stdout, stderr=stderr, **fields)
        finally:
            for fd in fds:
                os.close(fd)
        if check and not result.ok:
            raise_for(result, argv, timeout)
        return result

    async def _ask_with_input(
        self, request: dict[str, Any], input: bytes | None
    ) -> tuple[dict[str, Any] | None, list[int]]:
        """Send ``request`` with ``input`` in a memfd; the supervisor's reply and fds."""
        record = self._live()
        sent = [control.memfd_holding(input)] if input is not None else []
        try:
            with await client.connect(record) as sock:
                await control.send(sock, request, sent)
                for fd in sent:
                    os.close(fd)
                sent = []
                return await control.receive(sock)
        finally:
            for fd in sent:
                os.close(fd)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        stdin: bool = True,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        seccomp: SeccompSpec = "default",
    ) -> AsyncProcess:
        """Start ``argv`` and return at once; see `AsyncContainer.spawn`. The process's stdio
        comes here as fds; it is killed if this process dies (or lets go of it unfinished)."""
        check_argv(argv)
        if seccomp != "default":
            raise errors.ContainerError(
                "an attached container's spawn takes no seccomp=: its processes get the "
                "container's own profile (set seccomp= when creating it, or use exec(seccomp=))"
            )
        request = {
            **_process_request("exec", argv, env, workdir, user),
            "interactive": stdin,
            "tty": tty,
            "rows": rows,
            "cols": cols,
            "kill_on_hangup": True,
        }
        sock = await client.connect(self._live())
        try:
            await control.send(sock, request)
            reply, fds = await control.receive(sock)
            if reply is None or "error" in reply:
                for fd in fds:
                    os.close(fd)
                raise control.error_from(
                    reply or {"error": "the container stopped"}, errors.ContainerError
                )
        except BaseException:
            sock.close()
            raise
        streams = process_streams(dict(zip(reply["streams"], fds, strict=False)), stdin)
        link = cast(ProcessLink, RemoteProcessLink(sock))
        container = cast(AsyncContainer, self)
        pid = int(reply.get("pid") or 0)
        return AsyncProcess(container, 0, pid, tuple(argv), *streams, tty=tty, link=link)

    # -- files ------------------------------------------------------------------------------

    # The file methods of an in-process container: all they need of one is `_open`.
    write_file = AsyncContainer.write_file
    read_file = AsyncContainer.read_file
    listdir = AsyncContainer.listdir
    open_file = AsyncContainer.open_file
    _open_for_reading = AsyncContainer._open_for_reading

    async def _open(self, path: str, mode: str, perm: int = 0o644, *, raw: bool = False) -> int:
        try:
            fd, _ = await open_remote(self._live(), path, mode, perm)
        except OSError as exc:
            if raw:  # (readiness.py's port probe tells "no such table" apart)
                raise
            raise errors.ContainerError(
                f"cannot open {path!r} in the container: {exc.strerror}"
            ) from None
        return fd

    # ... and its copy methods: all they need of one is `_copy_side`.
    copy_in = AsyncContainer.copy_in
    copy_out = AsyncContainer.copy_out
    get_archive = AsyncContainer.get_archive
    stat = AsyncContainer.stat

    async def remove(self, path: str | None = None, *, recursive: bool = False) -> None:
        """Remove a path of the container (``recursive``: a tree); without one, the container
        itself: its processes are killed, its supervisor ends, and its state and name go
        (Docker's ``rm -f``)."""
        if path is None:
            record = self._record
            if record is not None:
                await anyio.to_thread.run_sync(lambda: remove_detached(record.reload()))
            return
        await remove_path(self._copy_side(anyio.from_thread.run), path, recursive)

    def _copy_side(self, call: Callable[..., Any]) -> RemoteSide:
        return RemoteSide(self._live(), call)

    # -- the container's life ---------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the container (its main process's stop signal, SIGKILL after ``timeout`` s),
        keeping its state: `sandkit ps -a` shows it, `remove()` or `sandkit rm` removes it."""
        if self._record is not None:
            record = self._record.reload()
            wait = STOP_TIMEOUT if timeout is None else timeout
            await anyio.to_thread.run_sync(client.stop, record, wait)

    async def kill(self) -> None:
        """Kill everything in the container at once; its state stays, as after `stop`."""
        if self._record is not None and self.running:
            record = self._record.reload()
            try:
                await anyio.to_thread.run_sync(client.kill, record, signal.SIGKILL)
            except errors.ContainerNotRunningError:
                return  # it ended meanwhile
            await anyio.to_thread.run_sync(client.wait_for_exit, record, client.STOP_SLACK)

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to end and return its exit code (Docker's: 128+N for signal
        N; without a main process 0 when it was stopped, 137 when killed or its lifetime was
        up). `TimeoutError` when ``timeout`` s pass first (it keeps running)."""
        record = self._live_or_ended()
        with _still_running_after(timeout, record):
            if record.running:
                try:
                    await client.request(record, {"op": "wait"}, True)
                except errors.ContainerNotRunningError:
                    pass  # it ended meanwhile
                # (another process, with no fd of it here to wait on: polled)
                while state.supervisor_alive(record.state):  # noqa: ASYNC110
                    await anyio.sleep(_EXIT_POLL)
        ended = record.reload()
        if ended.exit_code is None:
            raise errors.ContainerError(
                f"container {ended.name} ended without an exit code: its supervisor died "
                f"(see {ended.dir / 'supervisor.log'})"
            )
        return ended.exit_code

    # -- the main process (``run=``; it runs in the supervisor's container, service.py) ---------

    async def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> bytes:
        """What the main process printed so far; see `AsyncContainer.logs`."""
        wanted = _log_request(False, stdout, stderr, timestamps, tail)
        return b"".join([chunk async for chunk in client.log_chunks(self._live(), wanted)])

    async def logs_stream(
        self,
        *,
        follow: bool = True,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The output as chunks, then (``follow``) as it comes; see
        `AsyncContainer.logs_stream`."""
        wanted = _log_request(follow, stdout, stderr, timestamps, tail)
        async for chunk in client.log_chunks(self._live(), wanted):
            yield chunk

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the main process's output, decoded ("" without one, or
        once the container has ended)."""
        try:
            return self._main_process().tail(lines)
        except errors.ContainerError:
            return ""

    @property
    def restart_count(self) -> int:
        """How many times ``restart=`` started the main process again, as its supervisor
        counts them (and recorded when the container ended)."""
        record = self._live_or_ended()
        if record.running:
            with contextlib.suppress(errors.ContainerNotRunningError):  # it ends meanwhile
                reply = _blocking(client.request, record, {"op": "ping"}, True)
                return int((reply or {}).get("restart_count", 0))
        return int(record.reload().state.get("restart_count") or 0)

    # -- readiness and health ------------------------------------------------------------------
    # The waits are the in-process ones (readiness.py): their probes open the container's
    # /proc/net tables (`_open`), run commands (`exec`), read the log (`logs`) and dial a port
    # (`_dial`), each asked of the supervisor. The health check runs in the supervisor, whose
    # thread writes State.Health to health.json.
    wait_for_port = AsyncContainer.wait_for_port
    wait_for_log = AsyncContainer.wait_for_log
    wait_for_http = AsyncContainer.wait_for_http
    wait_for_exec = AsyncContainer.wait_for_exec
    wait_for_healthy = AsyncContainer.wait_for_healthy

    @property
    def health(self) -> str | None:
        """The health check's state ("starting", "healthy", "unhealthy"), as the supervisor last
        recorded it; None without a health check."""
        report = self.health_report()
        return None if report is None else str(report.get("Status"))

    def health_report(self) -> dict[str, Any] | None:
        """State.Health as `docker inspect` shows it; see `AsyncContainer.health_report`."""
        return self._current().health

    def _ended_reason(self) -> str | None:
        """Why the container no longer runs (its exit code), or None while it runs."""
        record = self._current()
        return None if record.running else _exited(record)

    async def _dial(self, proto: str, port: int) -> socket.socket:
        """A socket the container's init connected to ``port`` on its 127.0.0.1 (the
        supervisor's ``dial``); OSError with the init's errno when it cannot."""
        with await client.connect(self._live()) as sock:
            await control.send(sock, {"op": "dial", "proto": proto, "port": port})
            reply, fds = await control.receive(sock)
        if reply is None or "error" in reply or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            if reply is not None and isinstance(reply.get("errno"), int):
                raise OSError(reply["errno"], str(reply["error"]))
            raise errors.ContainerError(f"the supervisor did not dial port {port}: {reply}")
        return socket.socket(fileno=fds[0])

    def _main_process(self) -> RemoteMainProcess:
        """What the sync API's logs and wait use (`container.main_process`)."""
        return RemoteMainProcess(self)

    # -- the writable layer: done by the supervisor, which holds the container -------------

    async def diff(self) -> list[Change]:
        """What the container changed in its filesystem, as `docker diff` (see
        `AsyncContainer.diff`)."""
        from ..images.changes import Change

        _, fds = await _ask_layer(self._live(), {"op": "diff"})
        try:
            rows = json.loads(control.memfd_content(fds[0])) if fds else []
        finally:
            for fd in fds:
                os.close(fd)
        return [Change(str(path), str(kind)) for kind, path in rows]

    async def commit(
        self,
        tag: str | None = None,
        *,
        changes: Sequence[str] = (),
        message: str = "",
        author: str = "",
    ) -> Image:
        """A new image of the container's changes, as `docker commit` (see
        `AsyncContainer.commit`)."""
        request = {
            "op": "commit",
            "tag": tag,
            "changes": list(changes),
            "message": message,
            "author": author,
        }
        reply, _ = await _ask_layer(self._live(), request)
        return await anyio.to_thread.run_sync(Image.get, str(reply["id"]))

    async def export(self, path: str | os.PathLike[str]) -> None:
        """Write the container's flattened filesystem to the tar file ``path``, as
        `docker export` (see `AsyncContainer.export`)."""
        from .layer import replacing

        with replacing(path) as out_fd:
            await export_remote(self._live(), out_fd)

    async def ping(self) -> float:
        """The round trip to the container's supervisor and back, in seconds."""
        started = time.monotonic()
        await client.request(self._live(), {"op": "ping"}, True)
        return time.monotonic() - started

    async def connect(self, network: object, aliases: Sequence[str] = ()) -> None:
        """Put the running container on one more network; see `AsyncContainer.connect`."""
        from .container import network_name

        message = {"op": "connect", "network": network_name(network), "aliases": list(aliases)}
        await client.request(self._live(), message, True)

    async def disconnect(self, network: object) -> None:
        """Take the running container off ``network``."""
        from .container import network_name

        message = {"op": "disconnect", "network": network_name(network), "aliases": []}
        await client.request(self._live(), message, True)

    def stats(self) -> CgroupStats:
        """The container's resource use, read by its supervisor; see `AsyncContainer.stats`
        (`ContainerError` for a container without a cgroup)."""
        from .cgroups import CgroupStats

        reply = _blocking(client.request, self._live(), {"op": "stats"}, True)
        if reply is None:
            raise errors.ContainerNotRunningError(f"container {self.name} ended meanwhile")
        return CgroupStats(**reply["stats"])

    async def set_egress(self, egress: str | Sequence[str] | None) -> None:
        """Not for an attached container."""
        raise errors.ContainerError("set_egress() is not available on an attached container")

    def _live(self) -> state.Record:
        """The record of the running container; `ContainerNotRunningError` (with how it
        ended) when it is not."""
        return _check_running(self._live_or_ended())

    def _live_or_ended(self) -> state.Record:
        if self._record is None:
            raise errors.ContainerNotRunningError("this detached container was never started")
        return self._record.reload()

    def _recorded(self, key: str) -> Any:
        """What the supervisor recorded of the running container under ``key`` (its ports,
        its networks); empty once it has stopped, as an in-process container's."""
        record = self._current()
        return (record.state.get(key) or {}) if record.running else {}

    def _current(self) -> state.Record:
        return self._record.reload() if self._record is not None else self._live_or_ended()


@attrs.frozen
class RemoteMainProcess:
    """The main process of an attached container, as the sync API reads one
    (`service.Service`'s logs, stream, wait_blocking and tail), blocking the caller's thread."""

    container: AsyncAttachedContainer

    def logs(self, view: LogView, tail: int | None) -> bytes:
        """The output so far, as ``view`` shows it (its last ``tail`` lines)."""
        return b"".join(self.stream(view, tail, follow=False))

    def stream(self, view: LogView, tail: int | None, follow: bool) -> Iterator[bytes]:
        """The output so far, then with ``follow`` what comes, until the main process ended."""
        wanted = _log_request(follow, view.stdout, view.stderr, view.timestamps, tail)
        chunks = client.log_chunks(self.container._live(), wanted)
        while True:
            try:
                yield _blocking(anext, chunks)
            except StopAsyncIteration:
                return

    def wait_blocking(self, timeout: float | None) -> int:
        """The main process's exit status once the container has ended."""
        return _blocking(self.container.wait, timeout)

    def tail(self, lines: int) -> str:
        """The last ``lines`` lines of both streams, decoded."""
        return self.logs(LogView(), lines).decode(errors="replace")


@contextlib.contextmanager
def _still_running_after(timeout: float | None, record: state.Record) -> Iterator[None]:
    """`anyio.fail_after`, its `TimeoutError` saying what still runs (as the in-process
    container's `wait` does)."""
    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError:
        raise TimeoutError(
            f"container {record.name} still runs after {timeout:g} s (it keeps running)"
        ) from None


def _blocking(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await function(*args)`` from synchronous code, on an event loop of its own in a
    thread of its own: the caller's thread may be running one (an async program's
    `log_tail()`, called in an error message)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sandkit-attached") as pool:
        return pool.submit(anyio.run, function, *args, backend="trio").result()


def _log_request(
    follow: bool, stdout: bool, stderr: bool, timestamps: bool, tail: int | None
) -> dict[str, Any]:
    log_view(stdout=stdout, stderr=stderr, timestamps=timestamps, tail=tail)  # checks tail
    return {
        "op": "logs",
        "follow": follow,
        "stdout": stdout,
        "stderr": stderr,
        "timestamps": timestamps,
        "tail": tail,
    }


@attrs.define(eq=False)
class RemoteProcessLink:
    """How an `AsyncProcess` of an attached container reaches it: its connection to the
    supervisor, which sends the exit and passes signals on (`process.ProcessLink`'s job)."""

    sock: socket.socket
    closed: bool = False

    async def wait_exit(self, exec_id: int) -> Exit:
        """The process's exit, as the supervisor reports it; then the connection is done."""
        try:
            while True:
                message, fds = await control.receive(self.sock)
                for fd in fds:
                    os.close(fd)
                if message is None:  # the supervisor went: the container ended under it
                    raise errors.ContainerNotRunningError("the container stopped")
                if "exit" in message:
                    code = int(message["exit"])
                    return (
                        Exit(id=exec_id, code=code) if code >= 0 else Exit(id=exec_id, signal=-code)
                    )
        finally:
            self.close()

    async def signal(self, exec_id: int, sig: int, *, tree: bool) -> None:
        """Send ``sig`` to the process (``tree``: and to what it started)."""
        if not self.closed:
            await control.send(self.sock, {"op": "signal", "signal": sig, "tree": tree})

    def channel_dead(self) -> bool:
        """True once the connection is gone."""
        return self.closed

    def close(self) -> None:
        """Let go of the process (the supervisor kills it if it still runs)."""
        self.closed = True
        self.sock.close()


def process_streams(
    fds: dict[str, int], stdin: bool
) -> tuple[AsyncInput | None, AsyncOutput | None, AsyncOutput | None]:
    """stdin, stdout and stderr of a process from the fds its supervisor sent (named by the
    ``streams`` of its reply; with a tty, one pty master serves them all)."""
    for fd in fds.values():
        set_nonblocking(fd)
    if "pty" in fds:
        master = fds["pty"]
        return (AsyncInput(master, owns_fd=False) if stdin else None, AsyncOutput(master), None)
    return (
        AsyncInput(fds["stdin"]) if "stdin" in fds else None,
        AsyncOutput(fds["stdout"]),
        AsyncOutput(fds["stderr"]),
    )


def _check_running(record: state.Record) -> state.Record:
    if record.running:
        return record
    raise errors.ContainerNotRunningError(_exited(record))


def _exited(record: state.Record) -> str:
    code = record.exit_code
    return (
        f"container {record.name or record.id[:12]} has exited "
        f"(exit code {code if code is not None else 'unknown'}): `sandkit logs` and "
        "`sandkit inspect` say more; `sandkit rm` (or remove()) removes it"
    )


async def open_remote(
    record: state.Record, path: str, mode: str, perm: int = 0o644
) -> tuple[int, copy.IdMap]:
    """An fd of ``path`` in the container, opened by its init in the supervisor, and the
    container's id maps. `OSError` with the init's errno when it refuses."""
    from . import copy

    with await client.connect(record) as sock:
        await control.send(sock, {"op": "open", "path": path, "mode": mode, "perm": perm})
        reply, fds = await control.receive(sock)
    if reply is None or "error" in reply or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        if reply is not None and isinstance(reply.get("errno"), int):
            raise OSError(reply["errno"], str(reply["error"]), path)
        raise errors.CopyError(f"container {record.name} did not open {path!r}: {reply}")
    return fds[0], copy.IdMap(_ranges(reply["uids"]), _ranges(reply["gids"]))


class RemoteSide:
    """A detached container as copy.py reaches it (the ``Side`` of copy.py), from a worker
    thread: each open is a request to its supervisor (``call`` runs it: anyio's
    from_thread.run, or the sync API's portal)."""

    name = "the container"

    def __init__(
        self, record: state.Record, call: Callable[..., Any] = anyio.from_thread.run
    ) -> None:
        self._record = record
        self._call = call
        self._ids: copy.IdMap | None = None

    def open(self, path: str, mode: str) -> int:
        """An fd the container's init opened, resolved in the container's root."""
        fd, self._ids = self._call(open_remote, self._record, path, mode)
        return int(fd)

    def seen(self, uid: int, gid: int) -> tuple[int, int]:
        """The ids the container sees for host ids ``uid:gid``."""
        assert self._ids is not None  # every copy opens before it reads owners
        return self._ids.to_container(uid, gid)

    def host_ids(self, uid: int, gid: int, where: str) -> tuple[int, int]:
        """The host ids for the container's ids ``uid:gid`` (found at ``where``)."""
        assert self._ids is not None
        return self._ids.to_host(uid, gid, where)


def remove_detached(record: state.Record, *, force: bool = True) -> None:
    """Remove a detached container's state (`client.remove`) and, for one made by
    `sandkit create`, the writable layer it kept on disk."""
    client.remove(record, force=force)
    if record.config.get("options", {}).get("persist"):
        from .layer import remove_persistent_layer

        remove_persistent_layer(record.id)


async def export_remote(record: state.Record, out_fd: int) -> None:
    """`export` of a running detached container into the file open as ``out_fd`` (written
    by its supervisor)."""
    await _ask_layer(record, {"op": "export"}, [out_fd])


async def _ask_layer(
    record: state.Record, message: dict[str, Any], fds: Sequence[int] = ()
) -> tuple[dict[str, Any], list[int]]:
    """A diff, commit or export request to the supervisor: its answer and the fds that came
    with it (the caller's to close); its refusal raised as the same error in-process."""
    with await client.connect(record) as sock:
        await control.send(sock, message, list(fds))
        reply, received = await control.receive(sock)
    if reply is None or "error" in reply:
        for fd in received:
            os.close(fd)
        if reply is None:
            raise state.ContainerNotRunning(f"Container {record.id} is not running")
        raise control.error_from(reply, errors.ContainerError)
    return reply, received


def _ranges(value: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(a), int(b), int(c)) for a, b, c in value)
