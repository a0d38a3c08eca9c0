"""A Docker daemon for the parity tests and the benchmarks: the one `docker` already reaches, or
(as root, with Debian's docker.io installed) a private `dockerd` with its own data root, exec root
and socket, so the host's Docker (if any) is untouched. No pytest in here.

A private daemon comes in two kinds. The plain one (`docker_env`) has no bridge and no iptables:
enough for `--network none`, nothing to publish a port with. `private_dockerd(netns=True)` runs
the daemon in namespaces of its own (network, PID and mount): there it has Docker's default
bridge, iptables rules and `-p`, yet the host gets no docker0, no firewall rule and no mount, and
everything the daemon started (containerd, shims, containers, docker-proxy) dies with it, because
it is PID 1 of its PID namespace. Its published ports are on the loopback of that network
namespace: reach them from a process that entered it (`nsenter --net=DAEMON.netns`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from proctable import children, in_namespace

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# A container whose PID 1 ignores SIGTERM (busybox httpd does) is killed after this many seconds
# when the daemon stops, instead of Docker's 15.
SHUTDOWN_TIMEOUT = 2


class DockerUnavailable(Exception):
    """No daemon is reachable and none can be started here; the message says why."""


class Daemon(NamedTuple):
    """A private dockerd: `env` makes `docker` reach it; `netns` is its network namespace
    (`/proc/PID/ns/net`), or None when it shares the host's."""

    env: dict[str, str]
    netns: Path | None


def reachable(env: dict[str, str]) -> bool:
    try:
        r = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def run(
    env: dict[str, str], *argv: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """`docker ARGV...` against the daemon of `env`, its output captured."""
    return subprocess.run(
        ["docker", *argv], env=env, input=input, capture_output=True, timeout=120, check=check
    )


def import_rootfs(env: dict[str, str], rootfs: Path, tag: str) -> str:
    """Imports the directory ``rootfs`` as the image ``tag`` (command ``sh``), as it is: its
    owners, modes and times (tarred beside it). Returns the tag."""
    rootfs_tar = rootfs.parent / f"{rootfs.name}.tar"
    with tarfile.open(rootfs_tar, "w") as tar:
        tar.add(rootfs, arcname=".")
    run(env, "import", "--change", 'CMD ["sh"]', str(rootfs_tar), tag)
    return tag


@contextlib.contextmanager
def docker_env() -> Iterator[dict[str, str]]:
    """The environment (DOCKER_HOST) under which `docker` reaches a daemon, for the block."""
    _require_client()
    env = dict(os.environ)
    if reachable(env):
        yield env
        return
    with private_dockerd() as daemon:
        yield daemon.env


@contextlib.contextmanager
def private_dockerd(netns: bool = False) -> Iterator[Daemon]:
    """A dockerd of our own for the block, then stopped, its state directory removed; with
    `netns`, in namespaces of its own (see the module's docstring) so that `-p` works."""
    _require_client()
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise DockerUnavailable("no Docker daemon can be started here (needs root and dockerd)")
    if netns and (shutil.which("unshare") is None or shutil.which("setpriv") is None):
        raise DockerUnavailable("no unshare or setpriv here (apt-get install util-linux)")
    base = Path(tempfile.mkdtemp(prefix="sandkit-dockerd-"))
    try:
        with _running(base, netns) as pid:
            env = dict(os.environ, DOCKER_HOST=f"unix://{base / 'docker.sock'}")
            _wait_until_reachable(env, base, pid)
            yield Daemon(env, Path(f"/proc/{pid}/ns/net") if netns else None)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _require_client() -> None:
    if shutil.which("docker") is None:
        raise DockerUnavailable("no `docker` client here (apt-get install docker.io)")


def _dockerd_argv(base: Path, netns: bool) -> list[str]:
    argv = [
        "dockerd",
        "--data-root",
        str(base / "data"),
        "--exec-root",
        str(base / "exec"),
        "--pidfile",
        str(base / "docker.pid"),
        "-H",
        f"unix://{base / 'docker.sock'}",
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT}",
        "--ip6tables=false",
    ]
    if not netns:
        # In the host's network namespace: no bridge or iptables (only --network none works).
        argv += ["--iptables=false", "--bridge=none"]
    return argv


def _in_namespaces_of_its_own(argv: list[str]) -> list[str]:
    """ARGV as PID 1 of new network, PID and mount namespaces, with their loopback up (Docker
    binds `-p 127.0.0.1:...` there). Should the test process die, setpriv's parent-death signal
    kills unshare, whose --kill-child then stops the daemon with SIGTERM."""
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",  # (unshare blocks SIGTERM while it waits for its child)
        "--",
        "unshare",
        "--net",
        "--pid",
        "--mount",
        "--mount-proc",
        "--kill-child=TERM",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        *argv,
    ]


@contextlib.contextmanager
def _running(base: Path, netns: bool) -> Iterator[int]:
    """Starts dockerd for the block and yields its pid (in our PID namespace); then stops it and
    waits until it and everything it started are gone."""
    argv = _dockerd_argv(base, netns)
    with open(base / "dockerd.log", "wb") as log:
        process = subprocess.Popen(
            _in_namespaces_of_its_own(argv) if netns else argv,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        pid = _forked_child(process) if netns else process.pid
    except BaseException:
        process.kill()  # unshare: its --kill-child ends what it may have started
        process.wait()
        raise
    netns_inode = os.stat(f"/proc/{pid}/ns/net").st_ino if netns else None
    try:
        yield pid
    finally:
        _stop(process, pid)
        if netns_inode is not None:
            _wait_until_no_process_in(netns_inode)


def _forked_child(process: subprocess.Popen[bytes]) -> int:
    """The pid of the process unshare forked (PID 1 of the new PID namespace, soon dockerd)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not (found := children(process.pid)):
        if process.poll() is not None or time.monotonic() > deadline:
            raise DockerUnavailable(f"unshare did not start dockerd (exit {process.returncode})")
        time.sleep(0.01)
    (pid,) = found
    return pid


def _wait_until_reachable(env: dict[str, str], base: Path, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not reachable(env):
        if not Path(f"/proc/{pid}").exists() or time.monotonic() > deadline:
            log_text = (base / "dockerd.log").read_text(errors="replace")[-2000:]
            raise DockerUnavailable(f"dockerd did not start:\n{log_text}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen[bytes], daemon_pid: int) -> None:
    """SIGTERM to dockerd (it stops its containers and containerd), SIGKILL if it lingers; in its
    own PID namespace, the kernel then kills whatever is left there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon_pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon_pid, signal.SIGKILL)
        process.kill()
        process.wait()


def _wait_until_no_process_in(netns_inode: int) -> None:
    """Returns once no process is left in the daemon's network namespace (which then goes)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while left := processes_in_netns(netns_inode):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {sorted(left)} outlived the private dockerd")
        time.sleep(0.05)


def processes_in_netns(inode: int) -> set[int]:
    """The pids of the processes in the network namespace of inode `inode`."""
    return in_namespace("net", inode)
