"""`sandkit doctor` and `sandkit version`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from . import exitcodes
from .parser import Subparsers


def add_system_commands(commands: Subparsers) -> None:
    """Add ``doctor`` and ``version`` to the parser."""
    p = commands.add_parser(
        "doctor",
        help="check what this host supports, and what to fix",
        description="Check this host for everything sandkit needs (root and "
        "rootless), and say what to change. Exits 1 when something essential is missing.",
    )
    p.set_defaults(func=cmd_doctor)

    p = commands.add_parser("version", help="show the sandkit version information")
    p.add_argument("-f", "--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_version)


def cmd_doctor(args: argparse.Namespace) -> int:
    """``sandkit doctor``: print what this host supports and how to fix what it lacks; exits 1
    when something essential is missing."""
    from ..doctor import doctor

    report = doctor()
    print(report.render())
    return exitcodes.OK if report.ok else exitcodes.FAILED


def version_info() -> dict[str, str]:
    """The fields ``sandkit version`` shows: sandkit's and Python's versions, OS, architecture,
    kernel, and root or rootless mode."""
    from .. import __version__

    return {
        "Version": __version__,
        "PythonVersion": platform.python_version(),
        "Os": sys.platform,
        "Arch": platform.machine(),
        "KernelVersion": platform.release(),
        "Mode": "root" if os.geteuid() == 0 else "rootless",
    }


def cmd_version(args: argparse.Namespace) -> int:
    """``sandkit version``: print `version_info` as text, or as JSON with ``--format json``."""
    info = version_info()
    if args.format == "json":
        print(json.dumps(info))
        return exitcodes.OK
    print("Client: sandkit (no daemon: containers run in this process)")
    labels = {
        "Version": "Version",
        "PythonVersion": "Python version",
        "Os": "OS/Arch",
        "KernelVersion": "Kernel version",
        "Mode": "Mode",
    }
    for key, label in labels.items():
        value = f"{info['Os']}/{info['Arch']}" if key == "Os" else info[key]
        print(f" {label + ':':<16}{value}")
    return exitcodes.OK
