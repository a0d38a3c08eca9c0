"""The process that keeps a detached container (`sandkit run -d`, ``detach=True``) alive after
the process that made it exits.

    python -m sandkit.detached.supervisor STATE_DIR READY_FD

One supervisor per container, in its own session (no terminal, no signals from the caller's
shell). It starts the container that STATE_DIR/config.json describes through the normal async
API, serves STATE_DIR/control.sock for `exec`, `kill`, `stop`, `cp`, `network
connect/disconnect` and the attached API (`Container.attach`), and when the container ends it
records the exit code and exits. With a main process (`sandkit run -d`) it writes that
process's output to STATE_DIR/log, and the container ends with it; without one (``detach=True``)
the container lives until it is stopped, killed or removed, or its ``lifetime`` is up. If the
supervisor itself dies (even by SIGKILL) the container's init sees its control socket close and
kills everything, so a container is never left running without a way to reach it.

READY_FD is a pipe to the process that started us: one JSON line saying whether the container
started ({"ok": true} or {"error": ..., "code": ...}), then EOF.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs

from .. import errors
from ..images.config import ImageConfig, stop_signal
from ..images.image import Image
from ..runtime import handover
from ..runtime.container import (
    AsyncContainer,
    connect_in_container,
    copy_side,
    init_exited,
    main_command,
    open_for_copy,
    start_health_checks,
)
from ..runtime.process import AsyncInput, AsyncOutput, AsyncProcess
from . import control, exitcodes, state
from .control import LOG_HEADER, OUTPUT_GRACE, STOP_TIMEOUT

_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A client says what it wants at once: one that connects and says nothing holds an fd here,
# and is dropped after this many seconds.
REQUEST_TIMEOUT = 10.0
# How long accepting pauses when the supervisor is out of fds (until clients go).
ACCEPT_BACKOFF = 0.1


@attrs.define(eq=False)
class Supervisor:
    """Serves one detached container until it ends: answers ``ping``, ``exec``, ``run``,
    ``stop``, ``kill``, ``open``, ``dial``, ``logs``, ``wait``, ``stats``, ``connect`` and
    ``disconnect`` requests on its socket (docs/architecture.md), and stops the
    container when it is sent SIGTERM, SIGINT or SIGHUP. With a main process, writes its output
    to the log and ends with it; without one, holds the container until it is stopped."""

    record: state.Record
    container: AsyncContainer
    main: AsyncProcess | None  # None: no main process (``detach=True``)
    stop_signal: int
    ended: anyio.Event = attrs.field(factory=anyio.Event)
    # How a held container ended, as a return code: 0 stopped, -9 killed; None: its own main
    # process (``run=``) says.
    held_returncode: int | None = 0
    # A held container whose main process the container runs itself (``run=``, service.py).
    serviced: bool = False
    stop_timeout: float = STOP_TIMEOUT
    stopping: bool = False
    # The aliases the container has on each network it is on, by network name.
    aliases: dict[str, list[str]] = attrs.field(factory=dict)

    async def run(self, listener: socket.socket) -> int:
        """Serve until the container ends; its main process's return code (without one: 0
        when it was stopped, -9 when it was killed or its ``lifetime`` was up)."""
        async with anyio.create_task_group() as services:
            services.start_soon(self._serve, listener, services)
            services.start_soon(self._stop_on_signals, services)
            if self.main is not None:
                returncode = await self._run_main(self.main)
            else:
                returncode = await self._hold()
            services.cancel_scope.cancel()
        return returncode

    async def _run_main(self, main: AsyncProcess) -> int:
        log_fd = os.open(
            self.record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        try:
            async with anyio.create_task_group() as logs:
                logs.start_soon(_log_stream, main.stdout, 1, log_fd)
                if main.stderr is not None:
                    logs.start_soon(_log_stream, main.stderr, 2, log_fd)
                returncode = await main.wait()
                self.ended.set()
                # As in Docker: the container ends with its main process.
                await self.container.stop()
                logs.cancel_scope.deadline = anyio.current_time() + OUTPUT_GRACE
        finally:
            os.close(log_fd)
        return returncode

    async def _hold(self) -> int:
        """Until a request or signal ends the container, or its init ends by itself (the
        ``lifetime`` is up, or its main process ended for good: everything was killed)."""
        async with anyio.create_task_group() as watch:

            async def init_ends() -> None:
                await init_exited(self.container)
                self._end(None if self.serviced else -signal.SIGKILL)

            watch.start_soon(init_ends)
            await self.ended.wait()
            watch.cancel_scope.cancel()
        # (with a main process: its stop signal first, as `docker stop`)
        await self.container.stop(self.stop_timeout)
        if self.held_returncode is None:
            return _returncode(await self.container.wait())
        return self.held_returncode

    def _end(self, returncode: int | None) -> None:
        """End a held container, with ``returncode`` (None: its main process's)."""
        if not self.ended.is_set():
            self.held_returncode = returncode
            self.ended.set()

    # --- requests -------------------------------------------------------------------------------

    async def _serve(self, listener: socket.socket, services: anyio.abc.TaskGroup) -> None:
        while True:
            await anyio.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            except OSError:
                # Out of fds (EMFILE, ENFILE): the clients holding them go in time, and the
                # container must not end with this loop. The waiting ones stay in the backlog.
                await anyio.sleep(ACCEPT_BACKOFF)
                continue
            conn.setblocking(False)
            services.start_soon(self._handle, conn, services)

    async def _handle(self, conn: socket.socket, services: anyio.abc.TaskGroup) -> None:
        # One bad request or vanished client must not take the container down with it.
        try:
            with conn:
                await self._dispatch(conn, services)
        except Exception:  # noqa: BLE001 - logged to supervisor.log, the container goes on
            traceback.print_exc()

    async def _dispatch(self, conn: socket.socket, services: anyio.abc.TaskGroup) -> None:
        request: dict[str, Any] | None = None
        fds: list[int] = []
        with anyio.move_on_after(REQUEST_TIMEOUT):
            request, fds = await control.receive(conn)
        op = request.get("op") if request is not None else None
        # Only `run` (its input) and `export` (the file to write) take an fd; never keep what
        # we did not ask for.
        wanted = fds[:1] if op in ("run", "export") else []
        for fd in fds[len(wanted) :]:
            os.close(fd)
        if request is None:
            return
        if op == "ping":
            pid = self.main.pid if self.main is not None else None
            restarts = self.container.restart_count
            await control.send(conn, {"ok": True, "pid": pid, "restart_count": restarts})
        elif op == "kill":
            await self._kill(int(request.get("signal", signal.SIGKILL)))
            await control.send(conn, {"ok": True})
        elif op == "stop":
            # In the services group, so that it goes on after the client hangs up; the
            # client waits for this supervisor to exit.
            services.start_soon(self.stop, float(request.get("timeout", STOP_TIMEOUT)))
        elif op == "exec":
            await self._exec(conn, request, services)
        elif op == "run":
            await self._run_captured(conn, request, wanted[0] if wanted else -1)
        elif op == "logs":
            await self._send_logs(conn, request)
        elif op == "wait":
            await self._wait_for_end(conn)
        elif op == "open":
            await self._open_for_copy(conn, request)
        elif op in ("diff", "commit", "export"):
            await self._layer_request(conn, request, wanted[0] if wanted else -1)
        elif op == "dial":
            await self._dial(conn, request)
        elif op == "stats":
            await self._send_stats(conn)
        elif op in ("connect", "disconnect"):
            await self._change_networks(conn, request)
        else:
            await control.send(
                conn, {"error": f"unknown request {op!r}", "code": exitcodes.SANDKIT_FAILED}
            )

    async def _run_captured(
        self, conn: socket.socket, request: dict[str, Any], input_fd: int
    ) -> None:
        """The attached API's `exec`: run the command to completion here (`AsyncContainer.exec`,
        its timeout and output limit included) and answer with the `ExecResult`, its stdout and
        stderr in two memfds. A client that goes away first cancels it: the process tree is
        killed, the container goes on."""
        try:
            data = control.memfd_content(input_fd) if input_fd >= 0 else None
            argv = [str(a) for a in request["argv"]]
            options = _captured_options(request)
        except (KeyError, TypeError, ValueError, OSError):
            await control.send(conn, {"error": "malformed run request", "kind": "ContainerError"})
            return
        finally:
            if input_fd >= 0:
                os.close(input_fd)
        result = None
        async with _cancelled_on_hang_up(conn):
            try:
                result = await self.container.exec(argv, input=data, **options)
            except errors.SandkitError as exc:
                await control.send(conn, {"error": str(exc), "kind": type(exc).__name__})
        if result is None:
            return
        fields = attrs.asdict(result, filter=lambda a, _: a.name not in ("stdout", "stderr"))
        outputs = [control.memfd_holding(result.stdout), control.memfd_holding(result.stderr)]
        try:
            await control.send(conn, {"ok": True, "result": fields}, outputs)
        finally:
            for fd in outputs:
                os.close(fd)

    async def _wait_for_end(self, conn: socket.socket) -> None:
        """Until the container ends (the services' end then closes ``conn``) or the client
        hangs up: a client whose wait timed out, or that died, must not leave its connection
        here for the container's whole life."""
        async with _cancelled_on_hang_up(conn):
            await self.ended.wait()

    async def _send_logs(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """`logs`/`logs_stream` of the container's own main process (``run=``): each chunk in a
        memfd (a message stays small), then ``{"end": true}``."""
        tail = request.get("tail")
        try:
            chunks = self.container.logs_stream(
                follow=bool(request.get("follow")),
                stdout=bool(request.get("stdout", True)),
                stderr=bool(request.get("stderr", True)),
                timestamps=bool(request.get("timestamps")),
                tail=None if tail is None else int(tail),
            )
            async for chunk in chunks:
                fd = control.memfd_holding(chunk)
                try:
                    await control.send(conn, {"chunk": True}, [fd])
                finally:
                    os.close(fd)
        except errors.SandkitError as exc:
            await control.send(conn, {"error": str(exc), "kind": type(exc).__name__})
            return
        await control.send(conn, {"end": True})

    async def _open_for_copy(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """`sandkit cp`: an fd of the container, resolved in its root by the init, and the
        container's id maps; the client walks or writes below it (copy.py)."""
        try:
            fd = await open_for_copy(
                self.container,
                str(request["path"]),
                str(request["mode"]),
                int(request.get("perm", 0o644)),
            )
        except OSError as exc:
            await control.send(conn, {"error": exc.strerror or str(exc), "errno": exc.errno})
            return
        try:
            ids = copy_side(self.container, anyio.from_thread.run).ids
            await control.send(conn, {"ok": True, "uids": ids.uids, "gids": ids.gids}, [fd])
        finally:
            os.close(fd)

    async def _layer_request(self, conn: socket.socket, request: dict[str, Any], fd: int) -> None:
        """`diff` (its changes as JSON in a memfd: a big one would not fit in a message),
        `commit` (``{"tag", "changes", "message", "author"}``: the new image's id) and
        `export` (into the file ``fd`` the client opened) of the container."""
        reply: dict[str, Any] = {"ok": True}
        out: list[int] = []
        try:
            if request["op"] == "diff":
                changes = [[c.kind, c.path] for c in await self.container.diff()]
                out.append(control.memfd_holding(json.dumps(changes).encode()))
            elif request["op"] == "commit":
                image = await self.container.commit(
                    request.get("tag") or None,
                    changes=[str(c) for c in request.get("changes") or ()],
                    message=str(request.get("message") or ""),
                    author=str(request.get("author") or ""),
                )
                reply["id"] = image.id
            elif fd < 0:
                raise errors.ContainerError("an export request comes with the file to write")
            else:
                await self.container._export_into(fd)
        except errors.SandkitError as exc:
            reply = {"error": str(exc), "kind": type(exc).__name__}
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            await control.send(conn, reply, out)
        finally:
            for memfd in out:
                os.close(memfd)

    async def _dial(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """An attached container's `wait_for_http`: a socket the init connected to a port on
        the container's 127.0.0.1 (``{"proto", "port"}``), passed to the client, which speaks
        over it; the refusal as ``{"error", "errno"}`` (ECONNREFUSED: nothing listens)."""
        proto, port = request.get("proto"), request.get("port")
        if proto not in ("tcp", "udp") or not isinstance(port, int) or not 1 <= port <= 65535:
            await control.send(conn, {"error": "malformed dial request", "kind": "ContainerError"})
            return
        try:
            sock = await connect_in_container(self.container, proto, port)
        except OSError as exc:
            await control.send(conn, {"error": exc.strerror or str(exc), "errno": exc.errno})
            return
        with sock:
            await control.send(conn, {"ok": True}, [sock.fileno()])

    async def _send_stats(self, conn: socket.socket) -> None:
        """An attached container's `stats()`: the container's `CgroupStats` as a dict, or the
        refusal (a container without a cgroup) as ``{"error"}``."""
        try:
            stats = self.container.stats()
        except errors.SandkitError as exc:
            await control.send(conn, {"error": str(exc), "code": exitcodes.FAILED})
            return
        await control.send(conn, {"ok": True, "stats": attrs.asdict(stats)})

    async def _change_networks(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """`sandkit network connect/disconnect`: the container joins or leaves a network; the
        answer is ``{"ok": true}`` or the refusal (``{"error": ...}``)."""
        network, aliases = request.get("network"), request.get("aliases", [])
        try:
            if not isinstance(network, str) or not (
                isinstance(aliases, list) and all(isinstance(a, str) for a in aliases)
            ):
                raise errors.NetworkSpecError(f"malformed {request.get('op')} request")
            before = set(self.container.networks)
            if request["op"] == "connect":
                await self.container.connect(network, aliases)
            else:
                await self.container.disconnect(network)
        except errors.SandkitError as exc:
            await control.send(conn, {"error": str(exc), "code": exitcodes.FAILED})
            return
        now = set(self.container.networks)
        for joined in now - before:
            self.aliases[joined] = list(aliases)
        for left in before - now:
            self.aliases.pop(left, None)
        # `sandkit inspect` shows them from here on
        state.write_state(self.record.dir, networks=network_settings(self.container, self.aliases))
        await control.send(conn, {"ok": True})

    async def stop(self, timeout: float) -> None:
        """Docker's stop: the stop signal, then SIGKILL to everything after ``timeout`` s."""
        if self.stopping:
            return
        self.stopping = True
        if self.main is None:
            self.stop_timeout = timeout
            self._end(None if self.serviced else 0)
            return
        await self._kill(self.stop_signal)
        with anyio.move_on_after(timeout):
            await self.ended.wait()
        if not self.ended.is_set():
            await self._kill(signal.SIGKILL)

    async def _kill(self, signum: int) -> None:
        if self.ended.is_set():
            return
        if self.main is None:  # nothing to signal but the whole container
            if signum == signal.SIGKILL:
                self._end(-signal.SIGKILL)
            return
        try:
            if signum == signal.SIGKILL:
                await self.main.kill()  # the whole tree, like killing a container's PID 1
            else:
                await self.main.send_signal(signum)
        except errors.SandkitError:
            pass  # it ended meanwhile

    async def _exec(
        self, conn: socket.socket, request: dict[str, Any], services: anyio.abc.TaskGroup
    ) -> None:
        detach = bool(request.get("detach"))
        tty = bool(request.get("tty")) and not detach
        try:
            process = await self.container.spawn(
                [str(a) for a in request["argv"]],
                env={str(k): str(v) for k, v in (request.get("env") or {}).items()},
                workdir=request.get("workdir"),
                user=request.get("user"),
                stdin=bool(request.get("interactive")) and not detach,
                tty=tty,
                rows=int(request.get("rows", 24)),
                cols=int(request.get("cols", 80)),
            )
        except errors.SandkitError as exc:
            await control.send(conn, {"error": str(exc), "code": exitcodes.for_error(exc)})
            return
        except (KeyError, TypeError, ValueError):
            await control.send(
                conn, {"error": "malformed exec request", "code": exitcodes.SANDKIT_FAILED}
            )
            return
        if detach:
            services.start_soon(_discard_output, process)
            await control.send(conn, {"ok": True})
            return
        # The client reads and writes the process's pipes (or pty) itself: pass them over and
        # drop our copies, so that its closing stdin is the process's EOF.
        named: list[tuple[str, AsyncInput | AsyncOutput]]
        if tty:  # stdin and stdout are the same pty master
            assert process.stdout is not None
            named = [("pty", process.stdout)]
        else:
            named = [
                (n, s)
                for n, s in (
                    ("stdin", process.stdin),
                    ("stdout", process.stdout),
                    ("stderr", process.stderr),
                )
                if s is not None
            ]
        await control.send(
            conn,
            {"ok": True, "pid": process.pid, "streams": [n for n, _ in named]},
            [s.fd for _, s in named],
        )
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        try:
            async with anyio.create_task_group() as session:
                session.start_soon(
                    _forward_client_signals, conn, process, bool(request.get("kill_on_hangup"))
                )
                returncode = await process.wait()
                session.cancel_scope.cancel()
        except errors.SandkitError:
            returncode = -signal.SIGKILL  # the container stopped under it, as `docker exec` sees it
        try:
            await control.send(conn, {"exit": returncode})
        except OSError:
            pass  # the client went away; the process ran to its end anyway

    async def _stop_on_signals(self, services: anyio.abc.TaskGroup) -> None:
        with anyio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as received:
            async for _ in received:
                services.start_soon(self.stop, STOP_TIMEOUT)


async def _forward_client_signals(
    conn: socket.socket, process: AsyncProcess, kill_on_hangup: bool
) -> None:
    """Signals the client sends (``tree``: to what the process started too); a client that
    leaves leaves the process running, as `docker exec`'s, unless it asked otherwise (an
    attached container's `spawn`: a dead worker's processes go with it)."""
    while True:
        message, fds = await control.receive(conn)
        for fd in fds:
            os.close(fd)
        if message is None:
            if kill_on_hangup:
                with contextlib.suppress(errors.SandkitError):
                    await process.kill()
            return
        if message.get("op") == "signal":
            try:
                signum = int(message["signal"])
                if message.get("tree"):
                    await process.kill(signum)
                else:
                    await process.send_signal(signum)
            except (errors.SandkitError, KeyError, ValueError):
                pass


def _returncode(status: int) -> int:
    """Docker's exit status (128 + N for signal N) as a return code (-N), as `exitcodes`
    takes it back."""
    return -(status - exitcodes.SIGNAL_BASE) if status > exitcodes.SIGNAL_BASE else status


def _captured_options(request: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `AsyncContainer.exec` a ``run`` request may carry, checked."""
    env = request.get("env") or {}
    timeout, max_output = request.get("timeout"), request.get("max_output")
    seccomp = request.get("seccomp", "default")
    if not isinstance(env, dict) or not (seccomp is None or isinstance(seccomp, str | dict)):
        raise TypeError("malformed run request")
    return {
        "env": {str(k): str(v) for k, v in env.items()},
        "workdir": None if request.get("workdir") is None else str(request["workdir"]),
        "user": None if request.get("user") is None else str(request["user"]),
        "timeout": None if timeout is None else float(timeout),
        "max_output": None if max_output is None else int(max_output),
        "seccomp": seccomp,
    }


@contextlib.asynccontextmanager
async def _cancelled_on_hang_up(conn: socket.socket) -> AsyncIterator[None]:
    """The body runs until it is done or the client closes its end, whichever comes first."""
    async with anyio.create_task_group() as scope:

        async def cancel_when_client_leaves() -> None:
            await _wait_hang_up(conn)
            scope.cancel_scope.cancel()

        scope.start_soon(cancel_when_client_leaves)
        yield
        scope.cancel_scope.cancel()


async def _wait_hang_up(conn: socket.socket) -> None:
    """Until the client closes its end (it sends nothing more during a ``run``)."""
    while True:
        message, fds = await control.receive(conn)
        for fd in fds:
            os.close(fd)
        if message is None:
            return


async def _discard_output(process: AsyncProcess) -> None:
    async with process:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.read_all(limit=0)
        await process.wait()


async def _log_stream(source: AsyncOutput | None, stream: int, log_fd: int) -> None:
    if source is None:
        return
    while chunk := await source.read():
        os.write(log_fd, LOG_HEADER.pack(stream, len(chunk)) + chunk)


def _stop_signal(image: Image | str) -> int:
    return stop_signal(image.config if isinstance(image, Image) else ImageConfig())


def published(container: AsyncContainer) -> list[dict[str, Any]]:
    """Where each published port landed, for `sandkit port` (the listeners are ours)."""
    return [
        {"port": key, "host_ip": b.host_ip, "host_port": b.host_port}
        for key, bindings in container.ports.items()
        for b in bindings
    ]


def _report(ready_fd: int, message: dict[str, Any]) -> None:
    if ready_fd >= 0:
        try:
            os.write(ready_fd, json.dumps(message).encode() + b"\n")
        finally:
            os.close(ready_fd)


def network_settings(
    container: AsyncContainer, aliases: dict[str, list[str]]
) -> dict[str, dict[str, Any]]:
    """Docker's ``NetworkSettings.Networks`` of a running container: by network name, its
    address there, the network's prefix length, gateway and id, the MAC and the aliases."""
    from ..net import portguard, store

    found = {}
    for name, address in container.networks.items():
        network = store.get_network(name)
        found[name] = {
            "IPAddress": address,
            "IPPrefixLen": network.subnet.prefixlen,
            "Gateway": str(network.gateway),
            "MacAddress": portguard.mac_for(ipaddress.IPv4Address(address)),
            "Aliases": aliases.get(name, []),
            "NetworkID": network.id,
        }
    return found


async def supervise(directory: Path, ready_fd: int) -> None:
    """Run the detached container whose state directory is ``directory``: start it, report
    readiness (or the error) on ``ready_fd`` to the process that launched us, serve it until it
    ends, and record how it ended (with ``remove``, `sandkit run --rm`: remove its state)."""
    record = state.load(directory)
    state.write_state(
        directory,
        status="created",
        supervisor_pid=os.getpid(),
        supervisor_start=state.process_start_time(os.getpid()),
    )
    listener = control.listen(record.socket_path)
    try:
        image = handover.image_from_text(record.config.get("source", record.config["image"]))
        options = handover.options_from_json(record.config.get("options", {}))
        options["hostname"] = options.get("hostname") or record.id[:12]
        container = AsyncContainer(image, **options)
        container.id = record.id  # the keeper lists it by the id `sandkit` shows
        async with container:
            main = await _start_main(container, record.config.get("main"))
            aliases = {name: list(options.get("aliases", ())) for name in container.networks}
            # Health checks (issue 18 item 2) run while the main process does; their state
            # goes to health.json for `sandkit ps` and `inspect`.
            start_health_checks(
                container, lambda health: state.write_health(directory, health.to_docker())
            )
            state.write_state(
                directory,
                status="running",
                started_at=time.time(),
                pid=main.pid if main is not None else None,
                command=main_command(container),
                ports=published(container),
                networks=network_settings(container, aliases),
            )
            _report(ready_fd, {"ok": True})
            ready_fd = -1
            supervisor = Supervisor(
                record,
                container,
                main,
                _stop_signal(image),
                serviced=bool(options.get("run")),
                aliases=aliases,
            )
            returncode = await supervisor.run(listener)
        state.write_state(
            directory,
            status="exited",
            finished_at=time.time(),
            exit_code=exitcodes.from_returncode(returncode),
            restart_count=container.restart_count,
        )
    except errors.SandkitError as exc:
        if ready_fd < 0:
            raise
        _report(
            ready_fd,
            {"error": str(exc), "code": exitcodes.for_error(exc), "kind": type(exc).__name__},
        )
    finally:
        listener.close()
        # One unlink of a local socket file: quick; an await in this `finally` would need a cancel shield.
        Path(record.socket_path).unlink(missing_ok=True)  # noqa: ASYNC240
    if record.config.get("remove"):
        state.remove(record)


async def _start_main(
    container: AsyncContainer, main: dict[str, Any] | None
) -> AsyncProcess | None:
    """The main process `sandkit run -d` asked for (its output goes to the log), or None."""
    if not main:
        return None
    container.history_command = tuple(main["argv"])  # what a commit records, as Docker's Cmd
    return await container.spawn(
        main["argv"], stdin=bool(main.get("stdin")), tty=bool(main.get("tty"))
    )


def main(argv: list[str]) -> int:
    """The supervisor process's entry point: ``argv`` is the state directory and the fd to report
    readiness on. Returns 0, or 1 after recording what ended it."""
    directory, ready_fd = Path(argv[0]), int(argv[1])
    # The launcher's child exits at once and is reaped by it; the supervisor goes on as its
    # orphan (the host's init, or the nearest subreaper, reaps it), so that a long-lived program
    # that makes detached containers is not left with a zombie of each (a daemon's double
    # fork). One thread runs here yet: forking is safe.
    if os.fork() != 0:
        os._exit(0)
    try:
        anyio.run(supervise, directory, ready_fd, backend="trio")
    except BaseException as exc:  # noqa: BLE001 - whatever ended us is recorded for `ps`/`inspect`
        traceback.print_exc()
        if directory.is_dir():  # gone when `run -d` already cleaned up after a failed start
            state.write_state(
                directory,
                status="exited",
                finished_at=time.time(),
                exit_code=None,
                error=f"{type(exc).__name__}: {exc}",
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
