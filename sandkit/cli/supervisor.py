"""The process that keeps a detached container (`sandkit run -d`) alive after the CLI exits.

    python -m sandkit.cli.supervisor STATE_DIR READY_FD

One supervisor per container, in its own session (no terminal, no signals from the caller's
shell). It starts the container through the normal async API, writes the main process's output
to STATE_DIR/log, serves STATE_DIR/control.sock for `exec`, `kill`, `stop`, `cp` and `network
connect/disconnect`, and when the main process ends it stops the container, records the exit
code and exits. If the supervisor itself
dies (even by SIGKILL) the container's init sees its control socket close and kills everything,
so a container is never left running without a way to reach it.

READY_FD is a pipe to the `sandkit run -d` that started us: one JSON line saying whether the
container started ({"ok": true} or {"error": ..., "code": ...}), then EOF.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anyio
import attrs

from .. import errors
from ..aio import AsyncContainer, AsyncInput, AsyncOutput, AsyncProcess
from ..runtime.container import start_health_checks
from ..runtime.service import stop_signal
from . import control, exitcodes, state
from .attach import OUTPUT_GRACE
from .control import LOG_HEADER, STOP_TIMEOUT
from .spec import RunSpec

_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A client says what it wants at once: one that connects and says nothing holds an fd here,
# and is dropped after this many seconds.
REQUEST_TIMEOUT = 10.0
# How long accepting pauses when the supervisor is out of fds (until clients go).
ACCEPT_BACKOFF = 0.1


@attrs.define(eq=False)
class Supervisor:
    """Serves one detached container until its main process ends: writes that process's output
    to the log, answers ``exec``, ``stop``, ``kill``, ``open``, ``connect`` and ``disconnect``
    requests on its socket, and stops the container when it is sent SIGTERM, SIGINT or SIGHUP."""

    record: state.Record
    container: AsyncContainer
    main: AsyncProcess
    stop_signal: int
    main_exited: anyio.Event = attrs.field(factory=anyio.Event)
    stopping: bool = False
    # The aliases the container has on each network it is on, by network name.
    aliases: dict[str, list[str]] = attrs.field(factory=dict)

    async def run(self, listener: socket.socket) -> int:
        """Serve until the main process ends; its return code."""
        async with anyio.create_task_group() as services:
            services.start_soon(self._serve, listener, services)
            services.start_soon(self._stop_on_signals, services)
            log_fd = os.open(
                self.record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
            try:
                async with anyio.create_task_group() as logs:
                    logs.start_soon(_log_stream, self.main.stdout, 1, log_fd)
                    if self.main.stderr is not None:
                        logs.start_soon(_log_stream, self.main.stderr, 2, log_fd)
                    returncode = await self.main.wait()
                    self.main_exited.set()
                    # As in Docker: the container ends with its main process.
                    await self.container.stop()
                    logs.cancel_scope.deadline = anyio.current_time() + OUTPUT_GRACE
            finally:
                os.close(log_fd)
            services.cancel_scope.cancel()
        return returncode

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
        for fd in fds:  # clients send none; never keep what we did not ask for
            os.close(fd)
        if request is None:
            return
        op = request.get("op")
        if op == "ping":
            await control.send(conn, {"ok": True, "pid": self.main.pid})
        elif op == "kill":
            await self._kill(int(request.get("signal", signal.SIGKILL)))
            await control.send(conn, {"ok": True})
        elif op == "stop":
            # In the services group, so that it goes on after the client hangs up; the
            # client waits for this supervisor to exit.
            services.start_soon(self.stop, float(request.get("timeout", STOP_TIMEOUT)))
        elif op == "exec":
            await self._exec(conn, request, services)
        elif op == "open":
            await self._open_for_copy(conn, request)
        elif op in ("connect", "disconnect"):
            await self._change_networks(conn, request)
        else:
            await control.send(
                conn, {"error": f"unknown request {op!r}", "code": exitcodes.SANDKIT_FAILED}
            )

    async def _open_for_copy(self, conn: socket.socket, request: dict[str, Any]) -> None:
        """`sandkit cp`: an fd of the container, resolved in its root by the init, and the
        container's id maps; the client walks or writes below it (copy.py)."""
        from ._runtime import copy_side, open_for_copy

        try:
            fd = await open_for_copy(self.container, str(request["path"]), str(request["mode"]))
        except OSError as exc:
            await control.send(conn, {"error": exc.strerror or str(exc), "errno": exc.errno})
            return
        try:
            ids = copy_side(self.container, anyio.from_thread.run).ids
            await control.send(conn, {"ok": True, "uids": ids.uids, "gids": ids.gids}, [fd])
        finally:
            os.close(fd)

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
        await self._kill(self.stop_signal)
        with anyio.move_on_after(timeout):
            await self.main_exited.wait()
        if not self.main_exited.is_set():
            await self._kill(signal.SIGKILL)

    async def _kill(self, signum: int) -> None:
        if self.main_exited.is_set():
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
            conn, {"ok": True, "streams": [n for n, _ in named]}, [s.fd for _, s in named]
        )
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        try:
            async with anyio.create_task_group() as session:
                session.start_soon(_forward_client_signals, conn, process)
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


