"""Limits that hold: memory, pids, cpu, disk, rlimits, output; per-exec accounting."""

from __future__ import annotations

import os
import warnings

import pytest

import sandkit
from sandkit.runtime.resources import LimitsNotEnforcedWarning

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]

MiB = 1024 * 1024


def test_a_memory_bomb_is_oom_killed_and_reported(busybox):
    with sandkit.Container(busybox, memory="64m", memory_swap="64m") as c:
        # busybox's awk grows a string until the memory limit stops it
        r = c.exec(["sh", "-c", "awk 'BEGIN { s = \"x\"; while (1) s = s s }'"], timeout=30)
        assert r.oom_killed and r.signal == 9, r
        assert r.peak_memory is not None and r.peak_memory <= 64 * MiB + MiB
        assert c.exec(["echo", "still alive"]).stdout == b"still alive\n"


def test_a_fork_bomb_hits_the_pids_limit(busybox):
    with sandkit.Container(busybox, pids_limit=20) as c:
        r = c.exec(["sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait"], timeout=20)
        assert b"can't fork" in r.stderr or b"Resource temporarily unavailable" in r.stderr, r
        assert r.pids_limit_hit, r
        assert c.stats().pids_current <= 20
        assert not c.exec(["sh", "-c", "sleep 0 & wait"]).pids_limit_hit  # counted per exec
    with sandkit.Container(busybox) as c:  # and the next container is unaffected
        assert c.exec(["true"]).exit_code == 0


def test_cpu_time_and_quota(busybox):
    with sandkit.Container(busybox, cpus=0.5) as c:
        r = c.exec(["sh", "-c", "timeout 1 sh -c 'while :; do :; done'"], timeout=10)
    assert r.cpu_time is not None
    # half a cpu for ~1 s of wall time: well under the full second an unlimited loop would get
    assert 0.2 < r.cpu_time < 0.8, r


def test_stats_need_a_cgroup_and_report_memory(busybox):
    with (
        sandkit.Container(busybox) as c,
        pytest.raises(sandkit.ContainerError, match="needs the container to have a cgroup"),
    ):
        c.stats()
    with sandkit.Container(busybox, accounting=True) as c:
        p = c.spawn(["sleep", "10"])
        stats = c.stats()
        assert stats.pids_current >= 1 and stats.memory_current > 0
        p.kill()
        p.wait()
        p.close()


def _writable_layer() -> tuple[int, int]:
    with sandkit.Container("host") as c:
        blocks, block_size, inodes = c.exec(
            ["stat", "-f", "-c", "%b %S %c", "/"], check=True
        ).stdout.split()
    return int(blocks) * int(block_size), int(inodes)


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_the_writable_layer_is_bounded_by_default(mode, as_unprivileged):
    if mode == "rootless" and os.geteuid() != 0:
        pytest.skip("root creates the unprivileged user")
    size, inodes = _writable_layer() if mode == "root" else as_unprivileged(_writable_layer)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    expected = min(1 << 30, ram // 4)  # the README's default: 1 GiB, a quarter of RAM if less
    assert size == expected
    assert inodes == expected // 4096


def test_the_writable_layer_has_a_size_limit(busybox):
    with sandkit.Container(busybox, disk_size="8m") as c:
        r = c.exec(["sh", "-c", "dd if=/dev/zero of=/big bs=1M count=64"])
        assert r.exit_code != 0 and b"No space left" in r.stderr
        assert c.exec(["sh", "-c", "rm /big; echo ok > /small && cat /small"]).stdout == b"ok\n"


def test_rlimits_apply_to_every_exec(busybox):
    with sandkit.Container(busybox, rlimits={"nofile": 64}) as c:
        assert c.exec(["sh", "-c", "ulimit -n"]).stdout == b"64\n"


def test_captured_output_is_capped(busybox):
    with sandkit.Container(busybox, max_output=1000) as c:
        r = c.exec(["sh", "-c", "yes | head -c 100000"])
    assert len(r.stdout) == 1000 and r.output_truncated and r.exit_code == 0


def test_bad_limits_are_refused_before_anything_starts(busybox):
    with pytest.raises(sandkit.LimitsError):
        sandkit.Container(busybox, memory="lots")
    with pytest.raises(sandkit.LimitsError):
        sandkit.Container(busybox, cpus=-1)
    with pytest.raises(sandkit.LimitsError, match="unknown rlimit"):
        sandkit.Container(busybox, rlimits={"bogus": 1}).start()


def _rootless_limits():
    import os
    from pathlib import Path

    from conftest import make_busybox_rootfs

    root = make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with sandkit.Container(
            sandkit.Image.from_directory(root), memory="64m", pids_limit=50
        ) as c:
            limits = c.exec(["sh", "-c", "ulimit -v; ulimit -u"]).stdout.decode().split()
    return limits, [
        str(w.message) for w in caught if issubclass(w.category, LimitsNotEnforcedWarning)
    ]


def test_rootless_on_cgroup_v1_falls_back_to_rlimits_with_a_warning(as_unprivileged):
    from sandkit.runtime import cgroups

    if cgroups.host().version != 1:
        pytest.skip("this host has cgroup v2: rootless limits go through delegation there")
    limits, warned = as_unprivileged(_rootless_limits)
    assert limits == [str(64 * 1024), "50"]
    assert len(warned) == 1 and "memory" in warned[0] and "pids" in warned[0]
