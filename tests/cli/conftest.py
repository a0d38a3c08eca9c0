"""Helpers for driving the `sandkit` command line as a user would: a separate process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proctable import descendants

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def private_docker(request) -> Iterator[dict[str, str]]:
    """The environment of a private dockerd (tests/dockerd.py) for one module's parity tests;
    they are skipped where there is none."""
    import dockerd

    try:
        with dockerd.private_dockerd() as daemon:
            yield daemon.env
    except dockerd.DockerUnavailable as e:
        pytest.skip(f"{request.module.__name__}: {e}")


def sandkit_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sandkit(
    *argv: str, input: bytes | None = None, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m sandkit ARGV...` with its output captured (so: not on a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "sandkit", *argv],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=sandkit_env() | (env or {}),
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@contextlib.contextmanager
def held(argv: list[str], env: dict[str, str], script: str = "") -> Iterator[tuple[int, list[str]]]:
    """Runs `ARGV sh -c SCRIPT` (a `run -i` command line of either tool) with the command kept
    running after the script, until the block ends; yields the pid of ARGV's process and the
    lines the script printed."""
    proc = subprocess.Popen(
        [*argv, "sh", "-c", f"{script}\necho held; read x"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        lines = []
        for line in proc.stdout:
            if line == "held\n":
                break
            lines.append(line.rstrip("\n"))
        else:
            raise AssertionError(
                f"{argv} ended early: {lines} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield proc.pid, lines
    finally:
        proc.communicate("\n", timeout=30)


def init_under(ancestor: int, timeout: float = 10) -> int:
    """The host pid of the sandkit init that `ancestor` (a `sandkit run` process) started."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in descendants(ancestor):
            try:
                if Path(f"/proc/{pid}/comm").read_text() == "sandkit-init\n":
                    return pid
            except OSError:
                pass  # gone meanwhile
        assert time.monotonic() < deadline, f"no sandkit-init under {ancestor}"
        time.sleep(0.01)


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