async def _forward_client_signals(conn: socket.socket, process: AsyncProcess) -> None:
    while True:
        message, fds = await control.receive(conn)
        for fd in fds:
            os.close(fd)
        if message is None:
            return  # the client left (docker exec's process also keeps running then)
        if message.get("op") == "signal":
            try:
                await process.send_signal(int(message["signal"]))
            except (errors.SandkitError, KeyError, ValueError):
                pass


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
    readiness (or the error) on ``ready_fd`` to ``sandkit run -d``, serve it until its main
    process ends, and record how it ended (with ``--rm``, remove its state instead)."""
    record = state.load(directory)
    spec = RunSpec.from_json(record.config["spec"])
    state.write_state(
        directory,
        status="created",
        supervisor_pid=os.getpid(),
        supervisor_start=state.process_start_time(os.getpid()),
    )
    listener = control.listen(record.socket_path)
    try:
        image = spec.resolve_image()
        container = spec.container(image, hostname=record.id[:12])
        container.id = record.id  # the keeper lists it by the id `sandkit` shows
        async with container:
            main = await container.spawn(
                record.config["command"], stdin=spec.interactive, tty=spec.tty
            )
            # Health checks (issue 18 item 2) run while the main process does.
            start_health_checks(
                container, lambda health: state.write_health(directory, health.to_docker())
            )
            aliases = {name: list(spec.options.get("aliases", ())) for name in container.networks}
            state.write_state(
                directory,
                status="running",
                started_at=time.time(),
                pid=main.pid,
                ports=published(container),
                networks=network_settings(container, aliases),
            )
            _report(ready_fd, {"ok": True})
            ready_fd = -1
            supervisor = Supervisor(record, container, main, stop_signal(image), aliases=aliases)
            returncode = await supervisor.run(listener)
        state.write_state(
            directory,
            status="exited",
            finished_at=time.time(),
            exit_code=exitcodes.from_returncode(returncode),
        )
    except errors.SandkitError as exc:
        if ready_fd < 0:
            raise
        _report(ready_fd, {"error": str(exc), "code": exitcodes.for_error(exc)})
    finally:
        listener.close()
        # One unlink of a local socket file: quick; an await in this `finally` would need a cancel shield.
        Path(record.socket_path).unlink(missing_ok=True)  # noqa: ASYNC240
    if spec.remove:
        state.remove(record)


def main(argv: list[str]) -> int:
    """The supervisor process's entry point: ``argv`` is the state directory and the fd to report
    readiness on. Returns 0, or 1 after recording what ended it."""
    directory, ready_fd = Path(argv[0]), int(argv[1])
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
