"""`sandkit`, a docker-style command line: `sandkit run [--rm] IMAGE [CMD...]` and friends."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from . import errors
from .images.image import Image
from .runtime.container import AsyncContainer
from .runtime.mounts import Mount

# Docker's exit codes for failures of the tool itself rather than of the command.
EXIT_SANDKIT_FAILED = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandkit",
        description="Run OCI/Docker images as isolated Linux containers, without a daemon.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_run(commands)
    return parser


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run a command in a new container",
        description="Run a command in a new container and exit with its exit code. Containers "
        "run in the foreground only: a container lives as long as the sandkit process that runs it.",
    )
    run.add_argument("--rm", action="store_true", help="accepted for Docker compatibility: containers are always removed when they exit")
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin open and pass it to the command")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="set an environment variable")
    run.add_argument("-w", "--workdir", help="working directory inside the container")
    run.add_argument("-u", "--user", help="user[:group] or uid[:gid] to run as")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="bind-mount a host path")
    run.add_argument("--hostname", help="container host name")
    run.add_argument("--network", default="none", choices=("none", "host"), help="'none' (loopback only, default) or 'host' (not isolated)")
    run.add_argument("--read-only", action="store_true", help="mount the container's root filesystem read-only")
    run.add_argument("image", help="'host', a directory holding a root filesystem, or an image reference")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="command and arguments")
    run.set_defaults(handler=_run)


def _parse_env(entries: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep:
            value = os.environ.get(key, "")  # `-e NAME` passes the caller's value, as in Docker
        env[key] = value
    return env


def _image_argument(name: str) -> Image | str:
    if name != "host" and (name.startswith(("/", ".")) or os.path.isdir(name)):
        return Image.from_directory(name)
    return name


def _command_for(args: argparse.Namespace, image: Image | str) -> list[str]:
    config = image.config if isinstance(image, Image) else None
    entrypoint = list(config.entrypoint or ()) if config else []
    cmd = list(args.cmd) or (list(config.cmd or ()) if config else [])
    argv = entrypoint + cmd
    if not argv:
        raise errors.ExecStartError("no command given and the image has no default command: add one after the image name")
    return argv


async def _run(args: argparse.Namespace) -> int:
    image = _image_argument(args.image)
    container = AsyncContainer(
        image,
        env=_parse_env(args.env),
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        mounts=[Mount.parse(v) for v in args.volume],
        read_only=args.read_only,
        network=args.network,
    )
    async with container:
        argv = _command_for(args, container._resolved or image)
        process = await container.spawn(argv, stdin=args.interactive)
        async with process, anyio.create_task_group() as tasks:
            if process.stdin is not None:
                tasks.start_soon(_pump_stdin, process)
            tasks.start_soon(_pump_output, process.stdout, sys.stdout.buffer)
            tasks.start_soon(_pump_output, process.stderr, sys.stderr.buffer)
            code = await process.wait()
    return 128 - code if code < 0 else code


async def _pump_output(stream, sink) -> None:  # type: ignore[no-untyped-def]
    if stream is None:
        return
    async for chunk in stream:
        sink.write(chunk)
        sink.flush()


async def _pump_stdin(process) -> None:  # type: ignore[no-untyped-def]
    from .runtime.process import AsyncOutput, set_nonblocking

    fd = os.dup(sys.stdin.fileno())
    set_nonblocking(fd)
    source = AsyncOutput(fd)
    try:
        async for chunk in source:
            await process.stdin.write(chunk)
    except BrokenPipeError:
        pass
    finally:
        source.close()
        process.stdin.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return anyio.run(args.handler, args, backend="trio")
    except errors.CommandNotFoundError as exc:
        print(f"sandkit: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except errors.ExecStartError as exc:
        print(f"sandkit: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except errors.SandkitError as exc:
        print(f"sandkit: {exc}", file=sys.stderr)
        return EXIT_SANDKIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
