"""Holes in the container init found by attacking it from outside the project (issue 14), kept as
regression tests, root and rootless:

- an image whose /proc is a symlink leading the init's set-up back onto the host;
- a container process that stops the exec child before its execve, freezing PID 1;
- a rootless spare whose first exec carries its own seccomp profile, never getting the
  container's;
- a double-forked, setsid process outliving its exec's timeout;
- a container process that replaces /dev/ptmx, which the init opened to make an exec's pty;
- a container process with CAP_SYS_ADMIN that mounts over /proc, which the init walks to signal
  an exec's tree.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
import spares
from test_attacks import MODES, _open_to_others, attack_bin, in_mode  # noqa: F401 - a fixture

import sandkit
from sandkit.home import sandkit_home, scratch_mountpoint
from sandkit.runtime import prespawn

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="covers root and rootless mode, the latter as a user it creates"
    ),
]


@pytest.fixture(autouse=True)
def _sandkit_loaded(warmed_up):
    """The C module and the init memfd are loaded as root first (see test_attacks.py)."""


def _poll(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


# --- 1. an image whose /proc leads back onto the host ----------------------------------------


def _proc_symlink_image(base: Path, target: str) -> sandkit.Image:
    """A busybox image whose /proc is an absolute symlink that, seen from the init's mount
    namespace before pivot_root, points back into the container root under another name, where
    sys/kernel/hostname is a symlink to ``target`` on the host."""
    from conftest import make_busybox_rootfs

    root = make_busybox_rootfs(base / "rootfs")
    (root / "proc").rmdir()
    container_root = scratch_mountpoint(sandkit_home()) / "root"
    os.symlink(f"{container_root}/p", root / "proc")
    # Resolved inside the root, the symlink names a directory the image also ships, which is
    # where proc is mounted; followed from the host's root, it names the image's own p/.
    (root / str(container_root / "p").lstrip("/")).mkdir(parents=True)
    (root / "p/sys/kernel").mkdir(parents=True)
    os.symlink(target, root / "p/sys/kernel/hostname")
    return sandkit.Image.from_directory(root)


def _spare_renamed_through_proc_symlink(target: str) -> list[str]:
    """Start from the hostile image three times with spares on: the later containers take a
    spare set up without a name, and rename it."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sandkit-procsym-"))
    names = []
    try:
        image = _proc_symlink_image(base, target)
        os.environ["SANDKIT_PRESPAWN"] = "1"
        for name in ("first-box", "second-box", "third-box"):
            try:
                with sandkit.Container(image, hostname=name) as c:
                    names.append(c.exec(["hostname"]).stdout.decode())
            except sandkit.SandkitError as exc:
                names.append(f"refused: {exc}")
                continue
            _poll(prespawn.spares, 10, "a spare container")
    finally:
        os.environ["SANDKIT_PRESPAWN"] = "0"
        prespawn.drain()
        shutil.rmtree(base, ignore_errors=True)
    return names


@pytest.mark.parametrize("mode", MODES)
def test_image_proc_symlink_cannot_reach_host_files(mode, as_unprivileged, tmp_path):
    canary = tmp_path / "canary"
    canary.write_bytes(b"host file, untouched\n")
    os.chmod(canary, 0o666)  # writable by the rootless user too: a real target either way
    _open_to_others(tmp_path)
    outcome = in_mode(mode, as_unprivileged, _spare_renamed_through_proc_symlink, str(canary))
    assert canary.read_bytes() == b"host file, untouched\n", (
        f"the init wrote a host file: {outcome}"
    )
    # Docker's runtime mounts proc only on a real directory too; the user learns why.
    for started in outcome:
        assert started.startswith("refused:") and "/proc is a symlink" in started, outcome


# --- 3. a container process that stops, traces or floods the init's work ---------------------

PID1_ATTACKS = ["stop", "trace", "flood"]


