"""sandkit.runtime.cgroups: limits parsing, detection, real v1 enforcement, v2 on a fake tree and on
a private (controller-less) cgroup2 mount.

Real-kernel tests use their own top directory (`sandkit-test-<pid>`) so they never touch the
cgroups of other sandkit processes running on the same machine.
"""

from __future__ import annotations

import errno
import glob
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import attrs
import pytest
from polling import wait_until

from sandkit.errors import CgroupError, HostUnsupportedError, LimitsError
from sandkit.runtime import cgroups
from sandkit.runtime.cgroups import ContainerCgroup, Limits, _fs, detect
from sandkit.runtime.cgroups.base import HostDirs
from sandkit.runtime.cgroups.detect import CgroupHost
from sandkit.sizes import parse_size

MiB = 1 << 20
TEST_NAME = f"sandkit-test-{os.getpid()}"

# --- Limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("256m", 256 * MiB),
        ("1g", 1 << 30),
        ("1.5GiB", 3 << 29),
        ("512k", 512 << 10),
        ("100", 100),
        ("100b", 100),
        (" 64 MB ", 64 * MiB),
        (7, 7),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "12x", "-5m", "m", True, 1.5, -1])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(LimitsError):
        parse_size(bad)  # type: ignore[arg-type]


def test_limits_docker_semantics() -> None:
    lim = Limits(memory="256m", cpus=1.5, cpu_shares=1024, pids=10)
    assert lim.memory == 256 * MiB
    assert lim.cpu_quota_us() == 150_000
    assert lim.cpu_weight() == 100  # the default shares map to the default weight
    assert lim.swap_total() == 512 * MiB and lim.swap_only() == 256 * MiB  # Docker: unset = 2x
    assert Limits(memory="256m", memory_swap="256m").swap_only() == 0
    assert Limits(memory="256m", memory_swap=-1).swap_only() == -1
    assert (
        Limits(cpu_shares=2).cpu_weight() == 1 and Limits(cpu_shares=262144).cpu_weight() == 10_000
    )
    assert Limits().empty and not lim.empty


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"memory": "1m"}, "minimum"),
        ({"memory_swap": "1g"}, "needs a memory"),
        ({"memory": "1g", "memory_swap": "512m"}, "cannot be smaller"),
        ({"cpus": 0}, "between"),
        ({"cpus": 10_000}, "between"),
        ({"cpu_shares": 1}, "2 to 262144"),
        ({"pids": 0}, ">= 1"),
        ({"pids": "5"}, "whole number"),
        ({"cpus": "1"}, "number"),
    ],
)
def test_limits_validation(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(LimitsError, match=words):
        Limits(**kwargs)  # type: ignore[arg-type]


# --- detection -------------------------------------------------------------------------------

HYBRID_MOUNTINFO = """\
25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
30 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""
HYBRID_SELF = "4:memory:/some/where\n2:cpuacct:/\n1:cpu:/\n8:pids:/\n0::/\n"


def test_detect_hybrid_is_v1() -> None:
    host = detect(mountinfo=HYBRID_MOUNTINFO, self_cgroup=HYBRID_SELF, euid=0)
    assert host.version == 1
    assert host.parents["memory"] == "/sys/fs/cgroup/memory"
    assert host.controllers == {"memory", "cpu", "pids"}


def test_detect_rootless_v1_explains() -> None:
    host = detect(mountinfo=HYBRID_MOUNTINFO, self_cgroup=HYBRID_SELF, euid=1000)
    assert not host.usable and "cannot be delegated" in (host.why_not or "")
    with pytest.raises(HostUnsupportedError, match="rlimits"):
        ContainerCgroup.create(host, "c1", Limits(memory="64m"))
    # no limits, no accounting: no cgroup and no error, whatever the host
    assert ContainerCgroup.create(host, "c1", Limits()) is None


def test_detect_cometed_cpu_cpuacct() -> None:
    info = "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    host = detect(mountinfo=info, self_cgroup="1:cpu,cpuacct:/\n", euid=0)
    assert host.parents["cpu"] == host.parents["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"


def test_detect_none() -> None:
    host = detect(mountinfo="", self_cgroup="", euid=0)
    assert host.version == 0 and not host.usable


# --- helpers for real-kernel tests -------------------------------------------------------------


def join(fds: list[int]) -> None:
    """What the init's exec child does first: write 0 to cgroup.procs of each fd (protocol)."""
    for fd in fds:
        _fs.write(fd, "cgroup.procs", "0")


def fork(body: Callable[[], int], fds: list[int] = ()) -> int:  # type: ignore[assignment]
    """Fork a child that joins ``fds`` and runs ``body``; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            join(list(fds))
            code = body()
        finally:
            os._exit(code)
    return pid


def joined(pid: int, fds: list[int]) -> None:
    """Waits until `pid` (a `fork` child) is in each cgroup directory of `fds`."""
    dirs = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
    wait_until(
        lambda: all(str(pid) in read(f"{d}/cgroup.procs").split() for d in dirs),
        f"{pid} to join {dirs}",
    )


def wait(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def sandkit_dirs(name: str) -> list[str]:
    return sorted(glob.glob(f"/sys/fs/cgroup/*/{name}/**/", recursive=True))


# --- real v1 (this machine) ----------------------------------------------------------------------

real_v1 = pytest.mark.skipif(
    os.geteuid() != 0 or cgroups.host().version != 1, reason="needs root on a cgroup v1/hybrid host"
)


@pytest.fixture
def v1host() -> Iterator[CgroupHost]:
    host = attrs.evolve(cgroups.host(), name=TEST_NAME)
    yield host
    HostDirs.forget()
    cgroups.reap_stale(host)
    for d in glob.glob(f"/sys/fs/cgroup/*/{TEST_NAME}/*/"):
        os.rmdir(d)  # our own tag dir: empty if every test destroyed its containers
    for d in glob.glob(f"/sys/fs/cgroup/*/{TEST_NAME}/"):
        os.rmdir(d)


def hog(nbytes: int) -> Callable[[], int]:
    def body() -> int:
        data = b"\x01" * nbytes  # really touches every page, unlike a zeroed bytearray
        return 0 if len(data) else 1

    return body


@real_v1
def test_v1_memory_limit_oom_kills_and_is_reported(v1host: CgroupHost) -> None:
    with ContainerCgroup.create(
        v1host, "oom", Limits(memory="32m", memory_swap="32m"), accounting=True
    ) as cg:
        assert cg is not None
        ex = cg.exec_cgroup(1)
        status = wait(fork(hog(128 * MiB), ex.fds()))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        usage = ex.finish()
        assert usage.oom_killed
        assert usage.memory_peak is not None and usage.memory_peak <= 32 * MiB


@real_v1
def test_v1_exec_usage_is_plausible(v1host: CgroupHost) -> None:
    def work() -> int:
        data = b"\x02" * (40 * MiB)
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        return len(data) & 0

    with ContainerCgroup.create(v1host, "usage", Limits(memory="256m"), accounting=True) as cg:
        assert cg is not None
        ex = cg.exec_cgroup(7)
        assert wait(fork(work, ex.fds())) == 0
        usage = ex.finish()
        assert not usage.oom_killed
        assert 40 * MiB <= (usage.memory_peak or 0) < 200 * MiB
        assert 0.15e9 <= usage.cpu_ns < 2e9
        stats = cg.stats()  # the exec's memory was charged to the container too (hierarchy)
        assert (stats.memory_peak or 0) >= 40 * MiB and (stats.cpu_ns or 0) >= 0.15e9


@real_v1
def test_v1_pids_limit_makes_fork_fail(v1host: CgroupHost) -> None:
    def forker() -> int:
        children, failed = [], 0
        for _ in range(10):
            try:
                pid = os.fork()
            except BlockingIOError:  # EAGAIN: the pids controller said no
                failed += 1
                continue
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return len(children)

    with ContainerCgroup.create(v1host, "pids", Limits(pids=4)) as cg:
        assert cg is not None
        status = wait(fork(forker, cg.join_fds()))
        assert os.WEXITSTATUS(status) == 3  # itself + 3 children = 4


@real_v1
def test_v1_cpus_caps_a_busy_loop(v1host: CgroupHost) -> None:
    def spin() -> int:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
        return 0

    with ContainerCgroup.create(v1host, "cpu", Limits(cpus=0.5), accounting=True) as cg:
        assert cg is not None
        start = time.monotonic()
        pid = fork(spin)
        cg.add_pid(pid)  # the v1 join path for an init: the host writes its pid
        wait(pid)
        ratio = (cg.stats().cpu_ns or 0) / 1e9 / (time.monotonic() - start)
        assert 0.3 <= ratio <= 0.65, ratio


@real_v1
def test_v1_destroy_kills_and_leaves_nothing(v1host: CgroupHost) -> None:
    lim = Limits(memory="64m", cpus=1, pids=50)
    ContainerCgroup.create(v1host, "warm", lim, accounting=True).destroy()  # type: ignore[union-attr]
    before = sandkit_dirs(TEST_NAME)  # sandkit's own levels, made once per host process
    cg = ContainerCgroup.create(v1host, "gone", lim, accounting=True)
    assert cg is not None
    ex = cg.exec_cgroup(1)
    sleepers = [
        fork(lambda: time.sleep(30) or 0, cg.join_fds()),
        fork(lambda: time.sleep(30) or 0, ex.fds()),
    ]
    joined(sleepers[0], cg.join_fds())
    joined(sleepers[1], ex.fds())
    cg.destroy()
    for pid in sleepers:
        assert os.WTERMSIG(wait(pid)) == signal.SIGKILL
    cg.destroy()  # idempotent
    ex.close()  # after the container went: harmless
    assert sandkit_dirs(TEST_NAME) == before
    assert not glob.glob(f"/sys/fs/cgroup/*/{TEST_NAME}/*/gone")


@real_v1
def test_v1_use_hierarchy_is_on(v1host: CgroupHost) -> None:
    with ContainerCgroup.create(v1host, "h", Limits(memory="64m")) as cg:
        assert cg is not None
        assert _fs.read_int(cg.join_fds()[0], "memory.use_hierarchy") == 1


@real_v1
def test_v1_reap_stale_removes_dead_hosts_tree(v1host: CgroupHost) -> None:
    dead = fork(lambda: 0)
    wait(dead)  # a pid that no longer exists
    for mount in set(v1host.parents.values()):
        os.makedirs(f"{mount}/{TEST_NAME}/{dead}-1/c1/x1")
    removed = cgroups.reap_stale(v1host)
    assert len(removed) == len(set(v1host.parents.values()))
    assert not glob.glob(f"/sys/fs/cgroup/*/{TEST_NAME}/{dead}-1")


@real_v1
def test_v1_create_and_destroy_is_fast(v1host: CgroupHost) -> None:
    lim = Limits(memory="64m", cpus=1, pids=100)
    ContainerCgroup.create(v1host, "warm", lim).destroy()  # type: ignore[union-attr]
    start = time.perf_counter()
    for i in range(20):
        ContainerCgroup.create(v1host, f"f{i}", lim).destroy()  # type: ignore[union-attr]
    per = (time.perf_counter() - start) / 20
    assert per < 0.01, per


# --- v2 against a fake tree ----------------------------------------------------------------

V2_FILES = {
    "cgroup.procs": "",
    "cgroup.controllers": "cpu memory pids io",
    "cgroup.subtree_control": "",
    # files we write start empty: our writes do not truncate (cgroupfs files need no truncation)
    "cgroup.kill": "",
    "cgroup.events": "populated 0\n",
    "memory.max": "",
    "memory.swap.max": "",
    "memory.current": "4096",
    "memory.peak": "8192",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    "cpu.max": "",
    "cpu.weight": "",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\n",
    "pids.max": "",
    "pids.current": "2",
}


def populate(path: str) -> None:
    for name, text in V2_FILES.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)


@pytest.fixture
def fake_v2(tmp_path, monkeypatch) -> Iterator[tuple[CgroupHost, str]]:  # type: ignore[no-untyped-def]
    """A directory that behaves enough like cgroupfs: mkdir makes the interface files, rmdir of a
    cgroup with child cgroups is EBUSY, writes land in plain files we can inspect."""
    root = str(tmp_path / "cg")
    os.makedirs(f"{root}/user/app")
    populate(root), populate(f"{root}/user"), populate(f"{root}/user/app")
    real_make, real_rmdir = _fs.make_dir, os.rmdir

    def make_dir(parent_fd: int, name: str, exist_ok: bool = False) -> int:
        fd = real_make(parent_fd, name, exist_ok)
        if not os.path.exists(f"/proc/self/fd/{fd}/cgroup.procs"):
            populate(f"/proc/self/fd/{fd}")
        return fd

    def rmdir(path: str, *, dir_fd: int | None = None) -> None:
        full = (
            os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            if dir_fd is not None
            else path
        )
        if not full.startswith(root):
            return real_rmdir(path, dir_fd=dir_fd)
        if not os.path.isdir(full):
            raise FileNotFoundError(errno.ENOENT, "gone", full)
        if any(e.is_dir() for e in os.scandir(full)):
            raise OSError(errno.EBUSY, "has children", full)
        for entry in os.listdir(full):
            os.unlink(os.path.join(full, entry))
        real_rmdir(full)

    monkeypatch.setattr(_fs, "make_dir", make_dir)
    monkeypatch.setattr(os, "rmdir", rmdir)
    info = f"30 25 0:27 / {root} rw - cgroup2 cgroup2 rw\n"
    host = detect(mountinfo=info, self_cgroup="0::/user/app\n", euid=1000)
    yield host, root
    HostDirs.forget()


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_v2_fake_delegated_user(fake_v2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    host, root = fake_v2
    own = f"{root}/user/app"
    assert host.version == 2 and host.usable and host.rootless
    assert host.parents["memory"] == own and host.controllers == {"cpu", "memory", "pids"}

    lim = Limits(memory="64m", memory_swap="96m", cpus=0.5, cpu_shares=2048, pids=30)
    cg = ContainerCgroup.create(host, "c1", lim, accounting=True)
    assert cg is not None
    (tag,) = [e.name for e in os.scandir(f"{own}/sandkit") if e.is_dir()]
    cdir = f"{own}/sandkit/{tag}/c1"
    # controllers handed down level by level; limits written in v2 syntax
    for level in (own, f"{own}/sandkit", f"{own}/sandkit/{tag}"):
        assert read(f"{level}/cgroup.subtree_control") == "+cpu +memory +pids"
    assert read(f"{cdir}/memory.max") == str(64 * MiB)
    assert read(f"{cdir}/memory.swap.max") == str(32 * MiB)
    assert read(f"{cdir}/cpu.max") == "50000 100000"
    assert read(f"{cdir}/cpu.weight") == "200"
    assert read(f"{cdir}/pids.max") == "30"
    assert cg.join_fds() and os.readlink(f"/proc/self/fd/{cg.join_fds()[0]}") == cdir

    stats = cg.stats()
    assert (stats.memory_current, stats.memory_peak, stats.cpu_ns, stats.pids_current) == (
        4096,
        8192,
        1_500_000,
        2,
    )

    ex = cg.exec_cgroup(5)
    assert os.path.isdir(f"{cdir}/init") and os.path.isdir(f"{cdir}/x5")
    assert read(f"{cdir}/cgroup.subtree_control") == "+memory"  # after the init moved out
    usage = ex.finish()
    assert usage.cpu_ns == 1_500_000 and usage.memory_peak == 8192 and usage.oom_killed
    assert not os.path.exists(f"{cdir}/x5")

    # The fake rmdir empties a directory before removing it, so the writes are watched instead.
    killed = []
    real_write = _fs.write

    def write(dir_fd: int, name: str, value: str | int) -> None:
        if name == "cgroup.kill":
            killed.append((os.readlink(f"/proc/self/fd/{dir_fd}"), str(value)))
        real_write(dir_fd, name, value)

    monkeypatch.setattr(_fs, "write", write)
    cg.exec_cgroup(6)  # left open: destroy must take it
    cg.destroy()
    # v2 kills a whole subtree at once by writing "1" to its cgroup.kill (kernel cgroup-v2.rst)
    assert killed == [(cdir, "1")]
    assert not os.path.exists(cdir)
    cg.destroy()


def test_v2_fake_no_internal_processes(fake_v2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Our own cgroup holds us: enabling controllers there is EBUSY until we move to a leaf."""
    host, root = fake_v2
    own = f"{root}/user/app"
    with open(f"{own}/cgroup.procs", "w") as f:
        f.write(f"{os.getpid()}\n")
    real_write = _fs.write
    busy = {"left": 1}

    def write(dir_fd: int, name: str, value: str | int) -> None:
        if (
            name == "cgroup.subtree_control"
            and os.readlink(f"/proc/self/fd/{dir_fd}") == own
            and busy["left"]
        ):
            busy["left"] -= 1
            raise OSError(errno.EBUSY, "internal process")
        real_write(dir_fd, name, value)

    monkeypatch.setattr(_fs, "write", write)
    cg = ContainerCgroup.create(host, "c2", Limits(memory="64m"))
    assert cg is not None
    (leaf,) = [d for d in os.listdir(own) if d.startswith("sandkit-host-")]
    assert read(f"{own}/{leaf}/cgroup.procs") == str(os.getpid())
    cg.destroy()


def test_v2_fake_other_processes_give_a_clear_error(fake_v2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    host, root = fake_v2
    own = f"{root}/user/app"
    with open(f"{own}/cgroup.procs", "w") as f:
        f.write(f"{os.getpid()}\n1\n")
    real_write = _fs.write

    def write(dir_fd: int, name: str, value: str | int) -> None:
        if name == "cgroup.subtree_control" and os.readlink(f"/proc/self/fd/{dir_fd}") == own:
            raise OSError(errno.EBUSY, "internal process")
        real_write(dir_fd, name, value)

    monkeypatch.setattr(_fs, "write", write)
    with pytest.raises(CgroupError, match="Delegate=yes"):
        ContainerCgroup.create(host, "c3", Limits(memory="64m"))
    assert not os.path.exists(f"{own}/sandkit/c3")


def test_v2_fake_undelegated_user() -> None:
    info = "30 25 0:27 / /nonexistent-cg rw - cgroup2 cgroup2 rw\n"
    host = detect(mountinfo=info, self_cgroup="0::/user.slice\n", euid=1000)
    assert host.version == 2 and "not delegated" in (host.why_not or "")


def test_v2_fake_reap_stale(fake_v2) -> None:  # type: ignore[no-untyped-def]
    host, root = fake_v2
    own = f"{root}/user/app"
    dead = fork(lambda: 0)
    wait(dead)
    for path in (f"{own}/sandkit/{dead}-1/c9", f"{own}/sandkit-host-{dead}-1"):
        os.makedirs(path)
        populate(path)
    os.makedirs(f"{own}/sandkit/not-ours")
    removed = cgroups.reap_stale(host)
    assert sorted(removed) == sorted([f"{own}/sandkit/{dead}-1", f"{own}/sandkit-host-{dead}-1"])
    assert os.path.isdir(f"{own}/sandkit/not-ours")


# --- v2 on a private cgroup2 mount (real kernel, no controllers on this hybrid host) ------------


@pytest.fixture
def cgroup2_mount(tmp_path) -> Iterator[tuple[CgroupHost, str]]:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("mounting cgroup2 needs root")
    mnt = str(tmp_path / "cg2")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "cgroup2", "none", mnt], capture_output=True).returncode:
        pytest.skip("cannot mount cgroup2 here")
    top = f"{TEST_NAME}-v2"
    os.mkdir(f"{mnt}/{top}")  # a parent of our own, so nothing we do touches the tree's root
    # A controller-less tree: the host says so; the runtime paths below need none of them.
    host = CgroupHost(
        2, dict.fromkeys(("memory", "cpu", "pids"), f"{mnt}/{top}"), frozenset(), False
    )
    try:
        yield host, f"{mnt}/{top}"
    finally:
        HostDirs.forget()
        for d in sorted(glob.glob(f"{mnt}/{top}/**/", recursive=True), key=len, reverse=True):
            os.rmdir(d)
        subprocess.run(["umount", mnt], check=True, capture_output=True)


