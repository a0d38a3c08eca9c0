"""Attacks on the host side of networks and volumes: a keeper that stops answering, state files
another local user reaches for, calls repeated until something runs out (fds), and processes
that could outlive the host process that started them."""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cli.conftest import sandkit as cli_sandkit
from net.conftest import open_tun, users_busybox  # noqa: F401 - fixtures
from net.helpers import killed_host_process, network_processes
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.detached import control
from sandkit.detached import state as cli_state
from sandkit.net import client, egress, store
from sandkit.runtime import volumes

pytestmark = [pytest.mark.slow]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root")


@pytest.fixture
def no_keeper_left():
    """No network process of ours before the test, and none left after it."""
    home = os.environ["SANDKIT_HOME"]
    wait_until(lambda: not network_processes(home), "the networks of earlier tests to end")
    yield
    wait_until(lambda: not network_processes(home), "the test's keepers to end")


def _keeper_pid(connection: client.KeeperConnection) -> int:
    creds = connection._sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return struct.unpack("3i", creds)[0]


def _outcome_within(call, seconds: float) -> BaseException | object:
    """Runs ``call`` in a thread and returns what it returned or raised; fails the test if it
    is still running after ``seconds`` (the thread is left to the stopped keeper)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: outcome, f"{call} to return or raise", timeout=seconds)
    return outcome[0]


@needs_root
@pytest.mark.root
def test_a_keeper_that_stops_answering_fails_join_and_requests_instead_of_hanging(
    no_keeper_left, monkeypatch
):
    monkeypatch.setattr(client, "REPLY_TIMEOUT", 1.0)
    member = client.join(store.BRIDGE)
    keeper = _keeper_pid(member)
    os.kill(keeper, signal.SIGSTOP)
    try:
        joined = _outcome_within(lambda: client.join(store.BRIDGE), 20)
        assert isinstance(joined, errors.NetworkError), joined
        assert "did not answer" in str(joined) and str(keeper) in str(joined)
        listed = _outcome_within(lambda: client.attached_containers(store.BRIDGE), 20)
        assert isinstance(listed, errors.NetworkError), listed
        # a member's own request (set_egress) and the ones after it fail the same way
        for _ in range(2):
            swapped = _outcome_within(
                lambda: member.set_egress(egress.ResolvedEgress(allow_all=True), []), 20
            )
            assert isinstance(swapped, errors.NetworkError), swapped
            assert "did not answer" in str(swapped)
    finally:
        os.kill(keeper, signal.SIGCONT)
        member.close()


# --- a home below a directory another user can change -----------------------------------------


def _open_to_others(path: Path) -> None:
    """The directories above ``path`` in the temporary directory: enterable by others."""
    for parent in path.parents:
        if parent != Path(tempfile.gettempdir()) and str(parent).startswith(tempfile.gettempdir()):
            os.chmod(parent, os.stat(parent).st_mode | 0o055)


@pytest.fixture
def users_directory(tmp_path):
    """A directory of the unprivileged user's, reachable by them (as a home directory is)."""
    from conftest import unprivileged_ids

    os.chmod(tmp_path, 0o755)
    _open_to_others(tmp_path)
    theirs = tmp_path / "alice"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, *unprivileged_ids())
    return theirs


@needs_root
@pytest.mark.root
def test_root_refuses_a_home_below_a_directory_another_user_owns(users_directory, tmp_path):
    """The owner of the directory above could swap root's home for a link: to a directory of
    root's (which the home check would then chmod 0700 and fill), or, between two calls, to a
    tree of their own whose links root would follow (network rm unlinks every file of a
    network's directory)."""
    home = users_directory / "sandkit"
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    # what the user does between two of root's calls: the home is theirs to replace
    os.symlink(victim, home)
    with pytest.raises(errors.HostUnsupportedError, match=r"alice.*sandkit-test|uid"):
        store.create_network("planted", home=home)
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755
    assert list(victim.iterdir()) == []