def _attackers(token: str) -> list[int]:
    """Processes anywhere on the host still running the pid1 helper of this test (an orphaned
    init is not our descendant, so all of /proc is searched, by a token of the test's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"/attacks/pid1\0") and token.encode() in cmd:
            found.append(int(entry.name))
    return found


def _start_attacker(c, attack: str, token: str):
    p = c.spawn(["/attacks/pid1", attack, token], stdin=False)
    assert next(iter(p.stdout)) == b"started\n"
    return p


def _serve_under_attack(image_dir: str, bindir: str, attack: str, token: str) -> dict[str, object]:
    """What the host gets from a container while one of its processes attacks: every call must
    come back, whatever the process does."""
    from test_attacks import _image

    seen: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(_image(image_dir), mounts=[f"{bindir}:/attacks:ro"]) as c:
            _start_attacker(c, attack, token)
            execs = [c.exec(["echo", "served"], timeout=3) for _ in range(5)]
            seen["execs"] = [(r.stdout, r.timed_out, r.signal) for r in execs]
            seen["ping"] = c.ping() if hasattr(c, "ping") else True
        with sandkit.Container(
            _image(image_dir), mounts=[f"{bindir}:/attacks:ro"], lifetime=1.5
        ) as c:
            _start_attacker(c, attack, token)
            started = time.monotonic()
            try:
                while time.monotonic() - started < 20:
                    c.exec(["true"], timeout=1)
            except sandkit.ContainerError as exc:
                seen["lifetime"] = (type(exc).__name__, round(time.monotonic() - started, 1))
    return seen


def _exit_with_exec_in_flight(image_dir: str, bindir: str, attack: str, token: str) -> list[int]:
    """A host process that exits while an exec is starting under attack; returns the attack's
    processes still alive 10 s later (the container must die with its host)."""
    import threading

    from test_attacks import _image

    pid = os.fork()
    if pid == 0:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c = sandkit.Container(_image(image_dir), mounts=[f"{bindir}:/attacks:ro"])
                c.start()
                _start_attacker(c, attack, token)
                threading.Thread(
                    target=lambda: [c.exec(["true"]) for _ in range(100)], daemon=True
                ).start()
                time.sleep(0.5)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while _attackers(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _attackers(token)


def _with_watchdog(token: str, fn, *args):
    """Runs fn; should it hang (an init frozen by the attack), kills the attack's containers
    after 90 s so the test fails instead of hanging the suite."""
    import threading

    box: dict[str, object] = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(90)
    if thread.is_alive():
        for entry in Path("/proc").iterdir():
            try:
                if (entry / "comm").read_text() == "sandkit-init\n" and _attackers(token):
                    os.kill(int(entry.name), 9)
            except (OSError, ValueError):
                pass
        thread.join(30)
        pytest.fail(f"the host hung while a container process attacked with {args[-2]!r}")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


@pytest.mark.parametrize("attack", PID1_ATTACKS)
@pytest.mark.parametrize("mode", MODES)
def test_a_container_process_cannot_freeze_the_init(
    mode, attack, as_unprivileged, busybox_dir, attack_bin
):
    token = f"t{os.getpid()}x{time.monotonic_ns()}"
    seen = _with_watchdog(
        token,
        in_mode,
        mode,
        as_unprivileged,
        _serve_under_attack,
        str(busybox_dir),
        str(attack_bin),
        attack,
        token,
    )
    for stdout, timed_out, _signal in seen["execs"]:
        # Stopped before or after its execve, an exec still ends: by itself, or by its timeout.
        assert stdout == b"served\n" or timed_out, seen
    assert seen["lifetime"][0] in {"ContainerNotRunningError", "ContainerDiedError"}, seen
    assert seen["lifetime"][1] < 3, f"the lifetime of 1.5 s was not kept: {seen}"
    assert not _attackers(token), "the attack outlived its container"


@pytest.mark.parametrize("attack", ["stop", "trace"])
@pytest.mark.parametrize("mode", MODES)
def test_a_container_under_attack_dies_with_its_host(
    mode, attack, as_unprivileged, busybox_dir, attack_bin
):
    token = f"t{os.getpid()}x{time.monotonic_ns()}"
    left = _with_watchdog(
        token,
        in_mode,
        mode,
        as_unprivileged,
        _exit_with_exec_in_flight,
        str(busybox_dir),
        str(attack_bin),
        attack,
        token,
    )
    assert not left, f"container processes outlived their host: {left}"


def _stop_a_frozen_init(image_dir: str) -> tuple[float, bool]:
    """stop() of a container whose init cannot answer (stopped from the host): how long it
    took, and whether the init is gone."""
    import signal

    from test_attacks import _image

    c = sandkit.Container(_image(image_dir))
    c.start()
    c.exec(["true"])
    pid = c._core._init.pid
    os.kill(pid, signal.SIGSTOP)
    import threading

    # Should stop() wait for the init forever, the test fails rather than hangs.
    rescue = threading.Timer(40, os.kill, (pid, signal.SIGKILL))
    rescue.start()
    started = time.monotonic()
    c.stop()
    took = time.monotonic() - started
    rescue.cancel()
    return took, not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("mode", MODES)
def test_stop_ends_a_container_whose_init_cannot_answer(mode, as_unprivileged, busybox_dir):
    took, gone = in_mode(mode, as_unprivileged, _stop_a_frozen_init, str(busybox_dir))
    assert gone, "the init outlived stop()"
    assert took < 10, f"stop() took {took:.1f} s"  # 5 s for the init to answer, then SIGKILL


# --- 4. a first exec with a profile of its own still runs under the container's --------------

ALLOW_ALL = {"defaultAction": "SCMP_ACT_ALLOW"}


def _first_exec_with_own_profile(
    image_dir: str, bindir: str, from_spare: bool
) -> list[tuple[int, str]]:
    """The container's first exec passes a profile that allows everything: filters stack, so
    the container's profile must still refuse nested namespaces, in that exec and the next."""
    from test_attacks import _image

    image = _image(image_dir)
    mounts = [f"{bindir}:/attacks:ro"]
    outcomes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with spares.started(image, "spare" if from_spare else "fresh", mounts=mounts) as c:
            for seccomp in (ALLOW_ALL, "default"):
                r = c.exec(["/attacks/kernel", "userns"], seccomp=seccomp, timeout=30)
                outcomes.append((r.exit_code, r.stdout.decode(errors="replace")))
    return outcomes


