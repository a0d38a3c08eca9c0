"""Containers made ahead of need: used when there, never leaked, never shared."""

from __future__ import annotations

import os
import time

import pytest

import sandkit
from sandkit.runtime import prespawn
from sandkit.runtime.cgroups import Limits
from sandkit.runtime.resources import ResourcePlan

pytestmark = pytest.mark.slow


@pytest.fixture
def prespawning(monkeypatch):
    monkeypatch.setenv("SANDKIT_PRESPAWN", "1")
    prespawn.drain()
    yield
    prespawn.drain()


def _spare_pids():
    return {ready.init.pid for ready in prespawn.spares()}


def _wait_for_a_spare(timeout=10.0):
    deadline = time.monotonic() + timeout
    while not _spare_pids():
        assert time.monotonic() < deadline, "no spare container was made"
        time.sleep(0.005)
    return _spare_pids()


def test_the_next_container_takes_the_spare_and_a_new_one_is_made(busybox, prespawning):
    with sandkit.Container(busybox) as first:
        first.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, hostname="second") as second:
        assert second._core._init.pid in spare
        assert second.exec(["hostname"]).stdout == b"second\n"
        assert second.exec(["sh", "-c", "ls /tmp | wc -l"]).stdout == b"0\n"
    assert _wait_for_a_spare() != spare


def test_containers_from_spares_are_as_isolated_as_any(busybox, prespawning):
    with sandkit.Container(busybox) as c:
        c.exec(["sh", "-c", "echo secret > /tmp/mine"])
    _wait_for_a_spare()
    with sandkit.Container(busybox) as c:
        assert c.exec(["cat", "/tmp/mine"]).exit_code != 0
        assert c.exec(["cat", "/proc/1/comm"]).stdout == b"sandkit-init\n"
        assert c.exec(["hostname"]).stdout == f"{c.id[:12]}\n".encode()


def test_a_different_setup_gets_no_spare(busybox, prespawning, tmp_path):
    with sandkit.Container(busybox) as c:
        c.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, mounts=[f"{tmp_path}:/data"]) as c:
        assert c._core._init.pid not in spare
    with sandkit.Container(busybox, read_only=True) as c:
        assert c._core._init.pid not in spare


def test_lifetimes_and_other_limits_bypass_the_spares(busybox, prespawning):
    with sandkit.Container(busybox) as c:
        c.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, pids_limit=50) as c:
        assert c._core._init.pid not in spare
    with sandkit.Container(busybox, lifetime=30) as c:
        assert c._core._init.pid not in spare


def test_a_container_with_limits_gets_a_spare_already_in_its_cgroup(busybox, prespawning):
    limits = {"memory": "64m", "memory_swap": "64m", "pids_limit": 20}
    with sandkit.Container(busybox, **limits) as c:
        c.exec(["true"])
    spare = _wait_for_a_spare()
    (ready,) = prespawn.spares()
    cgroup_dirs = [os.readlink(f"/proc/self/fd/{fd}") for fd in ready.cgroup.join_fds()]
    with sandkit.Container(busybox, **limits) as c:
        assert c._core._init.pid in spare
        forks = c.exec(["sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait"], timeout=20)
        assert (
            b"can't fork" in forks.stderr or b"Resource temporarily unavailable" in forks.stderr
        ), forks
        bomb = c.exec(["sh", "-c", "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"], timeout=30)
        assert bomb.oom_killed and bomb.peak_memory <= 65 * 2**20, bomb
        assert c.stats().pids_current is not None
    # the container's teardown removed the cgroup it took over from the spare
    assert cgroup_dirs and not any(os.path.exists(d) for d in cgroup_dirs)
    _wait_for_a_spare()
    (ready,) = prespawn.spares()
    cgroup_dirs = [os.readlink(f"/proc/self/fd/{fd}") for fd in ready.cgroup.join_fds()]
    prespawn.drain()
    assert not any(os.path.exists(d) for d in cgroup_dirs)


def test_drain_stops_every_spare(busybox, prespawning):
    with sandkit.Container(busybox):
        pass
    spare = _wait_for_a_spare()
    prespawn.drain()
    assert not _spare_pids()
    for pid in spare:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_spare_that_fails_set_up_says_what_a_start_says(tmp_path):
    # Both bring an init up with the same code: the same failure reads the same either way.
    root = tmp_path / "rootfs"
    root.mkdir()
    image = sandkit.Image.from_directory(root)
    root.rmdir()  # the init's overlay mount now fails (ENOENT), whoever spawned it
    with pytest.raises(sandkit.ContainerStartError) as started:
        sandkit.Container(image).start()
    core = sandkit.AsyncContainer(image)
    plan = ResourcePlan.decide(Limits(), accounting=False, rlimits=None)
    recipe = prespawn.recipe_for(
        core._setup_message(image), user_namespace=core.rootless, network=True, resources=plan
    )
    with pytest.raises(sandkit.ContainerStartError) as spare:
        prespawn.make_container(recipe)
    assert "No such file or directory" in str(started.value)
    assert str(spare.value) == str(started.value)
