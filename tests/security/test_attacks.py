"""Hostile code inside a container, in root mode and in rootless mode.

Each attack runs inside a container (static C helpers from attacks/*.c, bind-mounted read-only at
/attacks) and must fail there: a helper prints ``HOLE ...`` and exits non-zero for every attempt
that worked. Then the host must be unchanged: a canary file, the processes we started, a set of
/proc/sys values, the init binary and the image's own files.

A real hole is kept as a failing test marked ``xfail(strict=True)`` with what it is; fixing the
hole makes the test pass, and the strict xfail then fails until the mark is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
from docker_defaults import (
    DOCKER_CAP_MASK,
    DOCKER_MASKED_PATHS,
    DOCKER_NAMESPACES,
    DOCKER_READONLY_PATHS,
)
from proctable import descendants
from spares import STARTS, started

import sandkit

ATTACKS = Path(__file__).parent / "attacks"
MODES = ["root", "rootless"]

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="the attack suite runs as root (it covers rootless mode as a user it creates)",
    ),
]


# --- fixtures --------------------------------------------------------------------------------


def _open_to_others(path: Path) -> None:
    # The unprivileged user must reach what sits under pytest's private tmp directories.
    for parent in [path, *path.parents]:
        if str(parent).startswith(tempfile.gettempdir()) and parent != Path(tempfile.gettempdir()):
            os.chmod(parent, os.stat(parent).st_mode | 0o055)


@pytest.fixture(autouse=True)
def _sandkit_loaded(warmed_up):
    """The C module and the init memfd are loaded as root first: the rootless child, forked from
    us, cannot read this checkout or the interpreter's site-packages itself."""