@pytest.mark.parametrize("start", ["spare", "fresh"])
@pytest.mark.parametrize("mode", MODES)
def test_a_per_exec_profile_stacks_on_the_containers(
    mode, start, as_unprivileged, busybox_dir, attack_bin
):
    outcomes = in_mode(
        mode,
        as_unprivileged,
        _first_exec_with_own_profile,
        str(busybox_dir),
        str(attack_bin),
        start == "spare",
    )
    for code, out in outcomes:
        holes = [line for line in out.splitlines() if line.startswith("HOLE")]
        assert code == 0 and not holes, f"the container's profile was not in force: {outcomes}"


# --- a double-forked, setsid process and an exec's timeout ----------------------------------


def _escape_the_timeout(image_dir: str) -> tuple[bool, str]:
    from test_attacks import _image

    with sandkit.Container(_image(image_dir)) as c:
        # The subshell starts a new session and exits at once: its orphan is no descendant of
        # the command any more, nor in its session or process group.
        r = c.exec(
            [
                "sh",
                "-c",
                "(setsid sleep 987 &); (setsid sleep 987 </dev/null >/dev/null 2>&1 &); sleep 986",
            ],
            timeout=1,
        )
        left = _poll_ps(c)
    return r.timed_out, left


def _poll_ps(c) -> str:
    deadline = time.monotonic() + 5
    while True:
        ps = c.exec(["ps", "-o", "pid,ppid,args"]).stdout.decode()
        left = "\n".join(line for line in ps.splitlines() if "sleep 98" in line)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize("mode", MODES)