@needs_root
@pytest.mark.root
def test_root_refuses_a_home_in_a_directory_others_may_write_without_the_sticky_bit(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(errors.HostUnsupportedError, match=r"writable by other users"):
        store.create_network("planted", home=shared / "sandkit")
    assert list(shared.iterdir()) == []


def _make_home_below_sticky_tmp() -> str:
    home = tempfile.mkdtemp(prefix="sandkit-atk-")
    try:
        return store.create_network("fine", home=Path(home)).name
    finally:
        shutil.rmtree(home)


def test_a_home_in_a_sticky_shared_directory_is_fine(as_unprivileged):
    """/tmp is writable by all, but sticky: nobody else may rename or remove our entries."""
    assert as_unprivileged(_make_home_below_sticky_tmp) == "fine"


# --- calls repeated until something runs out -------------------------------------------------


def _fds() -> set[str]:
    return {
        f"{fd} -> {target}"
        for fd in os.listdir("/proc/self/fd")
        if (target := _target(fd)) is not None and not target.startswith("/sys/fs/cgroup/")
    }


def _target(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # the fd listdir used


def _connect_rounds(image: sandkit.Image, rounds: int) -> tuple[int, int, list[str]]:
    """``rounds`` disconnects and connects of one container, with an egress change each:
    the fds before and after, and what was left open. (Started on the network, beside a
    neighbour that keeps its keeper: a rootless container can only rejoin the keeper it was
    cloned under.)"""
    with (
        sandkit.Network() as network,
        sandkit.Container(image, network=network) as c,
        sandkit.Container(image, network=network),
    ):
        c.disconnect(network)  # the first round loads what stays loaded
        c.connect(network)
        before = _fds()
        for _ in range(rounds):
            c.disconnect(network)
            c.connect(network, aliases=["x"])
            c.set_egress(["10.1.2.3/32"])
        after = _fds()
    return len(before), len(after), sorted(after - before)[:5]


@needs_root
@pytest.mark.root
def test_connect_and_disconnect_rounds_leave_no_fd_behind_and_never_run_out_of_names(busybox):
    before, after, left = _connect_rounds(busybox, 200)
    # (the container's connection to the keeper is a new socket, in the old one's fd)
    assert after <= before, left


def test_rootless_connect_and_disconnect_rounds_leave_no_fd_behind(
    users_busybox, as_unprivileged, open_tun
):
    before, after, left = as_unprivileged(_connect_rounds, users_busybox, 200)
    assert after <= before, left


def _rejoin_after_the_keeper_ended(image: sandkit.Image) -> str:
    with sandkit.Network() as network, sandkit.Container(image, network=network) as c:
        c.disconnect(network)  # its last member: the keeper ends
        try:
            c.connect(network)
        except errors.NetworkError as exc:
            return str(exc)
    return "connected"


def test_rootless_rejoining_after_the_keeper_ended_says_why_it_cannot(
    users_busybox, as_unprivileged, open_tun
):
    said = as_unprivileged(_rejoin_after_the_keeper_ended, users_busybox)
    assert "keeper" in said and "ended" in said and "restart the container" in said.lower(), said


# --- what could outlive its host process -------------------------------------------------------

_HOLDS_A_SIZED_VOLUME = """
import sys
import sandkit
image = sandkit.Image.from_directory(sys.argv[1])
with sandkit.Container(image, mounts=[sys.argv[2] + ":/data"]) as c:
    c.exec(["sh", "-c", "echo kept > /data/f"], check=True)
    print("holding", flush=True)
    sys.stdin.read()
"""


def _loop_devices_of(disk: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", os.fspath(disk)], capture_output=True, text=True, check=True
    ).stdout


@needs_root
@pytest.mark.root
def test_a_sized_volumes_mount_left_by_a_killed_last_user_goes_with_the_next_one(busybox_dir):
    """SIGKILL of the only process using a sized volume leaves its loop mount (nobody is left
    to unmount it); the next container that uses the volume unmounts it when it ends, and
    frees the loop device, and the content is kept."""
    with sandkit.Volume("atk-sized", size="8m") as volume:
        data = Path(volume.mountpoint)
        disk = data.parent / "disk.img"
        with killed_host_process(
            _HOLDS_A_SIZED_VOLUME, os.fspath(busybox_dir), volume.name
        ) as said:
            assert said.strip() == "holding"
        record = volumes.get_volume(volume.name)
        wait_until(lambda: not volumes.in_use(record), "the killed host's lease to go")
        assert os.path.ismount(data)  # what the killed process could not undo
        image = sandkit.Image.from_directory(busybox_dir)
        with sandkit.Container(image, mounts=[f"{volume.name}:/data"]) as c:
            assert c.read_file("/data/f") == b"kept\n"
        assert not os.path.ismount(data)
        assert _loop_devices_of(disk) == ""


@needs_root
@pytest.mark.root
def test_more_members_than_the_keeper_has_fds_for_are_refused_and_the_others_still_served(
    no_keeper_left, monkeypatch
):
    """The keeper inherits its host's fd limit (1024 by default on many hosts, below its
    1024 connections plus its own fds): a connection past it must be refused, not end the
    keeper and with it every container's network."""
    monkeypatch.setattr(client, "REPLY_TIMEOUT", 5.0)
    first = client.join(store.BRIDGE)
    resource.prlimit(_keeper_pid(first), resource.RLIMIT_NOFILE, (128, 128))
    members, refusals = [first], []
    try:
        for _ in range(160):
            try:
                members.append(client.join(store.BRIDGE))
            except errors.NetworkError as exc:
                refusals.append(str(exc))
        assert refusals, "160 members fit in 128 fds?"
        assert all("containers" in why and "limit" in why for why in refusals), refusals[0]
        # the same keeper serves on: a member that leaves makes room for the next (once the
        # keeper has seen it go: the hangup reaches it after close() returns)
        members.pop().close()
        deadline = time.monotonic() + 5.0
        while True:
            try:
                members.append(client.join(store.BRIDGE))
                break
            except errors.NetworkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert _keeper_pid(members[-1]) == _keeper_pid(first)
    finally:
        for member in members:
            member.close()


# --- the supervisor of a detached container ----------------------------------------------------


def _idle_clients(socket_path: str, count: int) -> list[socket.socket]:
    """Up to ``count`` connections to a supervisor that never send a request: fewer once its
    backlog stays full for a second (it accepts no more), or when it is gone."""
    clients: list[socket.socket] = []
    with control.short_path(socket_path) as reachable:
        while len(clients) < count:
            client_socket = control.make_socket()
            if not _connected(client_socket, reachable):
                client_socket.close()
                break
            clients.append(client_socket)
    return clients


def _connected(client_socket: socket.socket, address: str) -> bool:
    deadline = time.monotonic() + 1.0
    while True:
        try:
            client_socket.connect(address)
            return True
        except BlockingIOError:  # the backlog is full: it may accept more in a moment
            if time.monotonic() > deadline:
                return False
            select.select([], [], [], 0.01)
        except OSError:
            return False


def test_idle_clients_past_the_supervisors_fd_limit_do_not_end_the_container(busybox_dir):
    """Connections to a detached container's supervisor that say nothing hold one fd each
    there: more than its open-files limit must leave it serving once they go, not end it and
    with it the container."""
    started = cli_sandkit("run", "-d", os.fspath(busybox_dir), "sleep", "600")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        record = cli_state.find(container_id)
        resource.prlimit(int(record.state["supervisor_pid"]), resource.RLIMIT_NOFILE, (64, 64))
        clients = _idle_clients(record.socket_path, 100)
        # they are dropped after a while (supervisor.REQUEST_TIMEOUT, 10 s)
        clients[0].setblocking(True)
        clients[0].settimeout(30)
        assert clients[0].recv(1) == b""
        for client_socket in clients:
            client_socket.close()
        ran = cli_sandkit("exec", container_id, "echo", "still here")
        assert (ran.returncode, ran.stdout) == (0, "still here\n"), ran.stderr
    finally:
        cli_sandkit("rm", "-f", container_id)


# --- another local user ------------------------------------------------------------------------


def _opens(paths: list[str]) -> list[str]:
    """What another user gets opening each of ``paths`` to read and to write."""
    outcomes = []
    for path in paths:
        for flags in (os.O_RDONLY, os.O_WRONLY):
            try:
                os.close(os.open(path, flags | os.O_NONBLOCK))
                outcomes.append(f"opened {path}")
            except PermissionError:
                outcomes.append("denied")
    return outcomes


@needs_root
@pytest.mark.root
def test_state_files_stay_private_even_in_directories_opened_to_others(tmp_path, as_unprivileged):
    """The home is 0700 (checked at every open), so nobody else reaches into it; and should its
    directories be opened anyway (a chmod by hand), the files that hold state and locks are the
    owner's alone: nobody else reads a definition or flocks a lease or lock to block us."""
    home = tmp_path / "home"
    network = store.create_network("private-net", home=home)
    volumes.create_volume("private-vol", home=home)
    with store.network_lock(network, home):
        pass  # (made at the first use: a join, a removal)
    files = [p for p in home.rglob("*") if p.is_file() and "_data" not in p.parts]
    names = {p.name for p in files}
    assert {"network.json", "lock", "store.lock", "volume.json", "lease", "fill.lock"} <= names
    for directory in [tmp_path, *[p for p in home.rglob("*") if p.is_dir()], home]:
        os.chmod(directory, 0o755)
    _open_to_others(tmp_path)
    control_file = home / "readable"
    control_file.write_bytes(b"")
    os.chmod(control_file, 0o644)
    outcomes = as_unprivileged(_opens, [os.fspath(control_file), *map(os.fspath, files)])
    assert outcomes[0] == f"opened {control_file}"  # the directories are open indeed
    assert set(outcomes[2:]) == {"denied"}, outcomes