@pytest.fixture(scope="session")
def attack_bin() -> Path:
    """The helpers, compiled static (the busybox image has no libc), in a directory to bind.
    Not under pytest's basetemp: a concurrent pytest run on the host prunes old basetemps."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the attack helpers: apt-get install gcc libc6-dev")
    out = Path(tempfile.mkdtemp(prefix="sandkit-attacks-"))
    try:
        for src in sorted(ATTACKS.glob("*.c")):
            subprocess.run(
                [gcc, "-static", "-O1", "-Wall", "-o", str(out / src.stem), str(src)],
                check=True,
                capture_output=True,
            )
        _open_to_others(out)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def sentinel():
    """A host process that must stay alive, untraced and unstopped through every attack."""
    proc = subprocess.Popen(["sleep", "100000"])
    yield proc
    proc.kill()
    proc.wait()


# Host kernel settings a container must not be able to change (missing ones are skipped).
SYSCTLS = [
    "kernel/core_pattern", "kernel/core_uses_pid", "kernel/hostname", "kernel/domainname",
    "kernel/panic", "kernel/panic_on_oops", "kernel/modprobe", "kernel/printk", "kernel/sysrq",
    "kernel/ctrl-alt-del", "kernel/perf_event_paranoid", "kernel/kptr_restrict",
    "kernel/dmesg_restrict", "kernel/unprivileged_bpf_disabled", "kernel/pid_max",
    "vm/overcommit_memory", "vm/swappiness", "net/ipv4/ip_forward", "fs/protected_symlinks",
    "user/max_user_namespaces", "dev/tty/legacy_tiocsti",
]  # fmt: skip


def _sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        try:
            values[name] = Path("/proc/sys", name).read_text()
        except OSError:
            pass
    return values


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _release_agents() -> dict[str, str]:
    agents = {}
    for path in Path("/sys/fs/cgroup").glob("*/release_agent"):
        try:
            agents[str(path)] = path.read_text()
        except OSError:
            pass
    return agents


def _attack_processes() -> list[str]:
    """Processes of ours still running one of the helpers (a container that outlived its test).
    Only our descendants: another test run on the same host has its own (orphans of a container
    would be re-parented to us, the subreaper, so they are found too)."""
    left = []
    for pid in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"/attacks/"):
            left.append(f"{pid}: {cmd!r}")
    return left


class HostState:
    """What the host looked like before an attack; `check()` compares, restoring any sysctl."""

    def __init__(self, canary_dir: Path, sentinel: subprocess.Popen, busybox_dir: Path) -> None:
        from sandkit.runtime import spawn

        self.canary_dir = canary_dir
        self.canary = canary_dir / "canary"
        self.canary.write_bytes(b"host canary\n")
        os.chmod(canary_dir, 0o777)  # writable by the rootless user too: a real target either way
        os.chmod(self.canary, 0o666)
        self.sentinel = sentinel
        self.sysctls = _sysctls()
        self.agents = _release_agents()
        self.memfd = spawn.init_memfd()
        self.init_hash = self._memfd_hash()
        self.busybox = busybox_dir / "bin/busybox"
        self.busybox_hash = _sha(self.busybox)
        self.python_hash = _sha(os.path.realpath(sys.executable))
        self.canary_stat = self._canary_stat()
        self.children = descendants(os.getpid())

    def _memfd_hash(self) -> str:
        fd = self.memfd if isinstance(self.memfd, int) else self.memfd.fileno()
        return hashlib.sha256(os.pread(fd, 64 << 20, 0)).hexdigest()

    def _canary_stat(self) -> tuple:
        st = os.stat(self.canary)
        return (
            self.canary.read_bytes(),
            st.st_mtime_ns,
            st.st_ino,
            sorted(os.listdir(self.canary_dir)),
        )

    def check(self) -> None:
        changed = {
            k: (v, _sysctls().get(k)) for k, v in self.sysctls.items() if _sysctls().get(k) != v
        }
        for name, (before, _) in changed.items():  # put the host back before failing
            try:
                Path("/proc/sys", name).write_text(before)
            except OSError:
                pass
        assert not changed, f"host sysctls changed from inside a container: {changed}"
        assert _release_agents() == self.agents, "a cgroup release_agent of the host changed"
        assert self._canary_stat() == self.canary_stat, (
            "the host canary file or its directory changed"
        )
        assert self._memfd_hash() == self.init_hash, "the sealed init binary changed"
        assert _sha(self.busybox) == self.busybox_hash, (
            "the image's own busybox changed on the host"
        )
        assert _sha(os.path.realpath(sys.executable)) == self.python_hash, (
            "the host's python changed"
        )
        status = Path(f"/proc/{self.sentinel.pid}/status").read_text()
        assert self.sentinel.poll() is None, "a host process was killed"
        assert "TracerPid:\t0\n" in status, "a host process is being traced"
        assert "State:\tS" in status, f"a host process is not sleeping: {status.splitlines()[2]}"
        assert not _attack_processes(), (
            f"container processes outlived their container: {_attack_processes()}"
        )
        deadline = time.monotonic() + 5
        while (extra := descendants(os.getpid()) - self.children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not extra, f"processes left behind on the host: {extra}"


@pytest.fixture
def host(tmp_path, sentinel, busybox_dir):
    canary_dir = tmp_path / "canary"
    canary_dir.mkdir()
    _open_to_others(canary_dir)
    state = HostState(canary_dir, sentinel, busybox_dir)
    yield state
    state.check()


# --- running things in a mode ----------------------------------------------------------------


def _image(root_image_dir: str | None) -> sandkit.Image:
    """The busybox image: the session's in root mode; built by the user itself in rootless mode
    (so its files belong to the user, who is root inside)."""
    if root_image_dir is not None and os.geteuid() == 0:
        return sandkit.Image.from_directory(root_image_dir)
    from conftest import make_busybox_rootfs

    root = Path(os.environ["SANDKIT_HOME"]) / "rootfs"
    if not (root / "bin/busybox").exists():
        make_busybox_rootfs(root)
    return sandkit.Image.from_directory(root)


def in_mode(mode: str, as_unprivileged, fn, *args):
    if mode == "root":
        return fn(*args)
    return as_unprivileged(fn, *args)


def _run_helpers(image_dir, bindir, commands, options=None):
    """Run each helper command line in one container; return (exit code, stdout, stderr)s."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rootless limits fall back to rlimits, with a warning
        with sandkit.Container(
            _image(image_dir), mounts=[f"{bindir}:/attacks:ro"], **(options or {})
        ) as c:
            for argv in commands:
                r = c.exec(argv, timeout=60)
                results.append(
                    (
                        r.exit_code,
                        r.stdout.decode(errors="replace"),
                        r.stderr.decode(errors="replace"),
                    )
                )
            assert c.exec(["true"]).exit_code == 0, "the container broke during the attack"
    return results


