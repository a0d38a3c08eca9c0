"""`sandkit run` and `docker run` on the same image with the same flags: the same isolation, as a
process inside sees it. Capability sets, no_new_privs and the seccomp mode from
/proc/self/status; which /proc and /sys paths are masked or read-only; the rlimits in
/proc/self/limits; and the memory, pids and cpu limits in force, from the host's cgroup files.

sandkit keeps no_new_privs on in every container, Docker only with
`--security-opt no-new-privileges`: Docker is given that flag here, and
`test_no_new_privs_is_the_documented_difference` asserts the difference without it.

Uses the Docker daemon and images of test_docker_parity.py (see tests/cli/conftest.py).
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import pytest
from cgroup_view import Limits, limits_of
from docker_defaults import DOCKER_MASKED_PATHS, DOCKER_READONLY_PATHS

from .conftest import IMAGE, Docker, held, init_under, run_docker, sandkit_env

STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")

# Docker's lists, a few paths newer Docker versions hide too, and some that neither may hide.
PATHS = (*DOCKER_MASKED_PATHS, *DOCKER_READONLY_PATHS, "/proc/interrupts", "/sys", "/proc",
         "/proc/sys/kernel", "/sys/kernel", "/")


def _probe(path: str) -> str:
    """A line `PATH KIND WRITE`: KIND is absent, empty-dir, dir, null (a file that is /dev/null)
    or file; WRITE is erofs where `touch -c` (it only sets times) gets EROFS, else other."""
    return (f"p={path}; if [ ! -e $p ]; then echo \"$p absent -\"; else "
            f"if [ -d $p ]; then [ -z \"$(ls -A $p)\" ] && k=empty-dir || k=dir; "
            f"elif [ \"$(stat -c %t:%T $p)\" = 1:3 ]; then k=null; else k=file; fi; "
            f"touch -c $p 2>&1 | grep -q 'Read-only file system' && w=erofs || w=other; "
            f"echo \"$p $k $w\"; fi")


SCRIPT = "\n".join([
    f"grep -E '^({'|'.join(STATUS_FIELDS)}):' /proc/self/status",
    *map(_probe, PATHS),
    "sed 1d /proc/self/limits | sed 's/  */ /g'",
])


class View(NamedTuple):
    status: dict[str, str]
    paths: dict[str, str]
    rlimits: list[str]
    limits: Limits


def _view(lines: list[str], pid: int) -> View:
    lines = [line for line in lines if line.strip()]
    status = {line.split(":")[0]: line.split()[1] for line in lines if line.split(":")[0] in STATUS_FIELDS}
    paths = {line.split()[0]: " ".join(line.split()[1:]) for line in lines if line.split()[0] in PATHS}
    rlimits = [line for line in lines if line.startswith("Max ")]
    return View(status, paths, rlimits, limits_of(pid))


def sandkit_view(flags: tuple[str, ...]) -> View:
    argv = [sys.executable, "-m", "sandkit", "run", "-i", "--rm", "--network", "none", *flags, IMAGE]
    with held(argv, sandkit_env(), SCRIPT) as (cli, lines):
        return _view(lines, init_under(cli))


def docker_view(docker: Docker, flags: tuple[str, ...], *, no_new_privileges: bool = True) -> View:
    name = f"sandkit-isolation-{time.monotonic_ns()}"
    nnp = ("--security-opt", "no-new-privileges") if no_new_privileges else ()
    argv = ["docker", "run", "-i", "--rm", "--name", name, "--network", "none", *nnp, *flags, IMAGE]
    with held(argv, docker.env, SCRIPT) as (_, lines):
        pid = run_docker(docker, "inspect", "-f", "{{.State.Pid}}", name).stdout.decode().strip()
        return _view(lines, int(pid))


FLAG_SETS = {
    "defaults": (),
    "cap-drop-all": ("--cap-drop", "ALL"),
    "cap-add-drop": ("--cap-add", "SYS_TIME", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"),
    "user": ("-u", "1000:1000"),
    "read-only": ("--read-only",),
    "limits": ("-m", "64m", "--memory-swap", "64m", "--pids-limit", "50", "--cpus", "0.5",
               "--ulimit", "nofile=256:512"),
    "seccomp-unconfined": ("--security-opt", "seccomp=unconfined"),
}


@pytest.fixture(scope="module")
def views(docker, parity_images) -> dict[str, tuple[View, View]]:
    return {label: (docker_view(docker, flags), sandkit_view(flags)) for label, flags in FLAG_SETS.items()}


@pytest.mark.parametrize("label", FLAG_SETS)
def test_same_capabilities_no_new_privs_and_seccomp(views, label):
    docker, sandkit = views[label]
    assert set(docker.status) == set(STATUS_FIELDS)
    assert sandkit.status == docker.status


@pytest.mark.parametrize("label", FLAG_SETS)
def test_same_masked_and_read_only_paths(views, label):
    docker, sandkit = views[label]
    assert sandkit.paths == docker.paths


@pytest.mark.parametrize("label", FLAG_SETS)
def test_same_limits_in_force(views, label):
    docker, sandkit = views[label]
    assert sandkit.limits == docker.limits
    assert sandkit.rlimits == docker.rlimits


def test_the_limits_case_limits(views):
    docker, _ = views["limits"]
    assert docker.limits == Limits(memory=64 * 2**20, pids=50, cpu_quota=(50_000, 100_000))


def test_no_new_privs_is_the_documented_difference(docker, parity_images):
    """README: sandkit sets no_new_privs in every container; `docker run` only when asked."""
    plain = docker_view(docker, (), no_new_privileges=False)
    assert plain.status["NoNewPrivs"] == "0"
    assert sandkit_view(()).status["NoNewPrivs"] == "1"