def test_v2_real_clone_join_split_kill(cgroup2_mount) -> None:  # type: ignore[no-untyped-def]
    from sandkit.runtime.cgroups.v2 import V2ContainerCgroup

    host, top = cgroup2_mount
    cg = V2ContainerCgroup(host, "real", Limits(), accounting=True)
    cg._build()  # create() would refuse: this tree has no memory controller to account with
    (cdir,) = glob.glob(f"{top}/sandkit/*/real")
    init = fork(lambda: time.sleep(30) or 0, cg.join_fds())  # stands in for the init
    joined(init, cg.join_fds())
    assert read(f"{cdir}/cgroup.procs").split() == [str(init)]

    def spin() -> int:
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
        return 0

    ex = cg.exec_cgroup(1)  # moves the init into init/ (no internal processes)
    assert read(f"{cdir}/init/cgroup.procs").split() == [str(init)]
    assert read(f"{cdir}/cgroup.procs") == ""
    assert wait(fork(spin, ex.fds())) == 0
    usage = ex.finish()
    assert usage.cpu_ns >= 0.08e9 and usage.memory_peak is None and not usage.oom_killed

    second = cg.exec_cgroup(2)
    straggler = fork(lambda: time.sleep(30) or 0, second.fds())
    joined(straggler, second.fds())
    cg.destroy()  # cgroup.kill takes the whole subtree
    assert (
        os.WTERMSIG(wait(init)) == signal.SIGKILL and os.WTERMSIG(wait(straggler)) == signal.SIGKILL
    )
    assert not os.path.exists(cdir)