def attack(mode, as_unprivileged, busybox_dir, bindir, *commands, **options):
    """Run helper command lines in a container in ``mode``; fail on any hole they report."""
    results = in_mode(
        mode,
        as_unprivileged,
        _run_helpers,
        str(busybox_dir),
        str(bindir),
        [list(c) for c in commands],
        options,
    )
    report = []
    for argv, (code, out, err) in zip(commands, results, strict=True):
        holes = [line for line in out.splitlines() if line.startswith("HOLE")]
        if code != 0 or holes:
            report.append(
                f"{' '.join(argv)} (exit {code}): "
                + "; ".join(holes or [err.strip() or out.strip()])
            )
    assert not report, "attacks that worked:\n" + "\n".join(report)
    return results


# --- the attacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_overwrite_init_or_own_binary_through_proc_exe(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/escape", "exe"])


def _workdir_attack(image_dir, bindir, canary):
    outcomes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(
            _image(image_dir),
            mounts=[f"{bindir}:/attacks:ro"],
            memory="256m",
            pids_limit=1000,
            accounting=True,
        ) as c:
            workdirs = [f"/proc/self/fd/{n}" for n in range(3, 40)]
            workdirs += ["/proc/1/cwd", "/proc/1/root", "/proc/self/root/..", "/proc/1/fd/3"]
            for wd in workdirs:
                try:
                    r = c.exec(["/attacks/escape", "cwd", canary], workdir=wd, timeout=10)
                except sandkit.WorkdirError:
                    continue  # refused: the right answer
                outcomes[wd] = (r.exit_code, r.stdout.decode(errors="replace"))
    return outcomes


@pytest.mark.parametrize("mode", MODES)
def test_leaked_fd_as_workdir(mode, as_unprivileged, busybox_dir, attack_bin, host):
    outcomes = in_mode(
        mode, as_unprivileged, _workdir_attack, str(busybox_dir), str(attack_bin), str(host.canary)
    )
    escaped = {wd: out for wd, (code, out) in outcomes.items() if code != 0 or "HOLE" in out}
    assert not escaped, f"working directories outside the container: {escaped}"


@pytest.mark.parametrize("mode", MODES)
def test_writes_to_proc_sys_core_pattern_sysrq(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "sysctl"])


@pytest.mark.parametrize("mode", MODES)
def test_mount_cgroupfs_and_write_release_agent(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "cgroup"])


@pytest.mark.parametrize("mode", MODES)
def test_keyctl(mode, as_unprivileged, busybox_dir, attack_bin, host):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "keyctl"])
    try:
        assert "sandkit-attack" not in Path("/proc/keys").read_text()
    except FileNotFoundError:
        pass


@pytest.mark.parametrize("mode", MODES)
def test_nested_namespaces_unshare_clone_clone3(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "userns"])


@pytest.mark.parametrize("mode", MODES)
def test_open_by_handle_at(mode, as_unprivileged, busybox_dir, attack_bin, host):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/escape", "handle"])


@pytest.mark.parametrize("mode", MODES)
def test_ptrace_and_signal_processes_outside(mode, as_unprivileged, busybox_dir, attack_bin, host):
    attack(
        mode,
        as_unprivileged,
        busybox_dir,
        attack_bin,
        ["/attacks/escape", "ptrace", str(host.sentinel.pid)],
    )


@pytest.mark.parametrize("mode", MODES)
def test_chroot_breakout(mode, as_unprivileged, busybox_dir, attack_bin, host):
    attack(
        mode,
        as_unprivileged,
        busybox_dir,
        attack_bin,
        ["/attacks/escape", "chroot", str(host.canary)],
    )


@pytest.mark.parametrize("mode", MODES)
def test_mount_and_new_mount_api(mode, as_unprivileged, busybox_dir, attack_bin, host):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "mount"])
    host_mounts = Path("/proc/self/mountinfo").read_text()
    assert str(host.canary_dir) not in host_mounts and "/attacks" not in host_mounts


@pytest.mark.parametrize("mode", MODES)
def test_kernel_modules_kexec_bpf_ioports(mode, as_unprivileged, busybox_dir, attack_bin, host):
    before = Path("/proc/modules").read_text() if Path("/proc/modules").exists() else None
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/kernel", "modules"])
    after = Path("/proc/modules").read_text() if Path("/proc/modules").exists() else None
    assert before == after


