"""`sandkit run`: a command in a new container, in the foreground or detached (-d)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import anyio

from .. import errors
from ..detached import launch, state
from . import attach, exitcodes
from .options import add_container_options, add_process_options
from .parser import Subparsers, command_with_remainder

if TYPE_CHECKING:
    from ..images.image import Image
    from .spec import RunSpec

DESCRIPTION = """\
Run a command in a new container and exit with its exit code (125: sandkit failed, 126: the
command cannot be run, 127: it was not found, 128+N: it was killed by signal N).

IMAGE is an image in the local store (see `sandkit images`, `sandkit load`, `sandkit pull`), a
directory holding a root filesystem, or 'host' (the host's own root filesystem).

Without -d the container lives exactly as long as this command. With -d it is kept by a small
supervisor process of its own, and `sandkit ps`, `exec`, `logs`, `stop`, `kill` and `rm` reach it;
if that supervisor is killed, the container is stopped with it, never left running unreachable.
"""


def add_run_command(commands: Subparsers) -> None:
    """Add ``run`` and ``create`` (its flags, Docker's) to the parser."""
    p = commands.add_parser(
        "run",
        help="run a command in a new container",
        description=DESCRIPTION,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_process_options(p)
    add_container_options(p)
    command_with_remainder(p, "image", "image reference, root filesystem directory, or 'host'")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "create",
        help="create a new container, to be started with `sandkit start`",
        description="Create a detached container whose writable layer is kept on disk: "
        "`sandkit start` runs it, `stop` and `start` again keep its files, `rm` deletes them.",
        add_help=False,
    )
    add_process_options(p)
    add_container_options(p)
    command_with_remainder(p, "image", "image reference or root filesystem directory")
    p.set_defaults(func=cmd_create, detach=True)


def cmd_run(args: argparse.Namespace) -> int:
    """``sandkit run``: check the image, the command and the options, then run the container in
    the foreground (returns the command's exit code) or hand it to a supervisor with ``-d``."""
    from .spec import RunSpec

    spec = RunSpec.from_args(args)
    if spec.interactive and spec.tty and not args.detach and not attach.stdin_is_terminal():
        print("the input device is not a TTY", file=sys.stderr)
        return exitcodes.FAILED
    # Everything that can be checked is, before anything starts: the image, the command, and the
    # container's options (building the container object validates limits, caps, seccomp).
    image = spec.resolve_image()
    argv = spec.argv(image)
    spec.container(image)
    if args.detach:
        return start_detached(spec, image, argv)
    return anyio.run(run_foreground, spec, image, argv, backend="trio")


async def run_foreground(spec: RunSpec, image: object, argv: list[str]) -> int:
    """Run ``argv`` in a container made from ``spec`` and ``image``, attached to this terminal or
    these pipes, and stop the container when it ends; returns the exit code as Docker reports it."""
    rows, cols = attach.terminal_size()
    async with spec.container(image) as container:  # type: ignore[arg-type]
        process = await container.spawn(
            argv, stdin=spec.interactive, tty=spec.tty, rows=rows, cols=cols
        )
        async with process:
            assert process.stdout is not None  # spawn() always gives stdout (or the pty master)
            streams = attach.Streams(
                stdin=process.stdin if spec.interactive else None,
                stdout=process.stdout,
                stderr=process.stderr,
                tty=spec.tty,
            )
            returncode = await attach.attach(
                streams,
                wait=process.wait,
                forward_signal=process.send_signal,
                after_exit=container.stop,
            )
    return exitcodes.from_returncode(returncode)


def _detached_config(
    spec: RunSpec, image: Image | str, argv: list[str], *, persist: bool = False
) -> dict[str, Any]:
    """What a detached container's supervisor starts (supervisor.py), as JSON."""
    from ._runtime import handover

    options = dict(spec.container_options(image))
    if persist:
        options["persist"] = True
    return {
        "spec": spec.to_json(),  # for `sandkit inspect`
        "image": spec.image,  # as given, for `sandkit ps`
        "source": spec.image_source(),
        "options": handover.options_to_json(options),
        "command": argv,
        "main": {"argv": argv, "stdin": spec.interactive, "tty": spec.tty},
        "remove": spec.remove,
    }


def cmd_create(args: argparse.Namespace) -> int:
    """``sandkit create``: check everything `run` checks, record the container (persistent
    writable layer) without starting it; print its id."""
    from .spec import RunSpec

    spec = RunSpec.from_args(args)
    image = spec.resolve_image()
    argv = spec.argv(image)
    spec.container(image)
    record = state.create(_detached_config(spec, image, argv, persist=True), spec.name)
    state.write_state(record.dir, status="created")
    print(record.id)
    return exitcodes.OK


def start_detached(spec: RunSpec, image: Image | str, argv: list[str]) -> int:
    """Hand the container to a supervisor of its own; print its id once it runs."""
    config = _detached_config(spec, image, argv)
    try:
        record = launch.start_supervisor(config, spec.name)
    except errors.NameInUseError:
        raise
    except errors.SandkitError as exc:
        print(f"sandkit: {exc}", file=sys.stderr)
        return exitcodes.for_error(exc)
    print(record.id)
    return exitcodes.OK
