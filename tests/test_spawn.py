"""spawn_init on the real kernel, with Debian's static busybox standing in for the init.

Needs root (it also checks rootless mode by dropping to an unprivileged uid in a forked
process) and /bin/busybox (apt-get install busybox-static).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import pickle
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_busybox_rootfs, our_children, unprivileged_ids
from polling import wait_until

import sandkit
from sandkit.errors import ContainerStartError, HostUnsupportedError
from sandkit.runtime.spawn import sealed_exec_memfd, spawn_init

BUSYBOX = Path("/bin/busybox")
NOBODY = 65534
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2) in linux/nsfs.h: an fd of a namespace's parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static"),
]


@pytest.fixture(scope="module")
def busybox() -> Iterator[int]:
    fd = sealed_exec_memfd(BUSYBOX, "busybox")
    yield fd
    os.close(fd)


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


_children_before: set[str] = set()


@pytest.fixture(autouse=True)
def _children_baseline() -> None:
    # Other tests' long-lived helpers (a private dockerd, say) are our children too.
    global _children_before
    _children_before = set(our_children())


def no_children_left() -> bool:
    """No child (running or zombie) that the test started is left."""
    return set(our_children()) <= _children_before


def run_sh(exe: int, script: str, **kwargs: Any) -> tuple[list[bytes], int]:
    """Runs busybox sh -c script as the init; returns what it sent on fd 3 and its status."""
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with host:
        with child_end:
            init = spawn_init(child_end, exec_fd=exe, argv=["sh", "-c", script], **kwargs)
        with init:
            packets = list(iter(lambda: host.recv(65536), b""))
            return packets, init.wait()


def in_forked(fn: Callable[[], Any]) -> Any:
    """Runs fn in a forked process (to change uids or fd numbers without harming pytest) and
    returns its result, or re-raises its exception."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            outcome = (False, (type(e), str(e), traceback.format_exc()))
        with os.fdopen(w, "wb") as f:
            pickle.dump(outcome, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        ok, value = pickle.load(f)
    os.waitpid(pid, 0)
    if ok:
        return value
    exc_type, msg, tb = value
    print(tb, file=sys.stderr)
    raise exc_type(msg)


def become_nobody() -> None:
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    # Changing uid made us non-dumpable, which would make /proc/<child>/uid_map root's; a
    # real unprivileged user never is (sandkit does not change it for the caller).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


# --- what the init gets ---------------------------------------------------------------------


def test_init_is_pid_1(busybox: int) -> None:
    packets, status = run_sh(busybox, "echo $$ >&3", user_namespace=False)
    assert (packets, status) == ([b"1\n"], 0)


def test_new_namespaces(busybox: int) -> None:
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with (
        host,
        child_end,
        spawn_init(
            child_end, user_namespace=False, network=True, exec_fd=busybox, argv=["sleep", "60"]
        ) as init,
    ):
        for ns in ("pid", "mnt", "ipc", "uts", "cgroup", "net"):
            mine = os.readlink(f"/proc/self/ns/{ns}")
            # pid: the init is *in* the new namespace (pid_for_children is for its children).
            assert os.readlink(f"/proc/{init.pid}/ns/{ns}") != mine, ns
        assert os.readlink(f"/proc/{init.pid}/ns/user") == os.readlink("/proc/self/ns/user")


def test_only_loopback_in_new_network(busybox: int) -> None:
    packets, _ = run_sh(busybox, "cat /proc/net/dev >&3", user_namespace=False, network=True)
    names = {line.split(b":")[0].strip() for line in b"".join(packets).splitlines()[2:]}
    assert names == {b"lo"}


def test_host_network_when_not_asked(busybox: int) -> None:
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with (
        host,
        child_end,
        spawn_init(child_end, user_namespace=False, exec_fd=busybox, argv=["sleep", "60"]) as init,
    ):
        assert os.readlink(f"/proc/{init.pid}/ns/net") == os.readlink("/proc/self/ns/net")


def test_fd_table_is_stdio_and_control_only(busybox: int) -> None:
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leaky = os.open("/etc/hostname", os.O_RDONLY)  # inheritable: must not get in anyway
    os.set_inheritable(leaky, True)
    try:
        with (
            host,
            child_end,
            spawn_init(
                child_end, user_namespace=False, exec_fd=busybox, argv=["sleep", "60"]
            ) as init,
        ):
            fds = {
                int(n): os.readlink(f"/proc/{init.pid}/fd/{n}")
                for n in os.listdir(f"/proc/{init.pid}/fd")
            }
            assert sorted(fds) == [0, 1, 2, 3]
            assert fds[0] == fds[1] == fds[2] == "/dev/null"
            assert fds[3] == os.readlink(f"/proc/self/fd/{child_end.fileno()}")
    finally:
        os.close(leaky)


def test_empty_environment_and_default_signals(busybox: int) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python's, must not get in
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with (
        host,
        child_end,
        spawn_init(child_end, user_namespace=False, exec_fd=busybox, argv=["sleep", "60"]) as init,
    ):
        assert Path(f"/proc/{init.pid}/environ").read_bytes() == b""
        status = Path(f"/proc/{init.pid}/status").read_text()
        assert "SigBlk:\t0000000000000000" in status
        assert "SigIgn:\t0000000000000000" in status


@pytest.mark.parametrize("target", [3, 4])
def test_fd_number_collisions(busybox: int, target: int) -> None:
    """The control socket already at 3, or the exec memfd at 3 (which 3 must then replace)."""

    def spawn_with_fd_at_3() -> list[bytes]:
        host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        src = child_end.fileno() if target == 3 else busybox
        os.dup2(src, 3)  # fd 3 may be anything in pytest; in this fork we own it
        exe, ctl = (busybox, socket.socket(fileno=3)) if target == 3 else (3, child_end)
        with spawn_init(
            ctl, user_namespace=False, exec_fd=exe, argv=["sh", "-c", "echo ok >&3"]
        ) as init:
            ctl.close()
            child_end.close()
            out = [host.recv(100)]
            assert init.wait() == 0
        return out

    assert in_forked(spawn_with_fd_at_3) == [b"ok\n"]


# --- user namespaces ------------------------------------------------------------------------


def test_user_namespace_as_root(busybox: int) -> None:
    packets, status = run_sh(
        busybox, "id -u >&3; id -g >&3; cat /proc/self/uid_map >&3", user_namespace=True
    )
    assert status == 0
    assert packets[:2] == [b"0\n", b"0\n"]
    assert packets[2].split() == [b"0", b"0", b"1"]


def test_user_namespace_unprivileged(busybox: int) -> None:
    def rootless() -> tuple[list[bytes], int, list[bytes]]:
        become_nobody()
        packets, status = run_sh(
            busybox,
            "id -u >&3; id -g >&3; cat /proc/self/uid_map >&3; echo $$ >&3",
            user_namespace=True,
            network=True,
        )
        return packets, status, []

    packets, status, _ = in_forked(rootless)
    assert status == 0
    assert packets[:2] == [b"0\n", b"0\n"]
    assert packets[2].split() == [b"0", str(NOBODY).encode(), b"1"]
    assert packets[3] == b"1\n"


def test_unprivileged_without_user_namespace_is_refused(busybox: int) -> None:
    def no_userns() -> str:
        become_nobody()
        try:
            run_sh(busybox, "true", user_namespace=False)
        except HostUnsupportedError as e:
            return str(e)
        return "no error"

    msg = in_forked(no_userns)
    assert "root" in msg and "user_namespace=True" in msg


# --- a user namespace nested under another one (a network's, issue 17) -------------------------


@contextlib.contextmanager
def userns_holder(
    *unshare_args: str, ids: tuple[int, int] | None = None
) -> Iterator[tuple[int, int]]:
    """A `sleep` in a user namespace of its own, made by `unshare --user <unshare_args>` as the
    calling user (or as ``ids``, a uid and gid), and an fd of that namespace: (its pid, the fd)."""
    as_ids = {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}
    holder = subprocess.Popen(["unshare", "--user", *unshare_args, "sleep", "60"], **as_ids)
    try:
        # unshare writes the maps before it execs sleep
        wait_until(
            lambda: Path(f"/proc/{holder.pid}/comm").read_text() == "sleep\n",
            "the holder to enter its user namespace",
        )
        fd = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield holder.pid, fd
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def ns_id(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def parent_userns_id(pid: int) -> tuple[int, int]:
    """The kernel's answer to which user namespace is the parent of the one of ``pid``."""
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        parent = fcntl.ioctl(fd, NS_GET_PARENT)
    finally:
        os.close(fd)
    try:
        return ns_id(parent)
    finally:
        os.close(parent)


def nested_spawn_facts(exe: int) -> dict[str, Any]:
    """Spawns an init nested under a holder's user namespace; what the kernel says of it."""
    with userns_holder("--map-root-user", "--net") as (_, userns):
        host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        script = (
            "id -u >&3; id -g >&3; cat /proc/self/uid_map /proc/self/gid_map >&3; exec sleep 60"
        )
        with host, child_end:
            init = spawn_init(
                child_end,
                user_namespace=True,
                network=True,
                parent_userns=userns,
                exec_fd=exe,
                argv=["sh", "-c", script],
            )
            with init:
                inside = [host.recv(100) for _ in range(4)]
                return {
                    "nested": parent_userns_id(init.pid) == ns_id(userns),
                    "inside": [line.split() for line in inside],
                    "host_view": Path(f"/proc/{init.pid}/uid_map").read_text().split(),
                    "our_child": Path(f"/proc/{init.pid}/stat").read_text().split()[3],
                    "pid": os.getpid(),
                    "uid": os.geteuid(),
                }


def check_nested_facts(facts: dict[str, Any]) -> None:
    assert facts["nested"]
    # root inside, and the parent's 0 is its root as seen from inside ("0 0 1")
    assert facts["inside"] == [[b"0"], [b"0"], [b"0", b"0", b"1"], [b"0", b"0", b"1"]]
    # from the host, the container's root is the caller, as without nesting
    assert facts["host_view"] == ["0", str(facts["uid"]), "1"]
    assert facts["our_child"] == str(facts["pid"])  # not the helper's: it is gone


def test_nested_user_namespace_as_root(busybox: int) -> None:
    before = open_fds()
    check_nested_facts(nested_spawn_facts(busybox))
    assert open_fds() == before
    assert no_children_left()


def test_nested_user_namespace_rootless(busybox: int, as_unprivileged: Any) -> None:
    facts = as_unprivileged(nested_spawn_facts, busybox)
    assert facts["uid"] != 0
    check_nested_facts(facts)


@pytest.fixture
def cgroup2_leaf(tmp_path: Path) -> Iterator[Path]:
    """An empty cgroup of a cgroup2 tree mounted for the test (the host may be on v1)."""
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "cgroup2", "none", mnt], capture_output=True).returncode:
        pytest.skip("cannot mount cgroup2 here")
    leaf = mnt / f"sandkit-test-nested-{os.getpid()}"
    try:
        leaf.mkdir()
        yield leaf
    finally:
        with contextlib.suppress(FileNotFoundError):
            leaf.rmdir()
        subprocess.run(["umount", mnt], check=True)


