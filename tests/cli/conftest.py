"""Helpers for driving the `sandkit` command line as a user would: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sandkit_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sandkit(*argv: str, input: bytes | None = None, timeout: float = 30,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m sandkit ARGV...` with its output captured (so: not on a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "sandkit", *argv],
        input=input.decode() if input is not None else None,
        capture_output=True, text=True, timeout=timeout, env=sandkit_env() | (env or {}), check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def run_dir() -> Path:
    return Path(os.environ["SANDKIT_HOME"]) / "run"


def containers_on_disk() -> list[str]:
    if not run_dir().is_dir():
        return []
    return sorted(p.name for p in run_dir().iterdir() if p.name != "names")


@pytest.fixture
def bb(busybox_dir: Path) -> str:
    """The busybox root filesystem, as an IMAGE argument."""
    return str(busybox_dir)
