"""Commands on detached containers: ps, exec, logs, stop, kill, rm (and container inspect).

They find a container through its state directory (see `state`) and talk to its supervisor over
its control socket (see `supervisor`). Errors read and exit like Docker's: "Error: ..." and 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio

from .. import errors
from ..detached import client, control, launch, state
from ..detached.control import LOG_HEADER, STOP_TIMEOUT
from . import attach, exitcodes, output
from .options import add_process_options, environment
from .parser import Subparsers, command_with_remainder


def add_container_commands(commands: Subparsers) -> None:
    """Add ``ps``, ``exec``, ``logs``, ``stop``, ``start``, ``kill`` and ``rm``, the commands on detached
    containers, to the parser."""
    p = commands.add_parser(
        "ps",
        help="list containers",
        description="List detached containers "
        "(those started with `run -d`); -a includes stopped ones.",
    )
    p.add_argument(
        "-a", "--all", action="store_true", help="show all containers, not just running ones"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table, or one JSON object per line",
    )
    p.set_defaults(func=cmd_ps)

    p = commands.add_parser(
        "exec",
        help="run a command in a running container",
        description="Run a command in a running (detached) container.",
    )
    add_process_options(p)
    command_with_remainder(p, "container", "container name or ID")
    p.set_defaults(func=cmd_exec)

    p = commands.add_parser(
        "logs",
        help="fetch the logs of a container",
        description="Print what a detached container's main process wrote.",
    )
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument(
        "-n", "--tail", default="all", help="number of lines to show from the end (default all)"
    )
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)

    p = commands.add_parser(
        "stop",
        help="stop running containers",
        description="Send the stop signal (SIGTERM or the image's StopSignal), "
        "then SIGKILL after the timeout.",
    )
    p.add_argument(
        "-t", "--time", type=float, default=STOP_TIMEOUT, help="seconds to wait before killing"
    )
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_stop)

    p = commands.add_parser(
        "start",
        help="start one or more stopped containers",
        description="Start containers made by `sandkit create` (again, after a stop).",
    )
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_start)

    p = commands.add_parser("kill", help="kill running containers")
    p.add_argument(
        "-s", "--signal", default="KILL", help="signal to send (name or number, default KILL)"
    )
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_kill)

    p = commands.add_parser(
        "port",
        help="list port mappings or a specific mapping for the container",
        description="Where a running container's published ports are on the host.",
    )
    p.add_argument("container")
    p.add_argument("port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=cmd_port)

    p = commands.add_parser("rm", help="remove stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="kill and remove a running container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_rm)


def _each(refs: list[str], action: Any) -> int:
    """Docker's multi-container commands: act on each, print it, report errors, exit 1 if any."""
    code = exitcodes.OK
    for ref in refs:
        try:
            action(state.find(ref))
            print(ref)
        except errors.SandkitError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = exitcodes.FAILED
    return code


# --- ps -------------------------------------------------------------------------------------------


def cmd_ps(args: argparse.Namespace) -> int:
    """``sandkit ps``: list detached containers (``-a``: stopped ones too), as a table, ids
    (``-q``) or JSON lines."""
    shown = [r for r in state.records() if args.all or r.running]
    if args.quiet:
        for record in shown:
            print(record.id if args.no_trunc else record.id[:12])
        return exitcodes.OK
    rows = [_ps_row(r, args.no_trunc) for r in shown]
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
        return exitcodes.OK
    headers = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")
    keys = ("ID", "Image", "Command", "RunningFor", "Status", "Names")
    output.print_table(headers, [[row[k] for k in keys] for row in rows])
    return exitcodes.OK


def _ps_row(record: state.Record, no_trunc: bool) -> dict[str, str]:
    now = time.time()
    command = shlex.join(record.command)
    return {
        "ID": record.id if no_trunc else record.id[:12],
        "Image": str(record.config.get("image", "")),
        "Command": json.dumps(
            command if no_trunc else output.truncate(command, 20), ensure_ascii=False
        ),
        "CreatedAt": _iso(record.config.get("created")),
        "RunningFor": output.human_duration(now - record.config.get("created", now)) + " ago",
        "Status": _status_text(record, now),
        "State": record.status,
        "Names": record.name,
    }


