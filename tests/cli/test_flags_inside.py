"""`sandkit run`'s flags take effect inside the container: each one is checked from what a process
in it sees or cannot do, or from the cgroup files the kernel enforces, never from sandkit's own
idea of what it set. The command line runs as a user would run it: a separate process."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cgroup_view import Limits, limits_of
from docker_defaults import DOCKER_CAP_MASK, cap_mask

from .conftest import held, init_under, sandkit, sandkit_env

pytestmark = pytest.mark.slow  # starts containers, the CLI or servers

MiB = 1024 * 1024


def status_field(stdout: str, field: str) -> str:
    return next(line.split()[1] for line in stdout.splitlines() if line.startswith(f"{field}:"))


# --- limits -----------------------------------------------------------------------------------


@contextmanager
def running(*flags: str, image: str) -> Iterator[int]:
    """`sandkit run -i FLAGS IMAGE` kept running while the block runs; yields its init's pid."""
    argv = [sys.executable, "-m", "sandkit", "run", "-i", "--rm", *flags, image]
    with held(argv, sandkit_env()) as (cli, _):
        yield init_under(cli)


def test_limits_are_in_the_cgroup_files(bb):
    with running("--pids-limit", "37", "--cpus", "0.5", "-m", "48m", image=bb) as init:
        assert limits_of(init) == Limits(memory=48 * MiB, pids=37, cpu_quota=(50_000, 100_000))
    with running(image=bb) as init:
        assert limits_of(init).pids != 37 and limits_of(init).cpu_quota is None


def test_pids_limit_stops_a_fork_loop(bb):
    # (the sleeps left behind end with the container, when this shell exits)
    fork_loop = "for i in $(seq 40); do sleep 5 & done 2>&1 | head -n 1"
    r = sandkit("run", "--rm", "--pids-limit", "10", bb, "sh", "-c", fork_loop)
    assert "can't fork" in r.stdout or "Resource temporarily unavailable" in r.stdout, r
    r = sandkit("run", "--rm", bb, "sh", "-c", fork_loop)
    assert r.stdout == "", r


def test_memory_limit_kills_a_memory_bomb(bb):
    bomb = "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"
    r = sandkit(
        "run", "--rm", "-m", "32m", "--memory-swap", "32m", bb, "sh", "-c", bomb, timeout=60
    )
    assert r.returncode == 137, r  # SIGKILLed by the OOM killer, as with docker run


def test_cpus_bound_the_cpu_time_a_busy_loop_gets(bb):
    # busybox time prints the loop's cpu time: 2% of a cpu for ~1 s of wall time gets about
    # 0.02 s, where an unlimited loop gets its share of a core (0.25 s on a host loaded to 9
    # on 2 cores). The quota itself is checked exactly in test_limits_are_in_the_cgroup_files.
    loop = "time -f '%U %S' timeout 1 sh -c 'while :; do :; done' 2>&1 | tail -n 1"
    r = sandkit("run", "--rm", "--cpus", "0.02", bb, "sh", "-c", loop)
    user, system = map(float, r.stdout.split()[-2:])
    assert user + system < 0.1, r


def test_ulimit_is_in_the_process_limits(bb):
    r = sandkit(
        "run",
        "--rm",
        "--ulimit",
        "nofile=100:200",
        bb,
        "grep",
        "Max open files",
        "/proc/self/limits",
    )
    assert r.stdout.split()[3:5] == ["100", "200"], r


# --- security ---------------------------------------------------------------------------------


def test_default_capabilities_and_seccomp(bb):
    r = sandkit("run", "--rm", bb, "cat", "/proc/self/status")
    assert int(status_field(r.stdout, "CapEff"), 16) == DOCKER_CAP_MASK
    assert int(status_field(r.stdout, "CapBnd"), 16) == DOCKER_CAP_MASK
    assert status_field(r.stdout, "Seccomp") == "2"
    assert status_field(r.stdout, "NoNewPrivs") == "1"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--cap-drop", "ALL"], 0),
        (["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"], cap_mask(["NET_BIND_SERVICE"])),
        (["--cap-add", "SYS_TIME"], DOCKER_CAP_MASK | cap_mask(["SYS_TIME"])),
        (
            ["--cap-drop", "CHOWN", "--cap-drop", "NET_RAW"],
            DOCKER_CAP_MASK & ~cap_mask(["CHOWN", "NET_RAW"]),
        ),
    ],
)
def test_cap_add_and_drop(bb, flags, expected):
    r = sandkit("run", "--rm", *flags, bb, "cat", "/proc/self/status")
    assert int(status_field(r.stdout, "CapEff"), 16) == expected, r
    assert int(status_field(r.stdout, "CapBnd"), 16) == expected, r


def test_a_dropped_capability_is_gone(bb):
    chown = "touch /tmp/f && chown 1 /tmp/f 2>&1; echo $?"
    assert sandkit("run", "--rm", bb, "sh", "-c", chown).stdout == "0\n"
    r = sandkit("run", "--rm", "--cap-drop", "CHOWN", bb, "sh", "-c", chown)
    assert "Operation not permitted" in r.stdout and r.stdout.endswith("1\n"), r


def test_a_seccomp_profile_denying_mkdir_makes_mkdir_fail(bb, tmp_path):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    script = "mkdir /tmp/d 2>&1; echo $?; touch /tmp/f && echo touched"
    r = sandkit("run", "--rm", "--security-opt", f"seccomp={profile}", bb, "sh", "-c", script)
    assert "Operation not permitted" in r.stdout and "1\ntouched\n" in r.stdout, r
    assert sandkit("run", "--rm", bb, "sh", "-c", script).stdout == "0\ntouched\n"


def test_seccomp_unconfined_installs_no_filter(bb):
    r = sandkit(
        "run", "--rm", "--security-opt", "seccomp=unconfined", bb, "cat", "/proc/self/status"
    )
    assert status_field(r.stdout, "Seccomp") == "0", r


# --- filesystem and process -------------------------------------------------------------------


def test_read_only_root_with_a_tmpfs(bb):
    script = (
        "touch /x 2>&1; touch /scratch/x && echo scratch-ok; "
        "df -k /scratch | awk 'NR==2 {print $2}'; awk '$2 == \"/scratch\" {print $3}' /proc/mounts"
    )
    r = sandkit("run", "--rm", "--read-only", "--tmpfs", "/scratch:size=2m", bb, "sh", "-c", script)
    assert r.stdout.splitlines() == [
        "touch: /x: Read-only file system",
        "scratch-ok",
        "2048",
        "tmpfs",
    ], r


def test_user_workdir_and_env(bb):
    script = 'grep -E "^(Uid|Gid):" /proc/self/status | awk \'{print $2}\'; pwd; echo "$GREETING"'
    r = sandkit(
        "run",
        "--rm",
        "-u",
        "1000:50",
        "-w",
        "/tmp",
        "-e",
        "GREETING=hi there",
        bb,
        "sh",
        "-c",
        script,
    )
    assert r.stdout.splitlines() == ["1000", "50", "/tmp", "hi there"], r
