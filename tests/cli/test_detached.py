"""`run -d` and the commands that reach a detached container afterwards."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from sandkit.detached import state

from .conftest import containers_on_disk, sandkit

pytestmark = pytest.mark.slow

LOOP = (
    "echo started; echo to-stderr >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def detached(bb):
    r = sandkit("run", "-d", "--name", "det", bb, "sh", "-c", LOOP)
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    yield container_id
    sandkit("rm", "-f", container_id)


def test_lifecycle(detached):
    assert len(detached) == 64
    ps = sandkit("ps")
    assert ps.stdout.splitlines()[0].split() == [
        "CONTAINER",
        "ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    assert detached[:12] in ps.stdout and "Up " in ps.stdout and "\x1b" not in ps.stdout
    assert sandkit("ps", "-q").stdout.split() == [detached[:12]]
    row = json.loads(sandkit("ps", "--format", "json").stdout)
    assert (row["Names"], row["State"]) == ("det", "running")

    _wait_for(lambda: "tick 2" in sandkit("logs", "det").stdout)
    logs = sandkit("logs", "det")
    assert logs.stdout.startswith("started\ntick 1\n") and logs.stderr == "to-stderr\n"
    assert sandkit("logs", "--tail", "1", "det").stdout.count("\n") == 1

    r = sandkit(
        "exec", "-e", "X=1", "-w", "/tmp", "det", "sh", "-c", 'echo "$X $(pwd) $(hostname)"; exit 4'
    )
    assert (r.returncode, r.stdout) == (4, f"1 /tmp {detached[:12]}\n")
    assert sandkit("exec", "-i", "det", "cat", input=b"in\n").stdout == "in\n"
    assert sandkit("exec", "det", "nosuch").returncode == 127
    assert sandkit("exec", "-d", "det", "sleep", "0.1").returncode == 0

    assert sandkit("rm", "det").returncode == 1  # running: refused without -f
    assert sandkit("run", "-d", "--name", "det", "/", "true").returncode == 125  # name in use

    started = time.monotonic()
    assert sandkit("stop", "det").stdout == "det\n"
    assert time.monotonic() - started < 5  # SIGTERM ended it; no wait for the 10 s timeout
    inspect = json.loads(sandkit("inspect", "det").stdout)[0]
    assert inspect["State"]["Status"] == "exited" and inspect["State"]["ExitCode"] == 143
    assert "Exited (143)" in sandkit("ps", "-a").stdout
    assert sandkit("exec", "det", "true").returncode == 1
    assert sandkit("rm", "det").returncode == 0
    assert detached not in containers_on_disk()


def test_kill_with_signal(detached):
    assert sandkit("kill", "-s", "USR1", "det").returncode == 0
    _wait_for(lambda: not state.find(detached).running)
    assert state.find(detached).exit_code == 128 + signal.SIGUSR1
    assert sandkit("kill", "det").returncode == 1  # not running any more


def test_killed_supervisor_takes_its_container_along(detached):
    record = state.find(detached)
    init_pids = {p for p in _pids() if _parent(p) and _cmdline(p) == "sh"}
    os.kill(record.state["supervisor_pid"], signal.SIGKILL)
    _wait_for(lambda: not state.find(detached).running)
    assert "Exited (unknown)" in sandkit("ps", "-a").stdout
    _wait_for(lambda: not ({p for p in _pids() if _cmdline(p) == "sh"} & init_pids - {None}))


def test_rm_force_and_auto_remove(bb):
    r = sandkit("run", "-d", "--rm", bb, "sh", "-c", "exit 0")
    container_id = r.stdout.strip()
    _wait_for(lambda: container_id not in containers_on_disk())
    r = sandkit("run", "-d", bb, "sleep", "100")
    assert sandkit("rm", "-f", r.stdout.strip()).returncode == 0
    assert r.stdout.strip() not in containers_on_disk()


def test_failed_start_leaves_nothing(bb):
    before = containers_on_disk()
    assert sandkit("run", "-d", bb, "nosuchcommand").returncode == 127
    assert sandkit("run", "-d", "--name", "bad name!", bb, "true").returncode == 125
    assert containers_on_disk() == before


def test_unknown_container():
    for command in (["logs"], ["stop"], ["kill"], ["rm"], ["exec"]):
        r = sandkit(*command, "no-such-container", *(["true"] if command == ["exec"] else []))
        assert r.returncode == 1 and "No such container: no-such-container" in r.stderr


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except OSError:
        return None


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None