@pytest.mark.parametrize("mode", MODES)
def test_mknod_and_open_host_devices(mode, as_unprivileged, busybox_dir, attack_bin, host):
    disk = os.stat("/").st_dev
    attack(
        mode,
        as_unprivileged,
        busybox_dir,
        attack_bin,
        ["/attacks/kernel", "mknod", str(os.major(disk)), str(os.minor(disk))],
    )


def _tiocsti_attack(image_dir, bindir):
    with sandkit.Container(_image(image_dir), mounts=[f"{bindir}:/attacks:ro"]) as c:
        piped = c.exec(["/attacks/escape", "tiocsti"], timeout=10)
        with c.spawn(["/attacks/escape", "tiocsti"], tty=True) as p:
            timer = threading.Timer(20, p.kill)
            timer.start()
            out = b"".join(p.stdout)
            code = p.wait()
            timer.cancel()
    return piped.exit_code, piped.stdout.decode(), code, out.decode(errors="replace")


@pytest.mark.parametrize("mode", MODES)
def test_tiocsti_injection(mode, as_unprivileged, busybox_dir, attack_bin, host):
    piped_code, piped_out, tty_code, tty_out = in_mode(
        mode, as_unprivileged, _tiocsti_attack, str(busybox_dir), str(attack_bin)
    )
    assert piped_code == 0 and "HOLE" not in piped_out, piped_out
    assert tty_code == 0 and "HOLE" not in tty_out, tty_out


