"""Nothing of a container outlives it: processes, mounts, cgroups, fds, directories.

Counted on the host before and after (conftest's `no_leaks`, plus the cgroup directories named
after our containers), for 1,000 containers one after another and 100 at once; a host process
SIGKILLed mid-run leaves no orphan; an init killed from outside is a clear `ContainerDiedError`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
import trio
from proctable import children, descendants

import sandkit
from sandkit.errors import ContainerDiedError, ContainerNotRunningError

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="counts host cgroups and processes: runs as root"),
]


def _cgroup_dirs() -> set[str]:
    found = set()
    for top in Path("/sys/fs/cgroup").glob("*/sandkit*"):
        for dirpath, dirnames, _ in os.walk(top):
            found.update(os.path.join(dirpath, d) for d in dirnames)
    return found


def _ours(dirs: set[str], ids: set[str]) -> list[str]:
    return sorted(d for d in dirs if any(i in d for i in ids))


def test_a_thousand_containers_one_after_another(busybox, no_leaks):
    ids: set[str] = set()
    started = time.monotonic()
    for n in range(1000):
        # every 10th with limits, so its cgroups are made and removed too
        options = {"memory": "64m", "pids_limit": 100} if n % 10 == 0 else {}
        with sandkit.Container(busybox, **options) as c:
            ids.add(c.id)
            if n % 100 == 0:
                # a process left running in the background when the container stops
                assert (
                    c.exec(["sh", "-c", "sleep 100 >/dev/null 2>&1 & echo $$"], timeout=5).exit_code
                    == 0
                )
    elapsed = time.monotonic() - started
    assert not _ours(_cgroup_dirs(), ids)
    print(f"1000 containers in {elapsed:.1f} s ({elapsed:.1f} ms each)")


def test_a_hundred_containers_at_once(busybox, no_leaks):
    ids: set[str] = set()
    peak: dict[str, int] = {}

    async def one(n: int, all_up: anyio.Event, up: list[int]) -> None:
        options = {"memory": "64m"} if n % 4 == 0 else {}
        async with sandkit.AsyncContainer(busybox, **options) as c:
            ids.add(c.id)
            process = await c.spawn(["sleep", "1000"], stdin=False)
            up.append(n)
            if len(up) == 100:
                peak["inits"] = len(children(os.getpid()))
                peak["cgroups"] = len(_ours(_cgroup_dirs(), ids))
                all_up.set()
            await all_up.wait()
            r = await c.exec(["echo", str(n)], timeout=30)
            assert r.stdout == f"{n}\n".encode()
            await process.kill()
            await process.wait()

    async def main() -> None:
        all_up = anyio.Event()
        up: list[int] = []
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tasks:
                for n in range(100):
                    tasks.start_soon(one, n, all_up, up)

    trio.run(main)
    assert peak["inits"] >= 100  # they really were all running at once
    assert peak["cgroups"] > 0
    assert not _ours(_cgroup_dirs(), ids)


# The host process that gets SIGKILLed: containers with processes running, one with cgroups.
_VICTIM = textwrap.dedent("""
    import sys, time, sandkit
    image = sandkit.Image.from_directory(sys.argv[1])
    boxes, processes = [], []
    for n in range(4):
        c = sandkit.Container(image, **({"memory": "64m", "pids_limit": 50} if n == 0 else {}))
        c.start()
        processes.append(c.spawn(["sh", "-c", "sleep 987654 & sleep 987654 & sleep 987654"], stdin=False))
        boxes.append(c)
    print("ready", " ".join(c.id for c in boxes), flush=True)
    time.sleep(1000)
