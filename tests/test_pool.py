"""Warm pools (`sandkit.Pool`, `sandkit.AsyncPool`): started containers handed out once each,
destroyed after use, refilled in the background within their limits, and nothing left behind."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import anyio
import pytest
from conftest import host_footprint, run_unprivileged
from polling import wait_until
from proctable import children
from rootfs import make_busybox_rootfs

import sandkit
from sandkit import errors
from sandkit.pool import retry_delay
from sandkit.runtime import cgroups, prespawn

pytestmark = pytest.mark.slow


@pytest.fixture
def new_inits():
    """Our child processes the test made (each container's init is one): earlier tests of the
    run may have left long-lived ones of their own (a network's keeper, a service)."""
    before = children(os.getpid())
    return lambda: children(os.getpid()) - before


def _held(pool: sandkit.Pool, count: int, timeout: float = 30.0) -> list:
    """``count`` containers taken from ``pool`` and held (leave them with ``__exit__``)."""
    blocks = [pool.container(timeout=timeout) for _ in range(count)]
    for block in blocks:
        block.__enter__()
    return blocks


def _leave(blocks: list) -> None:
    for block in blocks:
        block.__exit__(None, None, None)


# -- each container is handed out once --------------------------------------------------------


def test_a_used_container_is_never_handed_out_again(busybox, no_leaks):
    seen_ids, seen_inits = set(), set()
    with sandkit.Pool(busybox, size=2) as pool:
        for round_ in range(6):
            with pool.container() as c:
                assert c.running
                # nothing of an earlier user is there: its file, its processes
                assert c.exec(["ls", "/tmp"]).stdout == b""
                assert b"sleep" not in c.exec(["ps", "-o", "comm="]).stdout
                c.exec(["sh", "-c", f"echo {round_} > /tmp/mine"], check=True)
                c.exec(["sh", "-c", "sleep 1000 >/dev/null 2>&1 &"], check=True)
                seen_ids.add(c.id)
                seen_inits.add(c._core._init.pid)
            # the caller does not wait for the teardown, but it comes
            wait_until(lambda c=c: not c.running, "the used container to stop")
    assert len(seen_ids) == 6
    assert len(seen_inits) == 6


def test_the_pool_refills_after_use_and_counts_hits(busybox, no_leaks):
    with sandkit.Pool(busybox, size=3) as pool:
        pool.wait_ready()
        assert pool.stats.ready == 3
        with pool.container() as c:
            c.exec(["true"], check=True)
            assert pool.stats.in_use == 1
        pool.wait_ready()  # a new one replaced it
        wait_until(lambda: pool.stats.destroyed == 1, "the used container's teardown")
        stats = pool.stats
        assert (stats.hits, stats.misses, stats.waits) == (1, 0, 0)
        assert (stats.created, stats.ready, stats.in_use, stats.failed) == (4, 3, 0, 0)
    stats = pool.stats
    assert (stats.created, stats.destroyed, stats.ready, stats.in_use) == (4, 4, 0, 0)


def test_a_caller_that_finds_none_ready_waits_for_one(busybox, no_leaks):
    # size 1, at most 1: while one is held, nothing can start; the next caller waits (a miss,
    # and a wait: the pool is at its cap) and gets the one started when the first is gone.
    with sandkit.Pool(busybox, size=1, max_containers=1) as pool:
        pool.wait_ready()
        got = []
        [first] = _held(pool, 1)
        waiter = threading.Thread(target=lambda: got.append(_use_one(pool)))
        waiter.start()
        wait_until(lambda: pool.stats.misses == 1, "the second caller to wait")
        assert not got
        _leave([first])
        waiter.join(timeout=60)
        assert got == [b"ok\n"]
        stats = pool.stats
        assert (stats.hits, stats.misses, stats.waits) == (1, 1, 1)


def test_a_waiter_stopped_by_ctrl_c_takes_nothing_with_it(busybox, no_leaks):
    # Ctrl-C while pool.container() waits: the wait on the loop thread must end with it, or the
    # next container started would be handed to nobody and stay "in use" until close()
    with sandkit.Pool(busybox, size=1, max_containers=1) as pool:
        [held] = _held(pool, 1)
        main = threading.get_ident()

        def press_ctrl_c() -> None:
            wait_until(lambda: pool.stats.misses == 1, "the caller to wait")
            signal.pthread_kill(main, signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt), pool.container(timeout=None):
            pass
        presser.join()
        _leave([held])
        wait_until(lambda: pool.stats.ready == 1, "the next container to be ready", timeout=30)
        assert pool.stats.in_use == 0
        with pool.container(timeout=60) as c:
            c.exec(["true"], check=True)


def _use_one(pool: sandkit.Pool) -> bytes:
    with pool.container(timeout=60) as c:
        return c.exec(["echo", "ok"]).stdout


def test_past_its_cap_the_pool_waits_then_says_which_limit(busybox, no_leaks, new_inits):
    with sandkit.Pool(busybox, size=1, max_containers=2) as pool:
        held = _held(pool, 2)
        assert len(new_inits()) <= 2
        exhausted = pytest.raises(errors.PoolExhaustedError, match=r"max_containers=2")
        with exhausted as caught, pool.container(timeout=0.2):
            pass
        assert isinstance(caught.value, TimeoutError)
        assert "raise max_containers=" in str(caught.value)
        assert pool.stats.waits == 1
        assert len(new_inits()) <= 2  # the caller looping on container() took nothing more
        _leave(held)
        with pool.container() as c:  # room again
            c.exec(["true"], check=True)


def test_32_threads_at_once(busybox, no_leaks):
    results: list[str] = []
    failures: list[BaseException] = []

    def use() -> None:
        try:
            with pool.container(timeout=120) as c:
                results.append(c.exec(["hostname"], check=True).stdout.decode().strip())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    with sandkit.Pool(busybox, size=4, max_containers=8) as pool:
        threads = [threading.Thread(target=use) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert not failures
        assert len(set(results)) == 32  # 32 different containers
        stats = pool.stats
        assert stats.hits + stats.misses == 32
        assert stats.in_use == 0
    assert pool.stats.destroyed == pool.stats.created


def test_what_a_holder_does_stays_with_its_container(busybox, no_leaks):
    with sandkit.Pool(busybox, size=2, pids_limit=64, memory="64m") as pool:
        with pool.container() as c:
            # a fork bomb: it hits the container's pids limit, and ends with the container
            bomb = c.exec(["sh", "-c", "f() { f | f & }; f; sleep 1"], timeout=5)
            assert b"can't fork" in bomb.stderr or bomb.timed_out
        kept = c
        with pool.container() as c:
            c.kill()  # the holder ends its container itself: leaving the block is still fine
        with pool.container() as c:
            assert c.exec(["echo", "ok"]).stdout == b"ok\n"
        wait_until(lambda: not kept.running, "the first container's teardown")
        with pytest.raises(errors.ContainerNotRunningError):
            kept.exec(["true"])  # a reference kept past the block reaches nothing


def test_a_ready_container_killed_from_outside_is_not_handed_out(busybox, no_leaks, new_inits):
    with sandkit.Pool(busybox, size=2) as pool:
        pool.wait_ready()
        ready_inits = new_inits()  # nothing is in use: every init is a ready container's
        assert len(ready_inits) == 2
        for pid in ready_inits:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(_is_zombie(pid) for pid in ready_inits), "the inits to die")
        with pool.container() as c:
            assert c.exec(["echo", "ok"]).stdout == b"ok\n"
        assert pool.stats.failed == 2


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"


# -- close ------------------------------------------------------------------------------------


def test_close_ends_the_containers_in_use_and_their_holders_are_told(busybox, no_leaks, new_inits):
    pool = sandkit.Pool(busybox, size=2)
    with pool.container() as c:
        running = c.spawn(["sleep", "1000"])
        try:
            pool.close()
            assert not c.running
            with pytest.raises(errors.ContainerNotRunningError, match="its pool was closed"):
                c.exec(["true"])
            with pytest.raises(errors.ContainerNotRunningError, match="its pool was closed"):
                running.wait(timeout=60)
        finally:
            running.close()
    assert not new_inits()
    pool.close()  # a second close is fine
    with pytest.raises(errors.PoolClosedError), pool.container():
        pass


def test_close_leaves_no_cgroup(busybox, no_leaks, monkeypatch):
    host = cgroups.host()
    if not host.usable or os.geteuid() != 0:
        pytest.skip("needs root and usable cgroups")
    # A spare of an earlier test's container, made while this one runs, would hold a cgroup of
    # its own: none is made, and none is left from before.
    monkeypatch.setenv("SANDKIT_PRESPAWN", "0")
    prespawn.drain()
    dirs = [Path(parent, host.name) for parent in sorted(set(host.parents.values()))]

    def cgroup_dirs() -> set[Path]:
        return {p for d in dirs if d.is_dir() for p in d.rglob("*") if p.is_dir()}

    before = cgroup_dirs()
    with sandkit.Pool(busybox, size=2, memory="64m", pids_limit=50) as pool:
        held = _held(pool, 1)
        pool.wait_ready()
        assert len(cgroup_dirs() - before) >= 3
    _leave(held)
    assert cgroup_dirs() - before == set()


def test_rootless_pool(as_unprivileged):
    def use_a_pool() -> tuple[int, bytes, int]:
        # Built by the unprivileged user, as a rootless user's images are (files of unmapped
        # owners cannot be copied up).
        root = make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
        with sandkit.Pool(sandkit.Image.from_directory(root), size=2) as pool:
            with pool.container() as c:
                c.exec(["sh", "-c", "echo x > /tmp/mine"], check=True)
            with pool.container() as c:
                leftover = c.exec(["ls", "/tmp"]).stdout
            in_pool = len(children(os.getpid()))
        return in_pool, leftover, len(children(os.getpid()))

    in_pool, leftover, after = as_unprivileged(use_a_pool)
    assert in_pool >= 1
    assert (leftover, after) == (b"", 0)


def test_a_forked_child_cannot_use_its_parents_pool(busybox, no_leaks):
    def in_the_child(pool: sandkit.Pool) -> str:
        refused = pytest.raises(errors.PoolClosedError, match="a forked child makes a pool")
        with refused, pool.container():
            pass
        pool.close()  # nothing: the parent's containers are not the child's to end
        return "ok"

    with sandkit.Pool(busybox, size=1) as pool:
        assert run_unprivileged(in_the_child, pool, unprivileged=False) == "ok"
        with pool.container() as c:  # the parent's pool is unharmed
            c.exec(["true"], check=True)


# -- starts that fail -------------------------------------------------------------------------


def test_an_unknown_image_fails_at_construction_and_leaves_nothing(warmed_up):
    with pytest.raises(errors.ImageNotFoundError):
        sandkit.Container("no-such-image:1").start()  # the store's own directories made
    before = host_footprint()
    with pytest.raises(errors.ImageNotFoundError, match="no-such-image"):
        sandkit.Pool("no-such-image:1", size=2)
    assert host_footprint() == before


def test_a_bad_option_fails_at_construction_and_leaves_nothing(busybox, no_leaks):
    with pytest.raises(errors.LimitsError):
        sandkit.Pool(busybox, size=2, memory="lots")
    with pytest.raises(TypeError, match="memroy"):
        sandkit.Pool(busybox, size=2, memroy="1g")
    # a failure only a start finds: the first start, in the caller's thread, raises it
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.PortInUseError):
            sandkit.Pool(busybox, size=1, max_containers=1, ports=[f"127.0.0.1:{port}:80"])


def test_failing_starts_back_off_and_reach_the_waiting_callers(tmp_path, no_leaks, new_inits):
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    with sandkit.Pool(sandkit.Image.from_directory(rootfs), size=1, max_containers=1) as pool:
        pool.wait_ready()
        [held] = _held(pool, 1)
        shutil.rmtree(rootfs)  # every start from now on fails
        began = time.monotonic()
        _leave([held])
        failing = pytest.raises(errors.PoolStartError, match="could not start a container")
        with failing as caught, pool.container(timeout=60):
            pass
        assert isinstance(caught.value.__cause__, errors.SandkitError)
        wait_until(lambda: pool.stats.failed >= 4, "more failed starts")
        # no spinning: each retry came after its delay
        assert time.monotonic() - began >= sum(retry_delay(n) for n in range(1, 4))
        assert pool.stats.failed < 20
    assert not new_inits()


def test_retry_delays_grow_to_a_ceiling():
    delays = [retry_delay(n) for n in range(12)]
    assert delays[0] == 0
    assert all(a < b for a, b in itertools.pairwise(delays[:7]))
    assert max(delays) == delays[-1] <= 5.0


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"size": 0}, "size= must be"),
        ({"size": "8"}, "size= must be"),
        ({"size": True}, "size= must be"),
        ({"size": 4, "max_containers": 3}, r"max_containers= must be .* >= size \(4\)"),
        ({"size": 2, "max_containers": 10**9}, "RLIMIT_NOFILE"),
        ({"size": 10**9}, "RLIMIT_NOFILE"),
        ({"size": 2, "detach": True}, "leave out detach=True"),
        ({"size": 1, "ports": ["127.0.0.1:8080:80"]}, r"leave the host port out .*80/tcp"),
    ],
)
def test_bad_pool_arguments_are_refused_before_anything_starts(
    busybox, arguments, message, new_inits
):
    with pytest.raises(errors.PoolSpecError, match=message):
        sandkit.Pool(busybox, **arguments)
    assert not new_inits()


