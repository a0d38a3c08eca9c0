"""Shared fixtures: a busybox root filesystem, an isolated SANDKIT_HOME, an unprivileged user,
and counters that tell whether anything was left behind on the host."""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from proctable import children
from rootfs import make_busybox_rootfs  # tests import it from here too

UNPRIVILEGED_USER = "sandkit-test"

# Tests run with their own state directory, so they never touch /var/lib/sandkit.
# It stays private (mkdtemp's 0700), as sandkit requires of every home; the unprivileged user's
# tests run with a home of their own that belongs to that user (run_unprivileged).
_home = tempfile.mkdtemp(prefix="sandkit-tests-")
os.environ["SANDKIT_HOME"] = _home
# Spare inits kept ready in the background would count as leaks in every test; the pool has
# tests of its own (test_prespawn.py).
os.environ["SANDKIT_PRESPAWN"] = "0"


def pytest_sessionstart(session):
    _remove_leftover_subids()


def _remove_leftover_subids() -> None:
    """Drop the test user's rows from /etc/subuid and /etc/subgid: a run killed inside a test
    that gave it a range (test_subid.py's `subids`) leaves them, and the rootless tests that
    expect one id mapped would then see a range. Every test that wants one adds its own."""
    if os.geteuid() != 0:
        return
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        try:
            rows = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        kept = [row for row in rows if not row.startswith(f"{UNPRIVILEGED_USER}:")]
        if kept != rows:
            path.write_text("".join(f"{row}\n" for row in kept))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_home, ignore_errors=True)


# Fixtures that only root can provide (a second user, a cgroup2 mount, the host's v1 cgroups):
# a test that uses one needs root, wherever it is (pyproject.toml registers the markers).
_ROOT_FIXTURES = {"as_unprivileged", "cgroup2_mount", "v1host"}


def pytest_collection_modifyitems(items):
    for item in items:
        if _ROOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session")
def busybox_dir(tmp_path_factory) -> Path:
    root = make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    # The unprivileged user must be able to reach the rootfs too.
    for parent in [root, *root.parents]:
        if str(parent).startswith(tempfile.gettempdir()) and parent != Path(tempfile.gettempdir()):
            os.chmod(parent, os.stat(parent).st_mode | 0o055)
    return root


@pytest.fixture(scope="session")
def busybox(busybox_dir):
    import sandkit

    return sandkit.Image.from_directory(busybox_dir)


@pytest.fixture(scope="session")
def oci_fixtures() -> Path:
    """Images written by other OCI tools (go-containerregistry, regclient), kept in the
    repository with their licences: see tests/fixtures/oci/README.md."""
    return Path(__file__).resolve().parent / "fixtures" / "oci"


# --- leaks ---------------------------------------------------------------------------------


def our_children() -> list[str]:
    return sorted(str(pid) for pid in children(os.getpid()))


def _open_fds() -> list[str]:
    """Our fds, less the cgroup directories sandkit keeps open for the life of the process."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the fd listdir itself used
        if not target.startswith("/sys/fs/cgroup/"):
            fds.append(fd)
    return sorted(fds)


def _our_mounts() -> list[str]:
    """Mount points in the host's namespace that sandkit could have left: under our state
    directory or a temporary directory of ours. Mounts elsewhere (another test run, the host's
    own) come and go on a shared machine and say nothing about sandkit."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        # (a private dockerd of the parity tests mounts under /tmp/sandkit-dockerd-*: not ours)
        if point.startswith(_home) or ("sandkit" in point and "sandkit-dockerd" not in point):
            points.append(point)
    return sorted(points)


def host_footprint() -> dict[str, object]:
    """What a container could leave behind on the host, in countable form."""
    inits = our_children()
    return {
        "inits": sorted(inits),
        "mounts": _our_mounts(),
        "fds": _open_fds(),
        "home": sorted(
            str(p.relative_to(_home))
            for p in Path(_home).rglob("*")
            if "images" not in p.parts and "blobs" not in p.parts and "layers" not in p.parts
        ),
    }


@pytest.fixture(scope="session")
def warmed_up(busybox):
    """One container started and stopped first, so that what sandkit keeps for the life of the
    process (the sealed init memfd, the event-loop thread and its fds, the scratch mountpoint)
    is not counted as a leak."""
    import sandkit

    with sandkit.Container(busybox) as c:
        c.exec(["true"])
    # the cgroup directory fds of every controller are cached for the life of the process
    with sandkit.Container(busybox, memory="1g", cpus=2, pids_limit=10000) as c:
        c.exec(["true"])


@pytest.fixture
def no_leaks(warmed_up):
    """Fails the test when it leaves a process, mount, fd or directory behind."""
    before = host_footprint()
    yield
    after = host_footprint()
    assert after == before


# --- the unprivileged (rootless) side ------------------------------------------------------


def unprivileged_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.fail("the rootless tests create a user and need root to do so")
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                UNPRIVILEGED_USER,
            ],
            check=True,
        )
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return entry.pw_uid, entry.pw_gid


def _set_dumpable() -> None:
    import ctypes

    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def run_unprivileged(fn, *args, unprivileged=True):
    """Run ``fn(*args)`` in a forked child that has dropped to the unprivileged test user
    (``unprivileged=False``: that stays root, for a measure of one process of its own).

    The child keeps the parent's imported modules and the sealed init memfd, so it needs no
    access to this checkout; its own SANDKIT_HOME belongs to the user. Returns what ``fn``
    returns, or re-raises what it raised (as an AssertionError carrying the child's traceback).
    """
    import sandkit.runtime.cgroups.v1
    import sandkit.runtime.cgroups.v2
    import sandkit.runtime.spawn as spawn
    import sandkit.security._syscall_table  # noqa: F401 - imported lazily elsewhere

    # Everything sandkit loads lazily is loaded now, while the checkout is still readable: the
    # child's user may not be able to read it (a clone under /root, say).
    spawn._lib()
    spawn.init_memfd()
    uid, gid = unprivileged_ids()
    home = tempfile.mkdtemp(prefix="sandkit-rootless-")
    if unprivileged:
        os.chown(home, uid, gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_end)
            if unprivileged:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                # Changing uid made us non-dumpable, which a real user's process is not; it
                # would hide /proc/<child>/uid_map from us.
                _set_dumpable()
            os.environ["SANDKIT_HOME"] = home
            os.environ["HOME"] = home
            outcome = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            status = 1
        try:
            os.write(write_end, pickle.dumps(outcome))  # our own child: trusted data
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    shutil.rmtree(home, ignore_errors=True)
    kind, value = pickle.loads(data) if data else ("error", "the child died without a word")
    if kind == "error":
        raise AssertionError(f"in the unprivileged child: {value}")
    return value


@pytest.fixture
def as_unprivileged():
    if sys.platform != "linux":
        pytest.skip("Linux only")
    return run_unprivileged


@pytest.fixture
def full_tmpfs(tmp_path) -> Iterator[Path]:
    """A private (0700) tmpfs of 64 KiB, mounted for the test and filled up by a file; its
    SANDKIT_HOME-style volumes/ directory made before it filled. Needs root (mount)."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=700", "tmpfs", small], check=True)
    try:
        (small / "volumes").mkdir(mode=0o700)
        with open(small / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
            while True:
                filler.write(bytes(4096))
        yield small
    finally:
        subprocess.run(["umount", small], check=True)


@pytest.fixture
def own_home(tmp_path, monkeypatch):
    """A SANDKIT_HOME of the test's own: its volumes and networks are all there is (use it with
    ``pytest.mark.usefixtures("own_home")``)."""
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))