def test_an_exec_timeout_ends_what_escaped_its_session(mode, as_unprivileged, busybox_dir):
    timed_out, left = in_mode(mode, as_unprivileged, _escape_the_timeout, str(busybox_dir))
    assert timed_out
    assert not left, f"processes the command started outlived its timeout:\n{left}"


# --- a container process that replaces /dev/ptmx ---------------------------------------------

# /dev is the container's tmpfs: its root may replace the ptmx symlink by anything.
PTMX_REPLACEMENTS = {
    "fifo": "rm /dev/ptmx && mkfifo /dev/ptmx",
    "symlink to a file": "ln -sfn /etc/passwd /dev/ptmx",
}


def _pty_after_ptmx_replaced(image_dir: str, replace: str) -> tuple[str, int, str]:
    """A root process of the container replaces /dev/ptmx, then the host asks for a pty: what
    /dev/ptmx was, and the exit code and output of a command on the pty."""
    from test_attacks import _image

    with sandkit.Container(_image(image_dir)) as c:
        replaced = c.exec(["sh", "-c", f"{replace} && ls -l /dev/ptmx"], timeout=10)
        assert replaced.exit_code == 0, replaced
        with c.spawn(["sh", "-c", "tty; test -t 0 && echo isatty"], tty=True) as p:
            output = b"".join(p.stdout)
            code = p.wait()
        return replaced.stdout.decode(), code, output.decode().replace("\r", "")


@pytest.mark.parametrize("replacement", PTMX_REPLACEMENTS)
@pytest.mark.parametrize("mode", MODES)
def test_a_pty_comes_from_the_containers_devpts_whatever_dev_ptmx_is(
    mode, replacement, as_unprivileged, busybox_dir
):
    listing, code, output = in_mode(
        mode,
        as_unprivileged,
        _pty_after_ptmx_replaced,
        str(busybox_dir),
        PTMX_REPLACEMENTS[replacement],
    )
    assert listing[0] in "pl", f"/dev/ptmx was not replaced: {listing}"  # a FIFO, a symlink
    assert code == 0 and output.startswith("/dev/pts/") and "isatty" in output, output


# --- a container process that mounts over /proc --------------------------------------------


def _tree_kill_under_a_fake_proc(image_dir: str, token: str) -> tuple[bool, bytes]:
    """A root process with CAP_SYS_ADMIN mounts a tmpfs over /proc, with a FIFO where the init
    reads a process's stat; then an exec's timeout (a tree kill) must still end it, and the init
    must go on serving."""
    from test_attacks import _image

    with sandkit.Container(_image(image_dir), cap_add=["SYS_ADMIN"]) as c:
        fake = c.exec(
            ["sh", "-c", "mount -t tmpfs none /proc && mkdir /proc/2 && mkfifo /proc/2/stat"],
            timeout=10,
        )
        assert fake.exit_code == 0, fake
        timed = c.exec(["sleep", token], timeout=1)
        served = c.exec(["echo", "served"], timeout=5)
    return timed.timed_out, served.stdout


def _kill_the_init_running(token: str) -> None:
    """SIGKILLs the init whose exec runs `sleep <token>` (its parent), should the test hang."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes() == f"sleep\0{token}\0".encode():
                status = (entry / "status").read_text()
                os.kill(int(status.split("PPid:")[1].split()[0]), 9)
        except (OSError, ValueError, IndexError):
            pass


@pytest.mark.parametrize("mode", MODES)
def test_an_exec_timeout_works_when_proc_is_mounted_over(mode, as_unprivileged, busybox_dir):
    import threading

    token = str(1_000_000 + time.monotonic_ns() % 1_000_000)
    box: dict[str, object] = {}

    def run():
        try:
            box["value"] = in_mode(
                mode, as_unprivileged, _tree_kill_under_a_fake_proc, str(busybox_dir), token
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        _kill_the_init_running(token)
        thread.join(30)
        pytest.fail("the init stopped serving once /proc was mounted over")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    assert box["value"] == (True, b"served\n")
