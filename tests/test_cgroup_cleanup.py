"""A process that used containers with limits leaves no cgroup directory behind when it exits,
and the next process removes the empty ones a killed process left (never a busy one)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandkit.runtime import cgroups

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="real cgroups need root here"),
]

# A pid above the kernel's largest pid_max (2^22): no process has it, now or later.
_DEAD_TAG = f"{(1 << 22) + 12345}-1"

# A limited and an unlimited container, with spares made in the background as a user gets them.
_USER_PROGRAM = textwrap.dedent("""
    import os, sys, time
    import sandkit
    from sandkit.runtime import prespawn

    image = sandkit.Image.from_directory(sys.argv[1])
    for _ in range(2):  # the second round starts from the spares the first one left
        with sandkit.Container(image, memory="256m", pids_limit=100) as c:
            c.exec(["true"])
        with sandkit.Container(image) as c:
            c.exec(["true"])
    deadline = time.monotonic() + 10
    while len(prespawn.spares()) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    print(os.getpid(), len(prespawn.spares()))
""")


def _sandkit_dirs() -> list[Path]:
    host = cgroups.host()
    if not host.usable:
        pytest.skip(f"no usable cgroups here: {host.why_not}")
    return [Path(parent, host.name) for parent in sorted(set(host.parents.values()))]


def _run_user_program(busybox_dir: Path) -> tuple[int, int]:
    env = {**os.environ, "SANDKIT_PRESPAWN": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _USER_PROGRAM, str(busybox_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pid, spares = done.stdout.split()
    return int(pid), int(spares)


def _dirs_of(pid: int) -> list[Path]:
    return [tag for top in _sandkit_dirs() for tag in top.glob(f"{pid}-*")]


def test_nothing_stays_after_a_normal_exit(busybox_dir):
    pid, spares = _run_user_program(busybox_dir)
    assert spares == 2  # the limited container's spare had its cgroup made and limited
    assert _dirs_of(pid) == []


def test_empty_cgroups_of_dead_processes_are_removed_at_the_next_start(busybox_dir):
    stale = [top / _DEAD_TAG / "spare-0123456789abcdef" for top in _sandkit_dirs()]
    for path in stale:
        path.mkdir(parents=True)
    try:
        _run_user_program(busybox_dir)
        assert [p for p in stale if p.parent.exists()] == []
    finally:
        for path in stale:
            for leftover in (path, path.parent):
                if leftover.exists():
                    leftover.rmdir()


def test_a_stale_cgroup_that_holds_a_process_is_left_alone(busybox_dir):
    top = _sandkit_dirs()[0]
    busy = top / _DEAD_TAG / "c"
    busy.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        (busy / "cgroup.procs").write_text(str(sleeper.pid))
        _run_user_program(busybox_dir)
        assert busy.is_dir() and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            cgroups._fs.remove_tree(top_fd, _DEAD_TAG)
        finally:
            os.close(top_fd)
