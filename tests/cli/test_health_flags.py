"""`sandkit run --health-*` and `--no-healthcheck` (Docker's flags and messages), and the health
of a detached container as `sandkit ps` and `sandkit inspect` show it (Docker's wording)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from images.conftest import oci_layout, tar_bytes

import sandkit as sk

from .conftest import sandkit

pytestmark = pytest.mark.slow


def _wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- flags (docker run's parsing: cli/command/container/opts.go) ------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--health-interval", "5"],
            'invalid argument "5" for "--health-interval" flag: time: missing unit in duration "5"',
        ),
        (
            ["--health-timeout", "soon"],
            'invalid argument "soon" for "--health-timeout" flag: time: invalid duration "soon"',
        ),
        (["--health-start-period=-1s"], "--health-start-period cannot be negative"),
        (["--health-start-interval=-1ms"], "--health-start-interval cannot be negative"),
        (["--health-retries", "-1"], "--health-retries cannot be negative"),
        (
            ["--no-healthcheck", "--health-cmd", "true"],
            "--no-healthcheck conflicts with --health-* options",
        ),
        (["--health-cmd", "true", "--health-interval", "1us"], "1 ms"),
    ],
)
def test_bad_health_flags_exit_125_before_anything_starts(bb, flags, message):
    r = sandkit("run", "--rm", *flags, bb, "true")
    assert r.returncode == 125, r.stderr
    assert message in r.stderr


def test_the_flags_become_the_option(bb):
    from sandkit.cli import build_parser
    from sandkit.cli.spec import RunSpec

    args = build_parser().parse_args(
        [
            "run",
            "--health-cmd",
            "pg_isready -q",
            "--health-interval",
            "1m30s",
            "--health-timeout",
            "500ms",
            "--health-start-period",
            "2s",
            "--health-start-interval",
            "100ms",
            "--health-retries",
            "4",
            bb,
        ]
    )
    assert RunSpec.from_args(args).options["healthcheck"] == {
        "test": ["CMD-SHELL", "pg_isready -q"],
        "interval": 90.0,
        "timeout": 0.5,
        "start_period": 2.0,
        "start_interval": 0.1,
        "retries": 4,
    }
    args = build_parser().parse_args(["run", "--no-healthcheck", bb])
    assert RunSpec.from_args(args).options["healthcheck"] == {"test": ["NONE"]}
    args = build_parser().parse_args(["run", bb])
    assert "healthcheck" not in RunSpec.from_args(args).options


# --- a detached container's health ------------------------------------------------------------


@pytest.fixture
def healthy_when_told(bb):
    """A detached container whose check passes while /tmp/ok exists; failures count at once
    after a first success (start period of an hour: they do not before)."""
    r = sandkit(
        "run",
        "-d",
        "--health-cmd",
        "echo checked; test -e /tmp/ok",
        "--health-interval",
        "50ms",
        "--health-start-interval",
        "50ms",
        "--health-start-period",
        "1h",
        "--health-retries",
        "1",
        bb,
        "sleep",
        "1000",
    )
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    yield container_id
    sandkit("rm", "-f", container_id)


def _status(container_id: str) -> str:
    rows = [
        json.loads(line) for line in sandkit("ps", "-a", "--format", "json").stdout.splitlines()
    ]
    return next(row["Status"] for row in rows if container_id.startswith(row["ID"]))


def _health(container_id: str) -> dict:
    return json.loads(sandkit("inspect", container_id).stdout)[0]["State"].get("Health")


def test_ps_and_inspect_follow_the_health_check(healthy_when_told):
    cid = healthy_when_told
    _wait_for(lambda: len(_health(cid)["Log"]) >= 2, "two checks")
    # Failing, but within the start period: still starting, and the streak does not grow.
    assert _status(cid).endswith(" (health: starting)")
    assert _status(cid).startswith("Up ")
    health = _health(cid)
    assert (health["Status"], health["FailingStreak"]) == ("starting", 0)
    assert health["Log"][-1]["ExitCode"] == 1
    assert health["Log"][-1]["Output"] == "checked\n"

    assert sandkit("exec", cid, "touch", "/tmp/ok").returncode == 0
    _wait_for(lambda: _status(cid).endswith(" (healthy)"), "(healthy)")
    assert _health(cid)["Log"][-1]["ExitCode"] == 0

    assert sandkit("exec", cid, "rm", "/tmp/ok").returncode == 0
    _wait_for(lambda: _status(cid).endswith(" (unhealthy)"), "(unhealthy)")
    assert _health(cid)["FailingStreak"] >= 1
    assert len(_health(cid)["Log"]) <= 5

    assert sandkit("stop", "-t", "1", cid).returncode == 0
    # Stopped: no health in ps (Docker's "Exited (...)"), and unhealthy in inspect, as Docker
    # sets it when the checks end.
    assert _status(cid).startswith("Exited (")
    assert _health(cid)["Status"] == "unhealthy"


def test_no_health_check_no_health(bb):
    r = sandkit("run", "-d", bb, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        assert _health(cid) is None
        assert _status(cid).startswith("Up ") and "health" not in _status(cid)
    finally:
        sandkit("rm", "-f", cid)


# --- the image's HEALTHCHECK --------------------------------------------------------------------


@pytest.fixture
def image_with_healthcheck(tmp_path: Path) -> str:
    """busybox in the store with a HEALTHCHECK that passes at once (every 50 ms)."""
    binary = shutil.which("busybox")
    assert binary, "busybox-static is needed"
    layer = tar_bytes(
        [
            ("bin", "dir", None),
            ("bin/busybox", "file", Path(binary).read_bytes(), {"mode": 0o755}),
            ("bin/sh", "symlink", "busybox"),
            ("bin/sleep", "symlink", "busybox"),
            ("bin/true", "symlink", "busybox"),
            ("tmp", "dir", None, {"mode": 0o1777}),
        ]
    )
    config = {
        "Env": ["PATH=/bin"],
        "Cmd": ["sleep", "1000"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 50_000_000, "Retries": 2},
    }
    sk.Image.load(oci_layout(tmp_path / "hc", [layer], ref_name="hc:test", config=config))
    return "hc:test"


def test_the_images_healthcheck_and_no_healthcheck(image_with_healthcheck):
    r = sandkit("run", "-d", image_with_healthcheck)
    assert r.returncode == 0, r.stderr
    with_check = r.stdout.strip()
    r = sandkit("run", "-d", "--no-healthcheck", image_with_healthcheck)
    assert r.returncode == 0, r.stderr
    without = r.stdout.strip()
    try:
        _wait_for(lambda: _status(with_check).endswith(" (healthy)"), "the image's check")
        assert _health(without) is None
        assert "health" not in _status(without)
    finally:
        sandkit("rm", "-f", with_check, without)