def _status_text(record: state.Record, now: float) -> str:
    if record.status == "running":
        up = "Up " + output.human_duration(now - record.state.get("started_at", now))
        health = record.health
        if health is None:
            return up
        # Docker's State.String(): "(health: starting)", "(healthy)", "(unhealthy)".
        status = health.get("Status")
        return f"{up} (health: starting)" if status == "starting" else f"{up} ({status})"
    if record.status == "created":
        return "Created"
    code = record.exit_code
    ago = output.human_duration(now - record.state.get("finished_at", now)) + " ago"
    return f"Exited ({code if code is not None else 'unknown'}) {ago}"


def _iso(timestamp: float | None) -> str:
    if not timestamp:
        return "0001-01-01T00:00:00Z"
    return (
        datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")
    )


def inspect_record(record: state.Record) -> dict[str, Any]:
    """A container as `docker inspect` shows one, for the fields sandkit has."""
    spec = record.config.get("spec", {})
    command = record.command
    return {
        "Id": record.id,
        "Created": _iso(record.config.get("created")),
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": {
            "Status": record.status,
            "Running": record.running,
            "Pid": record.state.get("pid", 0) if record.running else 0,
            "ExitCode": record.exit_code if record.exit_code is not None else -1,
            "Error": record.state.get("error", ""),
            "StartedAt": _iso(record.state.get("started_at")),
            "FinishedAt": _iso(record.state.get("finished_at")),
            **({"Health": record.health} if record.health is not None else {}),
        },
        "Image": record.config.get("image", ""),
        "Name": "/" + record.name,
        "LogPath": str(record.log_path),
        "Config": {
            "Hostname": spec.get("hostname") or record.id[:12],
            "User": spec.get("user") or "",
            "Env": [f"{k}={v}" for k, v in spec.get("env", {}).items()],
            "Cmd": spec.get("command"),
            "Entrypoint": spec.get("entrypoint"),
            "WorkingDir": spec.get("workdir") or "",
            "Image": record.config.get("image", ""),
            "Tty": spec.get("tty", False),
            "OpenStdin": spec.get("interactive", False),
        },
        "HostConfig": {
            "AutoRemove": spec.get("remove", False),
            "NetworkMode": spec.get("network", "none"),
            "ReadonlyRootfs": spec.get("read_only", False),
            "Mounts": spec.get("mounts", []),
            "CapAdd": spec.get("cap_add", []),
            "CapDrop": spec.get("cap_drop", []),
        },
        "NetworkSettings": {"Networks": _networks(record)},
    }