def test_an_async_pool_hands_out_nothing_before_it_is_started(busybox):
    async def main() -> None:
        pool = sandkit.AsyncPool(busybox, size=1)
        with pytest.raises(errors.PoolClosedError, match="not started"):
            async with pool.container():
                pass
        await pool.close()
        await pool.close()

    anyio.run(main)


# -- async --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_async_pool(busybox, backend, no_leaks):
    async def main() -> tuple[set[str], list[bytes], sandkit.PoolStats]:
        ids: set[str] = set()
        listings: list[bytes] = []

        async def use() -> None:
            async with pool.container() as c:
                listings.append((await c.exec(["ls", "/tmp"])).stdout)
                await c.exec(["sh", "-c", "echo x > /tmp/mine"], check=True)
                ids.add(c.id)

        async with sandkit.AsyncPool(busybox, size=2) as pool:
            await pool.wait_ready()
            async with anyio.create_task_group() as tasks:
                for _ in range(8):
                    tasks.start_soon(use)
            stats = pool.stats
        return ids, listings, stats

    ids, listings, stats = anyio.run(main, backend=backend)
    assert len(ids) == 8
    assert listings == [b""] * 8
    assert stats.hits + stats.misses == 8
    assert stats.hits >= 2


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_a_cancelled_waiter_takes_nothing_with_it(busybox, backend, no_leaks):
    async def main() -> sandkit.PoolStats:
        async with sandkit.AsyncPool(busybox, size=1, max_containers=1) as pool:
            async with pool.container() as held:
                with anyio.move_on_after(0.1) as scope:  # the cap: nothing can start for it
                    async with pool.container():
                        pass
                assert scope.cancelled_caught
                await held.exec(["true"], check=True)
            async with pool.container(timeout=60) as c:  # its place is not kept for it
                await c.exec(["true"], check=True)
                return pool.stats

    stats = anyio.run(main, backend=backend)
    assert (stats.misses, stats.in_use) == (2, 1)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_async_pool_close_with_a_container_in_use(busybox, backend, no_leaks, new_inits):
    async def main() -> None:
        async with sandkit.AsyncPool(busybox, size=1) as pool, pool.container() as c:
            await pool.close()
            with pytest.raises(errors.ContainerNotRunningError, match="pool was closed"):
                await c.exec(["true"])

    anyio.run(main, backend=backend)
    assert not new_inits()


