"""`sandkit`: a docker-style command line (`sandkit run/ps/exec/images/pull/...`).

One module per group of commands; each adds its sub-parsers and sets ``func``, a function of
the parsed arguments that returns the exit code. Errors that escape a command become Docker's
exit codes here, with the message on stderr.

Keep the command modules' top-level imports light: the container runtime and the HTTP stack are
imported inside the commands that use them (tests/test_lazy_imports.py checks it), so that
`sandkit images` or `sandkit ps` starts in a tenth of a second, not a third.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import errors
from ..detached import state
from . import exitcodes
from .build_command import add_build_command
from .containers import add_container_commands
from .copy_command import add_copy_command
from .images import add_image_and_registry_commands
from .layer_commands import add_layer_commands
from .network_commands import add_network_commands
from .parser import DockerArgumentParser
from .run import add_run_command
from .system import add_system_commands
from .volume_commands import add_volume_commands

# The commands whose failures are the container's own (exit 125/126/127 as `docker run`); the
# others fail with 1, as Docker's management commands do.
_RUN_LIKE = {"run", "exec"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sandkit`` command, with every subcommand (Docker's names and
    flags)."""
    parser = DockerArgumentParser(
        prog="sandkit",
        description="Run OCI/Docker images as isolated Linux containers, without a daemon.",
        epilog="Run 'sandkit COMMAND --help' for more information on a command.",
    )
    parser.add_argument(
        "-v", "--version", action="store_true", help="print version information and quit"
    )
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND", title="commands")
    add_run_command(commands)
    add_container_commands(commands)
    add_copy_command(commands)
    add_build_command(commands)
    add_layer_commands(commands)
    add_image_and_registry_commands(commands)
    add_network_commands(commands)
    add_volume_commands(commands)
    add_system_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sandkit`` command line ``argv`` (default: ``sys.argv[1:]``) and return its exit
    code, Docker's: the command's own for ``run``/``exec``, 125 when sandkit failed, 1 for a
    failed management command."""
    # One command, one container: a spare made after it stops would die unused with us.
    os.environ.setdefault("SANDKIT_PRESPAWN", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(f"sandkit version {__version__}")
        return exitcodes.OK
    if args.subcommand is None:
        parser.print_help()
        return exitcodes.OK
    try:
        return int(args.func(args))
    except errors.SandkitError as exc:
        if args.subcommand in _RUN_LIKE and not isinstance(exc, state.LOOKUP_ERRORS):
            print(f"sandkit: {exc}", file=sys.stderr)
            return exitcodes.for_error(exc)
        print(f"Error: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    except KeyboardInterrupt:
        return exitcodes.SIGNAL_BASE + 2
    except BrokenPipeError:
        return exitcodes.OK  # `sandkit images | head`


__all__ = ["build_parser", "main"]
