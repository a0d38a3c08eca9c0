"""Rootless networks leave nothing behind (issue 17): no keeper, uplink (slirp4netns or pasta)
or container process of the user, no namespace held, no keeper socket, after the last container
stops, an exception, a failed start, SIGKILL of the host process and SIGKILL of the keeper; and a
new container on the same network starts cleanly afterwards.

Each scenario runs as the unprivileged user in a SANDKIT_HOME of its own (kept across the
phases, so that the second container joins the same network); what is left is checked from
root, which can see every process and namespace of the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.net import client, store  # noqa: F401 - loaded while the checkout is readable

from .helpers import network_processes

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="rootless user")]


@pytest.fixture
def as_unprivileged(as_unprivileged, open_tun):
    """The rootless side, with /dev/net/tun open to it (see conftest.open_tun)."""
    return as_unprivileged


@pytest.fixture
def users_home():
    """A private SANDKIT_HOME of the unprivileged user that outlives one `as_unprivileged`
    call (that fixture's own home goes when its call returns)."""
    from conftest import unprivileged_ids

    home = tempfile.mkdtemp(prefix="sandkit-rootless-leaks-")
    os.chown(home, *unprivileged_ids())
    yield home
    shutil.rmtree(home, ignore_errors=True)


def _use_home(home: str) -> None:
    os.environ["SANDKIT_HOME"] = home
    os.environ["HOME"] = home


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _namespaces(pid: int) -> list[str]:
    """The network and user namespaces of ``pid``, as their links read ("net:[4026...]")."""
    return [os.readlink(f"/proc/{pid}/ns/{kind}") for kind in ("net", "user")]


def _snapshot(home: str, init: int) -> dict:
    """In the unprivileged child, while the container of ``init`` (its pid) runs: the network's processes (with
    their start times, against a reused pid) and the namespaces they and the container hold
    that are not the host's."""
    pids = [int(line.split()[0]) for line in network_processes(home)]
    assert any("sandkit-keeper" in line for line in network_processes(home))
    assert any("slirp4netns" in line or "pasta" in line for line in network_processes(home))
    pids.append(init)
    hosts = set(_namespaces(os.getpid()))
    namespaces = {ns for pid in pids for ns in _namespaces(pid)} - hosts
    return {"processes": {pid: _start_time(pid) for pid in pids}, "namespaces": sorted(namespaces)}


def _alive(processes: dict[int, str | None]) -> list[int]:
    return [pid for pid, start in processes.items() if start and _start_time(pid) == start]


def _holders(namespaces: list[str]) -> list[str]:
    """Processes of the machine that are in, or hold an fd of, one of ``namespaces``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        links = [f"/proc/{entry.name}/ns/{kind}" for kind in ("net", "user")]
        try:
            links += [f"/proc/{entry.name}/fd/{fd}" for fd in os.listdir(f"/proc/{entry.name}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target in namespaces:
                found.append(f"{entry.name}: {link} -> {target}")
    return found


def _keeper_sockets(home: str) -> list[Path]:
    """The keeper sockets of every network of ``home`` (root may not ask the store: the home
    is not root's)."""
    return sorted(Path(home).rglob(store.keeper_socket(Path()).name))


def _init_pid(container: sandkit.Container) -> int:
    return container._core._init.pid


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _assert_nothing_left(home: str, seen: dict, keeper_killed: bool = False) -> None:
    """From root: no process the scenario saw is alive, none of its namespaces is held, no
    network process of the user's home runs, and the network's keeper socket is gone (a
    SIGKILLed keeper could not remove it: then it no longer listens, and the next keeper
    takes its place)."""
    wait_until(lambda: not _alive(seen["processes"]), f"the end of {seen['processes']}")
    wait_until(lambda: not network_processes(home), "no keeper or uplink of the home")
    wait_until(
        lambda: not _holders(seen["namespaces"]),
        f"nobody holding {seen['namespaces']}",
        interval=0.05,
    )
    if keeper_killed:
        assert not [path for path in _keeper_sockets(home) if _listening(path)]
    else:
        assert not _keeper_sockets(home)


def _starts_cleanly(home: str, image: sandkit.Image, network: str) -> str:
    _use_home(home)
    with sandkit.Container(image, network=network) as c:
        return c.exec(["sh", "-c", "ip -o -4 addr show eth0"], check=True).stdout.decode()


def _assert_a_new_container_starts(as_unprivileged, home, image, network) -> None:
    assert "inet 10." in as_unprivileged(_starts_cleanly, home, image, network)
    wait_until(lambda: not network_processes(home), "the second keeper's end")
    assert not _keeper_sockets(home)


# --- the scenarios, run as the unprivileged user -----------------------------------------


def _last_container_stops(home: str, image: sandkit.Image, network: str) -> dict:
    _use_home(home)
    sandkit.Network(network).create()
    with sandkit.Container(image, network=network) as first:
        with sandkit.Container(image, network=network) as last:
            seen = _snapshot(home, _init_pid(last))
            first_seen = _snapshot(home, _init_pid(first))
        # the first is still there: its network with it
        assert network_processes(home)
        assert first.exec(["true"]).exit_code == 0
    seen["processes"].update(first_seen["processes"])
    seen["namespaces"] = sorted({*seen["namespaces"], *first_seen["namespaces"]})
    return seen


def _exception_in_the_body(home: str, image: sandkit.Image) -> dict:
    _use_home(home)
    seen: dict = {}
    try:
        with sandkit.Container(image, network="bridge") as c:
            seen.update(_snapshot(home, _init_pid(c)))
            raise ZeroDivisionError
    except ZeroDivisionError:
        return seen
    raise AssertionError("the exception did not come through")


def _failed_start(home: str, image: sandkit.Image, bad_mount: str) -> str:
    _use_home(home)
    try:
        sandkit.Container(image, network="bridge", mounts=[bad_mount]).start()
    except errors.ContainerStartError as exc:
        return str(exc)
    raise AssertionError("the start did not fail")


def _container_until_killed(image: sandkit.Image, report: int) -> None:
    """In a forked child: start a container on the bridge, report its init's pid, and wait
    for the SIGKILL."""
    import traceback

    try:
        c = sandkit.Container(image, network="bridge").start()
        os.write(report, f"{_init_pid(c)}\n".encode())
    except BaseException:
        os.write(report, traceback.format_exc().replace("\n", " | ").encode() + b"\n")
        raise
    signal.pause()


def _host_process_killed(home: str, image: sandkit.Image) -> dict:
    # A forked child, not a new interpreter: this host's Python lives under /root, out of the
    # unprivileged user's reach.
    _use_home(home)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _container_until_killed(image, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as report:
            line = report.readline()
        assert line.strip().isdigit(), f"the child that was to be killed said: {line}"
        init = int(line)
        return _snapshot(home, init)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _keeper_and_launcher(home: str) -> tuple[int, int]:
    """The keeper of the home's one network, and the launcher it forked (which starts the
    uplink and kills it when the keeper ends)."""
    lines = network_processes(home)
    ours = {int(line.split()[0]) for line in lines if "sandkit-keeper" in line}
    keepers = [pid for pid in ours if _parent(pid) not in ours]
    launchers = [pid for pid in ours if _parent(pid) in keepers]
    assert len(keepers) == 1 and len(launchers) == 1, lines
    return keepers[0], launchers[0]


def _uplinks(home: str) -> list[str]:
    return [line for line in network_processes(home) if "sandkit-keeper" not in line]


def _keeper_killed(home: str, image: sandkit.Image) -> dict:
    _use_home(home)
    with sandkit.Container(image, network="bridge") as c:
        seen = _snapshot(home, _init_pid(c))
        uplinks = _uplinks(home)
        os.kill(_keeper_and_launcher(home)[0], signal.SIGKILL)
        # the uplink goes with its keeper, while the container still runs
        wait_until(
            lambda: not set(_uplinks(home)) & set(uplinks), f"the end of the uplink {uplinks}"
        )
    return seen


def _launcher_killed(home: str, image: sandkit.Image) -> dict:
    _use_home(home)
    with sandkit.Container(image, network="bridge") as c:
        seen = _snapshot(home, _init_pid(c))
        os.kill(_keeper_and_launcher(home)[1], signal.SIGKILL)
    return seen


# --- the tests -----------------------------------------------------------------------------


def _leaves_nothing(
    as_unprivileged, home, image, scenario, network="bridge", keeper_killed=False
) -> None:
    """Runs ``scenario(home, image, ...)`` as the user, checks that nothing of it is left, and
    that a new container on ``network`` then starts (and leaves nothing either)."""
    extra = (network,) if network != "bridge" else ()
    seen = as_unprivileged(scenario, home, image, *extra)
    _assert_nothing_left(home, seen, keeper_killed=keeper_killed)
    _assert_a_new_container_starts(as_unprivileged, home, image, network)


def test_nothing_left_after_the_last_container_of_a_network_stops(
    as_unprivileged, users_home, users_busybox
):
    _leaves_nothing(as_unprivileged, users_home, users_busybox, _last_container_stops, "leaks")


def test_nothing_left_after_an_exception_in_the_with_body(
    as_unprivileged, users_home, users_busybox
):
    _leaves_nothing(as_unprivileged, users_home, users_busybox, _exception_in_the_body)


def test_nothing_left_after_a_failed_start(as_unprivileged, users_home, users_busybox):
    # a start that fails in the init's set-up, after the container joined the network: a file
    # mounted over a directory
    bad_mount = f"{users_home}/file:/bin"
    Path(bad_mount.split(":")[0]).write_text("a file")
    assert as_unprivileged(_failed_start, users_home, users_busybox, bad_mount)
    wait_until(lambda: not network_processes(users_home), "no keeper or uplink of the home")
    assert not _keeper_sockets(users_home)
    _assert_a_new_container_starts(as_unprivileged, users_home, users_busybox, "bridge")


def test_nothing_left_after_sigkill_of_the_host_process(as_unprivileged, users_home, users_busybox):
    _leaves_nothing(as_unprivileged, users_home, users_busybox, _host_process_killed)


def test_nothing_left_after_sigkill_of_the_keeper(as_unprivileged, users_home, users_busybox):
    _leaves_nothing(as_unprivileged, users_home, users_busybox, _keeper_killed, keeper_killed=True)


def test_nothing_left_after_sigkill_of_the_uplinks_launcher(
    as_unprivileged, users_home, users_busybox
):
    # (by the OOM killer, say) the uplink must still end with its keeper
    _leaves_nothing(as_unprivileged, users_home, users_busybox, _launcher_killed)