def _networks(record: state.Record) -> dict[str, dict[str, Any]]:
    """Docker's ``NetworkSettings.Networks``: each network the container is on, as its
    supervisor recorded them (following connect and disconnect); once it has stopped, as
    Docker keeps them: the networks and aliases without an address."""
    networks: dict[str, dict[str, Any]] = record.state.get("networks", {})
    if record.running:
        return networks
    return {
        name: {**entry, "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""}
        for name, entry in networks.items()
    }


# --- port -----------------------------------------------------------------------------------------


def cmd_port(args: argparse.Namespace) -> int:
    """Docker's format: "80/tcp -> 127.0.0.1:49153", or for one port its host addresses alone."""
    from ._runtime import container_side

    record = state.find(args.container)
    published = record.state.get("ports", []) if record.running else []
    if args.port is None:
        for entry in published:
            print(f"{entry['port']} -> {_host_address(entry)}")
        return exitcodes.OK
    number, proto = container_side(args.port, args.port)
    wanted = f"{number}/{proto}"
    found = [_host_address(e) for e in published if e["port"] == wanted]
    if not found:
        # (the port as given, as Docker says it: '81', not '81/tcp')
        raise errors.ContainerError(f"No public port '{args.port}' published for {args.container}")
    for address in found:
        print(address)
    return exitcodes.OK


def _host_address(entry: dict[str, Any]) -> str:
    ip = entry["host_ip"]
    return f"[{ip}]:{entry['host_port']}" if ":" in ip else f"{ip}:{entry['host_port']}"


# --- exec -----------------------------------------------------------------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    """``sandkit exec``: run a command in a running detached container, through its supervisor;
    returns the command's exit code."""
    if not args.command:
        raise errors.ExecStartError("exec needs a command: sandkit exec CONTAINER COMMAND [ARG...]")
    if args.interactive and args.tty and not attach.stdin_is_terminal():
        print("the input device is not a TTY", file=sys.stderr)
        return exitcodes.FAILED
    record = client.running(state.find(args.container))
    rows, cols = attach.terminal_size()
    request = {
        "op": "exec",
        "argv": list(args.command),
        "env": environment(args.env_file, args.env),
        "workdir": args.workdir,
        "user": args.user,
        "interactive": args.interactive,
        "tty": args.tty,
        "rows": rows,
        "cols": cols,
        "detach": args.detach,
    }
    return anyio.run(_exec, record, request, backend="trio")


async def _exec(record: state.Record, request: dict[str, Any]) -> int:
    with await client.connect(record) as sock:
        await control.send(sock, request)
        reply, fds = await control.receive(sock)
        if reply is None or "error" in reply:
            for fd in fds:
                os.close(fd)
            message = reply["error"] if reply else f"container {record.name} stopped"
            print(f"Error: {message}", file=sys.stderr)
            return (
                int(reply.get("code", exitcodes.SANDKIT_FAILED))
                if reply
                else exitcodes.SANDKIT_FAILED
            )
        if request["detach"]:
            return exitcodes.OK
        streams = _streams(dict(zip(reply["streams"], fds, strict=False)), request["interactive"])

        async def wait() -> int:
            while True:
                message, extra = await control.receive(sock)
                for fd in extra:
                    os.close(fd)
                if message is None:  # the supervisor went away: the container was stopped
                    return -signal.SIGKILL
                if "exit" in message:
                    return int(message["exit"])

        async def forward(signum: int) -> None:
            await control.send(sock, {"op": "signal", "signal": signum})

        returncode = await attach.attach(streams, wait=wait, forward_signal=forward)
    return exitcodes.from_returncode(returncode)


def _streams(fds: dict[str, int], interactive: bool) -> attach.Streams:
    from ._runtime import process_streams

    stdin, stdout, stderr = process_streams(fds, interactive)
    assert stdout is not None
    return attach.Streams(stdin=stdin, stdout=stdout, stderr=stderr, tty="pty" in fds)


# --- logs -----------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    """``sandkit logs``: print what a detached container's main process wrote (``--tail``: its
    last lines; ``-f``: then follow it until the container ends)."""
    record = state.find(args.container)
    tail = None if args.tail == "all" else _int_arg(args.tail, "--tail")
    if (record.config.get("options") or {}).get("run") and record.running:
        # (``detach=True, run=``: the container keeps its main process's output, in its ring)
        try:
            anyio.run(_print_ring, record, args.follow, tail, backend="trio")
        except KeyboardInterrupt:
            pass
        return exitcodes.OK
    try:
        with open(record.log_path, "rb") as log:
            frames = list(_frames(log, follow=False, record=record))
            _print_frames(_last_lines(frames, tail) if tail is not None else frames)
            if args.follow:
                _print_frames(_frames(log, follow=True, record=record))
    except FileNotFoundError:
        pass  # nothing written yet
    except KeyboardInterrupt:
        pass  # Ctrl-C ends `logs -f`, as in Docker
    return exitcodes.OK


async def _print_ring(record: state.Record, follow: bool, tail: int | None) -> None:
    """The output of a main process the container runs itself, asked of its supervisor:
    stdout to stdout, stderr to stderr (two requests, as the ring keeps them apart)."""

    async def copy(stdout: bool, out: Any) -> None:
        wanted = {"op": "logs", "follow": follow, "stdout": stdout, "stderr": not stdout}
        async for chunk in client.log_chunks(record, {**wanted, "tail": tail}):
            out.write(chunk)
            out.flush()

    async with anyio.create_task_group() as streams:
        streams.start_soon(copy, True, sys.stdout.buffer)
        streams.start_soon(copy, False, sys.stderr.buffer)


def _frames(log: Any, *, follow: bool, record: state.Record) -> Iterator[tuple[int, bytes]]:
    """(stream, data) frames from the log; with ``follow``, wait for more while it runs."""
    pending = b""
    while True:
        data = log.read(65536)
        if data:
            pending += data
            while len(pending) >= LOG_HEADER.size:
                stream, size = LOG_HEADER.unpack_from(pending)
                if len(pending) < LOG_HEADER.size + size:
                    break  # the rest of this frame is still being written
                yield stream, pending[LOG_HEADER.size : LOG_HEADER.size + size]
                pending = pending[LOG_HEADER.size + size :]
            continue
        if not follow or not state.supervisor_alive(record.state):
            return
        time.sleep(0.1)


def _last_lines(frames: list[tuple[int, bytes]], count: int) -> list[tuple[int, bytes]]:
    lines: list[tuple[int, bytes]] = []
    for stream, data in frames:
        for piece in data.splitlines(keepends=True):
            if lines and lines[-1][0] == stream and not lines[-1][1].endswith(b"\n"):
                lines[-1] = (stream, lines[-1][1] + piece)  # a line split across two writes
            else:
                lines.append((stream, piece))
    return lines[-count:] if count > 0 else []


def _print_frames(frames: Any) -> None:
    for stream, data in frames:
        out = sys.stdout.buffer if stream == 1 else sys.stderr.buffer
        out.write(data)
        out.flush()


# --- stop, kill, rm -------------------------------------------------------------------------------


def cmd_stop(args: argparse.Namespace) -> int:
    """``sandkit stop``: stop each named container (its image's stop signal, then SIGKILL to
    everything after ``-t`` seconds); a stopped one is not an error."""
    return _each(args.containers, lambda record: client.stop(record, args.time))


def cmd_start(args: argparse.Namespace) -> int:
    """``sandkit start``: start each named stopped container made by `create` (a running one
    is left alone), with the writable layer it kept."""
    return _each(args.containers, _start_again)


def _start_again(record: state.Record) -> None:
    if record.running:
        return
    if not record.config.get("options", {}).get("persist"):
        raise errors.ContainerError(
            f"container {record.name} has no writable layer to start again with (`run -d` keeps "
            "it in memory): make one with `sandkit create`, or `sandkit run` a new one"
        )
    launch.restart_supervisor(record)


def cmd_kill(args: argparse.Namespace) -> int:
    """``sandkit kill``: send ``-s`` to the main process of each named running container
    (SIGKILL, the default, kills everything in it)."""
    signum = _signal_number(args.signal)
    return _each(args.containers, lambda record: client.kill(record, signum))


def cmd_rm(args: argparse.Namespace) -> int:
    """``sandkit rm``: remove each named stopped container's state; ``-f`` kills a running one
    first."""
    from ._runtime import remove_detached

    return _each(args.containers, lambda record: remove_detached(record, force=args.force))


def ask_supervisor(ref: str, message: dict[str, Any]) -> None:
    """Send ``message`` to the supervisor of running container ``ref`` and wait for its
    answer: `ContainerError` with its refusal (`NoSuchContainerError`, `ContainerNotRunning`)."""
    record = client.running(state.find(ref))
    if anyio.run(client.request, record, message, True, backend="trio") is None:
        # (a kill may go unanswered: the container ends with it; a change of it may not)
        raise errors.ContainerError(
            f"container {record.id[:12]} did not answer the {message.get('op')} request: it "
            f"stopped meanwhile, or its supervisor failed (see {record.dir / 'supervisor.log'})"
        )


def _signal_number(name: str) -> int:
    try:
        if name.isdigit():
            return int(signal.Signals(int(name)))
        return int(signal.Signals["SIG" + name.upper().removeprefix("SIG")])
    except (KeyError, ValueError):
        raise errors.SandkitError(f"invalid signal: {name}") from None


def _int_arg(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise errors.SandkitError(
            f"invalid value for {flag}: {value!r} (a number, or 'all')"
        ) from None
