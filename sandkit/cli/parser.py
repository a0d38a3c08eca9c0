"""argparse, shaped like Docker's command line: usage errors exit 125 with Docker's hint."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from . import exitcodes


class DockerArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes look like Docker's and exit 125, not argparse's 2.

    Sub-commands inherit the class (argparse makes sub-parsers of the parent's type), so every
    command of the program behaves the same, including those other modules add.
    """

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        print(f"See '{self.prog} --help'.", file=sys.stderr)
        sys.exit(exitcodes.SANDKIT_FAILED)


Subparsers = Any  # argparse._SubParsersAction is private; this alias keeps signatures readable


def command_with_remainder(parser: argparse.ArgumentParser, first: str, first_help: str) -> None:
    """`IMAGE [COMMAND] [ARG...]` (or `CONTAINER COMMAND [ARG...]`): everything after the first
    positional belongs to the command, flags included, as in Docker."""
    parser.add_argument(first, metavar=first.upper(), help=first_help)
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND [ARG...]",
        help="command to run and its arguments",
    )