def test_nested_user_namespace_into_cgroup(busybox: int, cgroup2_leaf: Path) -> None:
    dirfd = os.open(cgroup2_leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with host, child_end, contextlib.ExitStack() as stack:
        stack.callback(os.close, dirfd)
        _, userns = stack.enter_context(userns_holder("--map-root-user"))
        init = stack.enter_context(
            spawn_init(
                child_end,
                user_namespace=True,
                parent_userns=userns,
                cgroup_fd=dirfd,
                exec_fd=busybox,
                argv=["sleep", "60"],
            )
        )
        assert (cgroup2_leaf / "cgroup.procs").read_text().split() == [str(init.pid)]
        assert parent_userns_id(init.pid) == ns_id(userns)


def _nested_container() -> tuple[bool, list[str]]:
    root = make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    with userns_holder("--map-root-user", "--net") as (_, userns):
        container = sandkit.Container(sandkit.Image.from_directory(root))
        container._core._parent_userns = userns  # the hook the network code uses
        with container:
            init = container._core._init
            assert init is not None
            nested = parent_userns_id(init.pid) == ns_id(userns)
            r = container.exec(["sh", "-c", "id -u; cat /proc/self/uid_map; ls /sys/class/net"])
            container.write_file("/tmp/f", b"data")
            assert container.read_file("/tmp/f") == b"data"
    return nested, r.stdout.decode().split()


def test_container_in_nested_user_namespace(as_unprivileged: Any) -> None:
    nested, out = as_unprivileged(_nested_container)
    assert nested
    assert out == ["0", "0", "0", "1", "lo"]


@contextlib.contextmanager
def bad_parent_userns(kind: str) -> Iterator[int]:
    """An fd that cannot be a container's parent user namespace, of the ``kind`` asked."""
    if kind == "closed":
        # a high number: the spawn's own new fds take the lowest free ones
        fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 1000)
        os.close(fd)
        yield fd
    elif kind in ("file", "net namespace", "own user namespace"):
        path = {"file": "/etc/hostname", "net namespace": "/proc/self/ns/net"}
        fd = os.open(path.get(kind, "/proc/self/ns/user"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
    else:
        # "unmapped": no uid_map yet; "no root": the caller is uid 1 there, 0 is unmapped
        args = {"unmapped": (), "no root": ("--map-user=1", "--map-group=1")}[kind]
        with userns_holder(*args) as (_, fd):
            yield fd


BAD_PARENTS = {
    "closed": "not an open file descriptor",
    "file": "not the fd of a user namespace",
    "net namespace": "not the fd of a user namespace",
    "own user namespace": "not the fd of a user namespace other than this process's own",
    "unmapped": "must map your uid and gid",
    "no root": "must map uid 0 and gid 0",
}
# The host's user namespace is root's: an unprivileged caller may not join it at all.
ROOTLESS_BAD_PARENTS = {**BAD_PARENTS, "own user namespace": "Joining it was refused"}


def refusal_of_bad_parent(exe: int, kind: str) -> str:
    """The error a spawn under a bad parent user namespace raises; checks nothing is left."""
    with bad_parent_userns(kind) as fd:
        fds, children = open_fds(), set(our_children())
        with pytest.raises(ContainerStartError) as caught:
            run_sh(exe, "true", user_namespace=True, parent_userns=fd)
        assert open_fds() == fds
        assert set(our_children()) == children
    return str(caught.value)


@pytest.mark.parametrize("kind", BAD_PARENTS)
def test_bad_parent_userns_as_root(busybox: int, kind: str) -> None:
    assert BAD_PARENTS[kind] in refusal_of_bad_parent(busybox, kind)


@pytest.mark.parametrize("kind", BAD_PARENTS)
def test_bad_parent_userns_rootless(busybox: int, kind: str, as_unprivileged: Any) -> None:
    assert ROOTLESS_BAD_PARENTS[kind] in as_unprivileged(refusal_of_bad_parent, busybox, kind)


def refused_parent(exe: int, fd: int) -> str:
    with pytest.raises(ContainerStartError) as caught:
        run_sh(exe, "true", user_namespace=True, parent_userns=fd)
    return str(caught.value)


def test_parent_userns_owned_by_someone_else_is_refused(busybox: int, as_unprivileged: Any) -> None:
    with userns_holder("--map-root-user") as (_, roots):
        assert "Joining it was refused" in as_unprivileged(refused_parent, busybox, roots)
    # root may join any user namespace, but that would make its own memory non-dumpable
    fds = open_fds()
    with userns_holder("--map-root-user", ids=unprivileged_ids()) as (_, users):
        assert "Joining it was refused" in refused_parent(busybox, users)
    assert open_fds() == fds
    assert no_children_left()
    assert ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1


def test_parent_userns_needs_a_user_namespace(busybox: int) -> None:
    with userns_holder("--map-root-user") as (_, fd), pytest.raises(ValueError):
        run_sh(busybox, "true", user_namespace=False, parent_userns=fd)


# --- failures leave nothing behind --------------------------------------------------------------


def assert_clean_failure(exc: type[Exception], match: str, **kwargs: Any) -> None:
    before = open_fds()
    with pytest.raises(exc, match=match):
        run_sh(**kwargs)
    assert open_fds() == before
    assert no_children_left()


def test_not_an_executable() -> None:
    fd = os.memfd_create("junk", os.MFD_CLOEXEC)
    os.write(fd, b"this is no ELF file\n")
    try:
        assert_clean_failure(
            ContainerStartError,
            "executing the init.*ENOEXEC",
            exe=fd,
            script="true",
            user_namespace=False,
        )
    finally:
        os.close(fd)


def test_before_release_failure_kills_child(busybox: int) -> None:
    pids: list[int] = []

    def refuse(pid: int) -> None:
        pids.append(pid)
        raise ContainerStartError("cgroup join failed")

    assert_clean_failure(
        ContainerStartError,
        "cgroup join",
        exe=busybox,
        script="true",
        user_namespace=True,
        before_release=refuse,
    )
    assert not Path(f"/proc/{pids[0]}").exists()


def test_bad_cgroup_fd(busybox: int, tmp_path: Path) -> None:
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert_clean_failure(
            ContainerStartError,
            "cgroup",
            exe=busybox,
            script="true",
            user_namespace=False,
            cgroup_fd=dirfd,
        )
    finally:
        os.close(dirfd)


def test_missing_init_binary(tmp_path: Path) -> None:
    with pytest.raises(ContainerStartError, match="pip install"):
        sealed_exec_memfd(tmp_path / "nope")


def test_sealed_memfd_cannot_change(busybox: int) -> None:
    with pytest.raises(PermissionError):
        os.write(busybox, b"x")
    with pytest.raises(PermissionError):
        os.ftruncate(busybox, 0)


def test_kill_and_wait(busybox: int) -> None:
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with host, child_end:
        init = spawn_init(child_end, user_namespace=False, exec_fd=busybox, argv=["sleep", "60"])
        assert init.poll() is None
        init.kill()
        assert init.wait() == -9
        assert init.wait() == -9
        init.close()
        init.close()
    assert no_children_left()


def test_200_spawns_leak_nothing(busybox: int) -> None:
    before = open_fds()
    for i in range(200):
        packets, status = run_sh(
            busybox, "echo $$ >&3", user_namespace=i % 2 == 1, network=i % 4 == 0
        )
        assert (packets, status) == ([b"1\n"], 0)
    assert open_fds() == before
    assert no_children_left()


def test_spawns_from_many_threads(busybox: int) -> None:
    """The host is multi-threaded: spawning from several threads at once must just work."""
    before = open_fds()

    def spawn_some() -> None:
        for _ in range(25):
            assert run_sh(busybox, "echo $$ >&3", user_namespace=True) == ([b"1\n"], 0)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(spawn_some) for _ in range(4)]:
            future.result()
    assert open_fds() == before
    assert no_children_left()


def test_spawn_exec_wait_speed(busybox: int) -> None:
    """1000 x (clone3 + exec busybox true + wait); prints the median (pytest -s to see it)."""
    times = []
    host, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with host, child_end:
        for _ in range(1000):
            t0 = time.perf_counter()
            with spawn_init(
                child_end, user_namespace=False, exec_fd=busybox, argv=["true"]
            ) as init:
                assert init.wait() == 0
            times.append(time.perf_counter() - t0)
    median_ms = statistics.median(times) * 1000
    print(
        f"\nspawn+exec+wait of busybox true: median {median_ms:.3f} ms, "
        f"p90 {statistics.quantiles(times, n=10)[-1] * 1000:.3f} ms"
    )
    assert median_ms < 50