""")

# Between us and the victim: a subreaper that collects the victim's orphans (the inits) and tells
# how long they took to go, so none of them lands on pytest.
_REAPER = textwrap.dedent("""
    import ctypes, os, subprocess, sys, time
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    victim = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
    line = victim.stdout.readline()
    print(victim.pid, line, end="", flush=True)
    victim.wait()
    killed = time.monotonic()
    reaped = 0
    while time.monotonic() - killed < 10:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            reaped += 1
        else:
            time.sleep(0.01)
    else:
        print("orphans still running after 10 s", flush=True)
        sys.exit(1)
    print(f"reaped {reaped} in {time.monotonic() - killed:.2f} s", flush=True)
""")


def _marked_sleeps() -> list[int]:
    """Our container processes of the killed-host test (only ours: other test runs may share
    the host; orphans come back to us, the subreaper, so an escaped one is still found)."""
    left = []
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00987654\x00":
                left.append(pid)
        except OSError:
            pass
    return left


def test_sigkill_of_the_host_process_leaves_no_orphan(busybox_dir, tmp_path):
    env = dict(
        os.environ,
        SANDKIT_HOME=str(tmp_path / "home"),
        PYTHONPATH=str(Path(sandkit.__file__).parent.parent),
    )
    reaper = subprocess.Popen(
        [sys.executable, "-c", _REAPER, _VICTIM, str(busybox_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = reaper.stdout.readline().split()
        assert len(first) == 6 and first[1] == "ready", first
        victim_pid, ids = int(first[0]), set(first[2:])
        deadline = time.monotonic() + 10
        while len(_marked_sleeps()) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)  # the shells start their sleeps after "ready"
        assert len(_marked_sleeps()) >= 12
        os.kill(victim_pid, signal.SIGKILL)
        out, _ = reaper.communicate(timeout=30)
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
    assert reaper.returncode == 0, out
    assert "reaped 4 in" in out, out  # the 4 inits, and nothing else, ended up orphaned
    deadline = time.monotonic() + 5
    while _marked_sleeps() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _marked_sleeps(), "container processes outlived their killed host"
    # Cgroup directories cannot be removed by a process that was SIGKILLed; they must at least
    # be empty (no process escaped into them), and are reported here when left.
    for path in reversed(_ours(_cgroup_dirs(), ids)):
        procs = Path(path, "cgroup.procs").read_text().split()
        assert not procs, f"processes left in {path}: {procs}"
        os.rmdir(path)  # tidy up after the killed host (children first)
    print(f"killed host: {out.strip()}")


def test_killing_the_init_from_outside_is_a_clear_error(busybox, no_leaks):
    with sandkit.Container(busybox) as c:
        process = c.spawn(["sleep", "1000"], stdin=False)
        init = c._core._init
        assert init is not None
        os.kill(init.pid, signal.SIGKILL)
        with pytest.raises(ContainerDiedError, match=r"init has exited|killed"):
            process.wait(timeout=10)
        with pytest.raises(ContainerDiedError, match="start a new container"):
            c.exec(["true"], timeout=5)
        with pytest.raises(ContainerDiedError):
            c.write_file("/tmp/x", b"x")
        assert not c.running
    with pytest.raises(ContainerNotRunningError):
        c.exec(["true"])


def _rootless_loop(count: int):
    from conftest import host_footprint, make_busybox_rootfs

    image = sandkit.Image.from_directory(
        make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    )
    with sandkit.Container(image) as c:  # warm-up: what lives as long as the process
        c.exec(["true"])

    def footprint():
        fp = host_footprint()
        return (
            fp["inits"],
            fp["mounts"],
            fp["fds"],
            sorted(
                str(p)
                for p in Path(os.environ["SANDKIT_HOME"]).rglob("*")
                if "rootfs" not in p.parts
            ),
        )

    before = footprint()
    for n in range(count):
        with sandkit.Container(image) as c:
            if n % 25 == 0:
                c.exec(["sh", "-c", "sleep 100 >/dev/null 2>&1 & true"], timeout=5)
    return before, footprint()


def test_rootless_containers_one_after_another_leave_nothing(as_unprivileged, warmed_up):
    before, after = as_unprivileged(_rootless_loop, 200)
    assert after == before