# -- python=True --------------------------------------------------------------------------------


def test_a_python_pool_hands_out_containers_with_their_interpreter_started(no_leaks):
    with sandkit.Pool("host", size=2, python=True) as pool:
        pool.wait_ready()
        with pool.container() as c:
            # the interpreter runs before anything was asked of the container
            assert b"python3" in c.exec(["sh", "-c", "cat /proc/[0-9]*/comm"]).stdout
            c.run_code("secret = 42")
            assert c.run_code("secret").value == "42"
        with pool.container() as c:
            assert b"python3" in c.exec(["sh", "-c", "cat /proc/[0-9]*/comm"]).stdout
            result = c.run_code("secret")  # a fresh interpreter in a fresh container
            assert result.error is not None and result.error.name == "NameError"
            assert c.run_code("1 + 1").value == "2"


def test_a_python_pool_of_an_image_without_python_fails_at_construction(busybox, no_leaks):
    with pytest.raises(errors.SessionError, match="python3"):
        sandkit.Pool(busybox, size=2, python=True)


# -- spares -------------------------------------------------------------------------------------


def test_pool_containers_leave_no_spare_behind(busybox, monkeypatch, no_leaks):
    # Spares on, as users have them: the pool starts its containers' successors itself, within
    # its limits, so their stops ask for no spare that would outlive the pool.
    monkeypatch.setenv("SANDKIT_PRESPAWN", "1")
    prespawn.drain()
    with sandkit.Pool(busybox, size=2) as pool:
        for _ in range(3):
            with pool.container() as c:
                c.exec(["true"], check=True)
        wait_until(lambda: pool.stats.destroyed == 3, "the used containers' teardown")
    # (a stop's request for a spare is filed at once: after close() it would show here)
    assert prespawn.spares() == []
    assert not prespawn._pool._wanted
    assert prespawn._pool._making is None