@pytest.mark.parametrize("mode", MODES)
def test_reach_the_host_through_the_agents_socket(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    attack(mode, as_unprivileged, busybox_dir, attack_bin, ["/attacks/escape", "socket"])


def _hostile_dev_images(image_dir_parent: str, canary_dir: str):
    """Images whose /dev/null, /dev, /proc or /sys point at a host directory; start each, write
    through its /dev/null, check what it is inside."""
    from conftest import make_busybox_rootfs

    target = f"{canary_dir}/canary"
    layouts = {
        "dev-null-symlink": {"dev/null": target, "dev/zero": target, "dev/tty": target},
        "dev-symlink": {"dev": canary_dir},
        "dev-relative-symlink": {"dev": "../../../../../../../../.." + canary_dir},
        "proc-symlink": {"proc": canary_dir},
        "sys-symlink": {"sys": canary_dir},
        "shm-symlink": {"dev/shm": canary_dir},
    }
    seen = {}
    for name, links in layouts.items():
        root = make_busybox_rootfs(Path(image_dir_parent) / name)
        for rel, dest in links.items():
            p = root / rel
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(dest)
        try:
            with sandkit.Container(sandkit.Image.from_directory(root)) as c:
                script = (
                    "echo pwned > /dev/null; echo pwned > /dev/zero; : > /dev/shm/pwned; "
                    "stat -c '%F %t:%T' /dev/null; ls /proc/self/status"
                )
                r = c.exec(["sh", "-c", script], timeout=10)
                seen[name] = (r.exit_code, r.stdout.decode(), r.stderr.decode())
        except sandkit.ContainerStartError as exc:
            seen[name] = ("refused", str(exc), "")
    return seen


@pytest.mark.parametrize("mode", MODES)
def test_dev_null_symlink_in_image(mode, as_unprivileged, tmp_path, host):
    images = tmp_path / "images"
    images.mkdir()
    if mode == "rootless":
        os.chown(images, *__import__("conftest").unprivileged_ids())
    _open_to_others(images)
    seen = in_mode(mode, as_unprivileged, _hostile_dev_images, str(images), str(host.canary_dir))
    for name, (code, out, err) in seen.items():
        if code == "refused":
            continue  # refusing such an image is fine too
        assert "character special file 1:3" in out, (
            f"{name}: /dev/null inside is not the null device: {out} {err}"
        )
        assert "/proc/self/status" in out, f"{name}: /proc inside is not proc: {out} {err}"


# --- resource exhaustion: the container hits its limit, the host and other containers run on -


def _others_keep_running(image) -> None:
    """While a container is under attack: the host can fork, another container can run."""
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0
    with sandkit.Container(image) as other:
        r = other.exec(["echo", "alive"], timeout=10)
    assert r.stdout == b"alive\n"


def _fork_bomb(image_dir, bindir, limit):
    image = _image(image_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(image, mounts=[f"{bindir}:/attacks:ro"], pids_limit=limit) as c:
            with c.spawn(["/attacks/bombs", "fork", "100000"]) as p:
                timer = threading.Timer(30, p.kill)
                timer.start()
                line = p.stdout.read()
                _others_keep_running(image)
                p.kill()
                p.wait(timeout=20)
                timer.cancel()
            alive = c.exec(["echo", "after"], timeout=10).stdout
    return line.decode(), alive


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_hits_pids_limit(mode, as_unprivileged, busybox_dir, attack_bin, host):
    line, alive = in_mode(mode, as_unprivileged, _fork_bomb, str(busybox_dir), str(attack_bin), 64)
    forked = int(line.split()[1])
    assert forked < 64 and "EAGAIN" in line, line
    assert alive == b"after\n"  # the container itself recovers once the bomb is killed


def _memory_bomb(image_dir, bindir):
    image = _image(image_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(image, mounts=[f"{bindir}:/attacks:ro"], memory="64m") as c:
            r = c.exec(["/attacks/bombs", "mem", "2048"], timeout=60)
            _others_keep_running(image)
            after = c.exec(["echo", "after"], timeout=10).stdout
    return r.exit_code, r.stdout.decode(), r.oom_killed, after


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb_hits_memory_limit(mode, as_unprivileged, busybox_dir, attack_bin, host):
    code, out, oom, after = in_mode(
        mode, as_unprivileged, _memory_bomb, str(busybox_dir), str(attack_bin)
    )
    reached = [int(line.split()[1]) for line in out.splitlines() if line.startswith("mem ")]
    assert "done" not in out, out
    assert max(reached, default=0) <= 72, out  # 64 MiB, give or take a progress step
    if mode == "root":
        assert oom and code == 137  # cgroup OOM kill, reported as such
    assert after == b"after\n"


def _fill(image_dir, bindir, targets):
    image = _image(image_dir)
    results = {}
    for path in targets:  # one container each: what one fills must not count against the next
        with sandkit.Container(image, mounts=[f"{bindir}:/attacks:ro"], disk_size="16m") as c:
            r = c.exec(["/attacks/bombs", "fill", path, "256"], timeout=60)
            results[path] = r.stdout.decode()
            _others_keep_running(image)
    return results


@pytest.mark.parametrize("mode", MODES)
def test_filling_the_disk_hits_disk_size(mode, as_unprivileged, busybox_dir, attack_bin, host):
    results = in_mode(
        mode,
        as_unprivileged,
        _fill,
        str(busybox_dir),
        str(attack_bin),
        ["/fill", "/tmp/fill", "/dev/fill"],
    )
    for path, out in results.items():
        wrote = int(out.split()[1])
        assert wrote <= 16 and "ENOSPC" in out, f"{path}: {out}"


@pytest.mark.parametrize("mode", MODES)
def test_filling_dev_shm_is_bounded(mode, as_unprivileged, busybox_dir, attack_bin, host):
    results = in_mode(
        mode, as_unprivileged, _fill, str(busybox_dir), str(attack_bin), ["/dev/shm/fill"]
    )
    out = results["/dev/shm/fill"]
    assert int(out.split()[1]) <= 64 and "ENOSPC" in out, out


def _inode_bomb(image_dir, bindir):
    image = _image(image_dir)
    with sandkit.Container(image, mounts=[f"{bindir}:/attacks:ro"], disk_size="16m") as c:
        r = c.exec(["/attacks/bombs", "inodes", "/tmp/i", "1000000"], timeout=120)
        _others_keep_running(image)
    return r.stdout.decode()


@pytest.mark.parametrize("mode", MODES)
def test_a_million_inodes_hits_a_limit(mode, as_unprivileged, busybox_dir, attack_bin, host):
    out = in_mode(mode, as_unprivileged, _inode_bomb, str(busybox_dir), str(attack_bin))
    assert int(out.split()[1]) < 1_000_000 and "ENOSPC" in out, out


# --- the container's own view: fds, masked paths, capabilities ----------------------------------


def _fd_view(image_dir, bindir):
    # Host fds that a careless runtime would pass on: inheritable ones, a socket, a directory.
    bait = [os.open("/", os.O_RDONLY | os.O_DIRECTORY), os.open("/etc/passwd", os.O_RDONLY)]
    sock_a, sock_b = __import__("socket").socketpair()
    for fd in [*bait, sock_a.fileno(), sock_b.fileno()]:
        os.set_inheritable(fd, True)
    try:
        views = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            limits = {"memory": "256m", "pids_limit": 500, "accounting": True}
            for label, options in (("plain", {}), ("limits", limits)):
                with sandkit.Container(
                    _image(image_dir), mounts=[f"{bindir}:/attacks:ro"], **options
                ) as c:
                    views[label] = c.exec(["/attacks/escape", "fds"], timeout=10).stdout.decode()
                    views[label + "-sh"] = c.exec(
                        ["ls", "-l", "/proc/self/fd/"], timeout=10
                    ).stdout.decode()
                    with c.spawn(["/attacks/escape", "fds"], tty=True) as p:
                        views[label + "-tty"] = b"".join(p.stdout).decode(errors="replace")
                        p.wait(timeout=10)
        return views
    finally:
        for fd in bait:
            os.close(fd)
        sock_a.close()
        sock_b.close()


@pytest.mark.parametrize("mode", MODES)
def test_no_host_fd_reaches_a_container_process(
    mode, as_unprivileged, busybox_dir, attack_bin, host
):
    views = in_mode(mode, as_unprivileged, _fd_view, str(busybox_dir), str(attack_bin))
    for label, out in views.items():
        if label.endswith("-sh"):
            fds = [line.split()[-3] for line in out.splitlines() if " -> " in line]
            assert len(fds) <= 4, f"{label}: {out}"  # 0, 1, 2 and ls's own directory fd
            continue
        fds = {
            line.split()[1]: line.split(maxsplit=2)[2] if len(line.split()) > 2 else ""
            for line in out.splitlines()
            if line.startswith("fd ")
        }
        assert sorted(fds) == ["0", "1", "2"], f"{label}: {out}"
        for target in fds.values():
            assert target == "/dev/null" or target.startswith(("pipe:", "/dev/pts/")), (
                f"{label}: {out}"
            )


def _proc_sys_view(image_dir, masked, readonly, start="fresh"):
    """One line per path: how a masked path looks (an empty directory, or a file and its device
    and size), and for a read-only one its mount options and what a write attempt gets. The
    attempt changes nothing that matters even where it succeeds: `touch -c` only sets the
    times of the procfs inode (a mount that refuses writes refuses that with EROFS first)."""
    script = []
    for p in masked:
        script.append(
            f'if [ -d {p} ]; then echo "{p} dir $(ls -A {p} | wc -l)"; '
            f'elif [ -e {p} ]; then echo "{p} file $(stat -c %t:%T {p}) $(head -c 64 {p} | wc -c)"; '
            f'else echo "{p} absent"; fi'
        )
    for p in readonly:
        probe = f"touch -c {p}"
        script.append(
            f'if [ -e {p} ]; then echo "{p} ro $(awk \'$5 == "{p}" {{print $6}}\' /proc/self/mountinfo) '
            f"$({probe} 2>&1 | grep -q 'Read-only file system' && echo EROFS || echo writable)\"; "
            f'else echo "{p} absent"; fi'
        )
    script.append('echo "/sys ro $(awk \'$5 == "/sys" {print $6}\' /proc/self/mountinfo)"')
    script.append(
        "touch /sys/kernel/sandkit 2>/dev/null && echo '/sys WRITABLE'; "
        "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo '/proc/sys WRITABLE'; true"
    )
    with started(_image(image_dir), start) as c:
        return c.exec(["sh", "-c", "\n".join(script)], timeout=10).stdout.decode()


def check_masked_and_readonly(out: str) -> None:
    """Docker's own lists (not sandkit's): each masked path reads empty, each read-only path
    refuses a write with EROFS. A path this host's kernel lacks has nothing to hide."""
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert "WRITABLE" not in out, out
    for p in DOCKER_MASKED_PATHS:
        if not os.path.exists(p):
            continue
        kind, *rest = lines[p]
        if kind == "dir":
            assert rest == ["0"], f"{p} is not masked: {out}"
        else:
            assert kind == "file" and rest == ["1:3", "0"], f"{p} is not masked: {out}"
    for p in DOCKER_READONLY_PATHS:
        if not os.path.exists(p):
            continue
        kind, *opts = lines[p]
        assert kind == "ro" and opts[-1] == "EROFS", f"{p} is not read-only: {out}"
        assert opts[0].split(",")[0] == "ro", f"{p} is not mounted read-only: {out}"
    assert lines["/sys"][1].split(",")[0] == "ro", out


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("mode", MODES)
def test_docker_masked_and_readonly_paths_hold(mode, start, as_unprivileged, busybox_dir):
    out = in_mode(
        mode,
        as_unprivileged,
        _proc_sys_view,
        str(busybox_dir),
        list(DOCKER_MASKED_PATHS),
        list(DOCKER_READONLY_PATHS),
        start,
    )
    check_masked_and_readonly(out)


def _status(image_dir, start="fresh"):
    fields = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    views = {}
    with started(_image(image_dir), start) as c:
        users = [None] if os.geteuid() != 0 else [None, "app"]  # rootless maps only root
        for user in users:
            out = c.exec(["cat", "/proc/self/status"], user=user, timeout=10).stdout.decode()
            views[user or "root"] = {
                line.split(":")[0]: line.split()[1]
                for line in out.splitlines()
                if line.split(":")[0] in fields
            }
    return views


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("mode", MODES)
def test_capabilities_no_new_privs_seccomp(mode, start, as_unprivileged, busybox_dir):
    views = in_mode(mode, as_unprivileged, _status, str(busybox_dir), start)
    check_status(views)


def check_status(views: dict[str, dict[str, str]]) -> None:
    """Docker's capability set (a literal, not sandkit's table) for root, none for a user, and
    sandkit's no_new_privs and seccomp filter for both."""
    root = views["root"]
    assert int(root["CapEff"], 16) == DOCKER_CAP_MASK, root
    assert int(root["CapPrm"], 16) == DOCKER_CAP_MASK, root
    assert int(root["CapBnd"], 16) == DOCKER_CAP_MASK, root
    assert int(root["CapAmb"], 16) == 0
    for view in views.values():
        assert view["NoNewPrivs"] == "1" and view["Seccomp"] == "2", view
        assert int(view["CapBnd"], 16) == DOCKER_CAP_MASK
    if "app" in views:
        assert int(views["app"]["CapEff"], 16) == 0 and int(views["app"]["CapPrm"], 16) == 0


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("mode", MODES)
def test_inheritable_capabilities_are_empty(mode, start, as_unprivileged, busybox_dir):
    views = in_mode(mode, as_unprivileged, _status, str(busybox_dir), start)
    assert int(views["root"]["CapInh"], 16) == 0, views


def _namespaces(image_dir, start):
    """The namespaces of the caller, of the container's init and of a process in it."""
    kinds = ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup")
    with started(_image(image_dir), start) as c:
        init = c._core._init.pid
        inside = (
            c.exec(
                [
                    "sh",
                    "-c",
                    "for n in " + " ".join(kinds) + "; do readlink /proc/self/ns/$n; done",
                ],
                timeout=10,
            )
            .stdout.decode()
            .split()
        )
        return {
            kind: (
                os.readlink(f"/proc/self/ns/{kind}"),
                os.readlink(f"/proc/{init}/ns/{kind}"),
                seen,
            )
            for kind, seen in zip(kinds, inside, strict=True)
        }


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("mode", MODES)
def test_namespaces_are_the_containers_own(mode, start, as_unprivileged, busybox_dir):
    """Docker's namespaces (a process in the container shares its init's, none of the host's),
    and a user namespace of its own in rootless mode."""
    views = in_mode(mode, as_unprivileged, _namespaces, str(busybox_dir), start)
    own = [*DOCKER_NAMESPACES, "user"] if mode == "rootless" else DOCKER_NAMESPACES
    for kind, (host, init, inside) in views.items():
        assert inside == init, f"{kind}: the process is not in its container's namespace: {views}"
        if kind in own:
            assert init != host, f"{kind}: the container shares the host's namespace: {views}"
