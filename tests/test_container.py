"""Containers against the real kernel: isolation, exec, files, lifecycle, errors."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
import trio
import trio.testing
from polling import POLL_SH, wait_until

import sandkit
from sandkit import errors

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]


def sh(container, script, **kwargs):
    return container.exec(["sh", "-c", script], **kwargs)


# --- isolation -------------------------------------------------------------------------------


def test_pid_1_is_the_sandkit_init(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(c, "cat /proc/1/comm; echo $$")
    comm, own_pid = r.stdout.decode().split()
    assert comm == "sandkit-init"
    assert int(own_pid) > 1


def test_the_hostname_is_the_containers(busybox):
    with sandkit.Container(busybox, hostname="box1") as c:
        assert sh(c, "hostname").stdout == b"box1\n"
    assert os.uname().nodename != "box1"
    for bad in ("x" * 65, "a\0b", ""):
        with pytest.raises(errors.ContainerError, match="1 to 64 bytes"):
            sandkit.Container(busybox, hostname=bad)


def test_default_network_has_only_loopback(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(c, "ls /sys/class/net; cat /proc/net/dev")
    names = r.stdout.decode().split("\n")[0].split()
    assert names == ["lo"], r.stdout
    assert "eth" not in r.stdout.decode()


def test_host_files_outside_the_image_are_invisible(busybox, tmp_path):
    canary = tmp_path / "host-secret"
    canary.write_text("secret")
    with sandkit.Container(busybox) as c:
        r = sh(c, f"cat {canary}; ls /; cat /etc/passwd")
    assert b"secret" not in r.stdout
    assert r.stdout.count(b"root:x:0:0") == 1 and b"sandkit-test" not in r.stdout


def test_writes_land_in_a_layer_of_their_own_and_vanish(busybox, busybox_dir):
    with sandkit.Container(busybox) as c:
        sh(c, "echo new > /new-file; rm /etc/group; echo changed > /etc/passwd", check=True)
        assert c.read_file("/new-file") == b"new\n"
        assert sh(c, "cat /etc/group").exit_code != 0
    assert not (busybox_dir / "new-file").exists()
    assert (busybox_dir / "etc/group").exists()
    assert b"changed" not in (busybox_dir / "etc/passwd").read_bytes()
    with sandkit.Container(busybox) as c:
        assert sh(c, "test -e /new-file").exit_code == 1


def test_read_only_root_refuses_writes(busybox):
    with sandkit.Container(busybox, read_only=True) as c:
        r = sh(c, "echo x > /file")
        assert r.exit_code != 0 and b"Read-only" in r.stderr
        assert sh(c, "echo x > /dev/shm/ok && cat /dev/shm/ok").stdout == b"x\n"


def test_dev_has_the_usual_devices_and_nothing_else(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(
            c,
            "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 2 /dev/zero | wc -c && ls /dev",
        )
    lines = r.stdout.decode().split()
    assert lines[:2] == ["4", "2"], r
    devices = set(lines[2:])
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"} <= devices
    assert not any(name.startswith(("sd", "vd", "nvme", "mem", "kmsg")) for name in devices)


def test_host_image_runs_host_programs_without_host_secrets():
    with sandkit.Container("host") as c:
        r = c.exec(["python3", "-c", "print(6 * 7)"])
        assert r.stdout == b"42\n", r
        assert c.exec(["cat", "/etc/shadow"]).exit_code != 0
        assert c.exec(["sh", "-c", "echo hi > /tmp/x && cat /tmp/x"]).stdout == b"hi\n"
        assert c.exec(["sh", "-c", "touch /usr/evil"]).exit_code != 0


# --- exec ------------------------------------------------------------------------------------


def test_exec_reports_exit_code_and_both_outputs(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(c, "echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr, r.signal, r.timed_out) == (
        3,
        b"out\n",
        b"err\n",
        None,
        False,
    )
    assert r.duration > 0


def test_exec_reports_a_signal(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(c, "kill -TERM $$")
    assert r.signal == signal.SIGTERM and r.exit_code == 128 + signal.SIGTERM


def test_stdin_reaches_the_process(busybox):
    with sandkit.Container(busybox) as c:
        assert c.exec(["cat"], input=b"hello\x00world").stdout == b"hello\x00world"
        assert c.exec(["cat"]).stdout == b""  # no input: stdin is /dev/null, not the host's


def test_env_workdir_and_user(busybox):
    with sandkit.Container(busybox, env={"A": "container", "B": "b"}, workdir="/tmp") as c:
        r = sh(c, "echo $A $B $C; pwd; id -u; id -g", env={"A": "exec", "C": "c"})
        assert r.stdout.decode().split() == ["exec", "b", "c", "/tmp", "0", "0"]
        r = sh(c, "id -u; id -g; id -G; echo $HOME", user="app")
        assert r.stdout.decode().split() == ["1000", "1000", "1000", "50", "/home/app"]
        assert sh(c, "id -u; id -g", user="4242:4343").stdout.decode().split() == ["4242", "4343"]
        assert sh(c, "id -u; id -g", user="nobody:app").stdout.decode().split() == ["65534", "1000"]


def test_timeout_kills_the_whole_tree(busybox):
    with sandkit.Container(busybox) as c:
        started = time.monotonic()
        r = sh(c, "sleep 100 & (sleep 200 &) ; echo started; sleep 300", timeout=0.5)
        # At once, not after the 2 s the host waits for output held open by an escaped process.
        assert time.monotonic() - started < 2
        assert r.timed_out and r.signal == signal.SIGKILL and r.stdout == b"started\n"
        left = sh(c, "ps -o comm | grep -c sleep").stdout
    assert left == b"0\n"


def test_check_raises_with_the_result_attached(busybox):
    with sandkit.Container(busybox) as c:
        with pytest.raises(sandkit.ExecError) as caught:
            sh(c, "echo bad >&2; exit 2", check=True)
        assert caught.value.result.exit_code == 2 and "bad" in str(caught.value)
        with pytest.raises(errors.ExecTimeoutError):
            sh(c, "sleep 10", timeout=0.2, check=True)


def test_large_output_and_large_input_arrive_whole(busybox):
    with sandkit.Container(busybox) as c:
        r = sh(c, "head -c 5000000 /dev/zero | tr '\\0' x; head -c 300000 /dev/zero >&2")
        assert r.stdout == b"x" * 5_000_000 and r.stderr == b"\0" * 300_000
        data = os.urandom(1_000_000)  # over what travels inside the request: fed through a pipe
        assert c.exec(["cat"], input=data).stdout == data
        assert c.exec(["cat"], input=data[:16384]).stdout == data[:16384]


def test_sync_exec_runs_on_the_callers_thread(busybox, monkeypatch):
    from sandkit import _portal

    with sandkit.Container(busybox) as c:

        def no_hand_off(*args):
            raise AssertionError("exec went through the loop thread")

        monkeypatch.setattr(_portal, "run", no_hand_off)
        assert sh(c, "echo direct", input=b"x").stdout == b"direct\n"
        assert sh(c, "sleep 10", timeout=0.2).timed_out
        monkeypatch.undo()


def test_sync_execs_from_many_threads_share_one_container(busybox):
    import concurrent.futures

    with sandkit.Container(busybox) as c, c.spawn(["sh", "-c", "sleep 0.5; echo late"]) as waited:

        def work(n: int) -> list[bytes]:
            return [sh(c, f"echo {n}-{k}; sleep 0.0{k % 3}").stdout for k in range(15)]

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            # one thread waits for a spawned process (on the loop) while the others exec
            waiting = pool.submit(waited.wait)
            results = list(pool.map(work, range(5)))
            started = time.monotonic()
            assert waiting.result(timeout=10) == 0 and time.monotonic() - started < 5
    assert results == [[f"{n}-{k}\n".encode() for k in range(15)] for n in range(5)]


def test_stopping_from_another_thread_ends_a_running_exec(busybox):
    import threading

    c = sandkit.Container(busybox).start()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            c.exec(["sleep", "100"])
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(
        lambda: sh(c, "ps -o comm | grep -qx sleep").exit_code == 0, "the exec to be running"
    )
    started = time.monotonic()
    c.stop()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], errors.ContainerNotRunningError)


def test_streaming_output_arrives_before_the_process_ends(busybox):
    with (
        sandkit.Container(busybox) as c,
        c.spawn(["sh", "-c", "echo first; sleep 30; echo second"]) as p,
    ):
        started = time.monotonic()
        assert p.stdout.read() == b"first\n"
        assert time.monotonic() - started < 5
        assert p.returncode is None
        p.kill()
        assert p.wait() == -signal.SIGKILL


def test_interactive_stdin_with_spawn(busybox):
    with (
        sandkit.Container(busybox) as c,
        c.spawn(["sh", "-c", "while read line; do echo got $line; done"]) as p,
    ):
        p.stdin.write(b"one\n")
        assert p.stdout.read() == b"got one\n"
        p.stdin.write(b"two\n")
        assert p.stdout.read() == b"got two\n"
        p.stdin.close()
        assert p.wait() == 0


def test_many_processes_at_once_in_one_container(busybox):
    with sandkit.Container(busybox) as c:
        procs = [c.spawn(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(20)]
        outputs = [b"".join(p.stdout) for p in procs]
        assert [p.wait() for p in procs] == [0] * 20
        for p in procs:
            p.close()
    assert outputs == [f"{i}\n".encode() for i in range(20)]


def test_a_pty_gives_a_terminal(busybox):
    with (
        sandkit.Container(busybox) as c,
        c.spawn(
            ["sh", "-c", "tty; test -t 0 && echo isatty; stty size"], tty=True, rows=33, cols=101
        ) as p,
    ):
        output = b"".join(p.stdout)
        assert p.wait() == 0
    text = output.decode().replace("\r", "")
    assert text.startswith("/dev/pts/") and "isatty" in text and "33 101" in text


# --- files -----------------------------------------------------------------------------------


def test_write_read_and_list_files(busybox):
    with sandkit.Container(busybox) as c:
        c.write_file("/tmp/data.bin", b"\x00\x01binary", mode=0o600)
        assert c.read_file("/tmp/data.bin") == b"\x00\x01binary"
        assert sh(c, "stat -c %a /tmp/data.bin").stdout == b"600\n"
        assert "data.bin" in c.listdir("/tmp")
        with pytest.raises(sandkit.ContainerError, match="no such file"):
            c.read_file("/nope")


def test_a_symlink_in_the_container_cannot_reach_a_host_file(busybox, tmp_path):
    host_secret = tmp_path / "secret"
    host_secret.write_text("host secret")
    with sandkit.Container(busybox) as c:
        sh(
            c,
            f"ln -s {host_secret} /tmp/link; ln -s /etc/passwd /tmp/passwd-link; mkdir -p {tmp_path}",
            check=True,
        )
        with pytest.raises(sandkit.ContainerError):
            c.read_file("/tmp/link")
        assert c.read_file("/tmp/passwd-link").startswith(b"root:x:0:0:root")
        c.write_file(str(host_secret), b"overwritten?")
    assert host_secret.read_text() == "host secret"


def test_mounts_bind_and_tmpfs(busybox, tmp_path):
    (tmp_path / "shared.txt").write_text("from host")
    with sandkit.Container(
        busybox, mounts=[f"{tmp_path}:/data:ro", sandkit.Mount.tmpfs("/scratch")]
    ) as c:
        assert sh(c, "cat /data/shared.txt").stdout == b"from host"
        assert sh(c, "echo x > /data/new").exit_code != 0
        assert sh(c, "echo x > /scratch/new && cat /scratch/new").stdout == b"x\n"
    with sandkit.Container(busybox, mounts=[f"{tmp_path}:/data"]) as c:
        sh(c, "echo written > /data/out", check=True)
    assert (tmp_path / "out").read_text() == "written\n"


# --- lifecycle and errors --------------------------------------------------------------------


def test_an_exception_inside_the_block_still_cleans_up(busybox):
    with pytest.raises(RuntimeError), sandkit.Container(busybox) as c:
        c.spawn(["sleep", "100"])
        raise RuntimeError("boom")
    assert not c.running


def test_using_a_stopped_container_is_a_clear_error(busybox):
    c = sandkit.Container(busybox).start()
    c.stop()
    c.stop()  # idempotent
    with pytest.raises(errors.ContainerNotRunningError, match="stopped"):
        c.exec(["true"])


def test_command_not_found_and_not_executable(busybox):
    with sandkit.Container(busybox) as c:
        with pytest.raises(errors.CommandNotFoundError, match="not found"):
            c.exec(["no-such-program"])
        c.write_file("/tmp/script", b"#!/bin/sh\necho hi\n", mode=0o644)
        with pytest.raises(errors.CommandNotExecutableError):
            c.exec(["/tmp/script"])
        with pytest.raises(errors.UserNotFoundError, match="nobody2"):
            c.exec(["true"], user="nobody2")
        with pytest.raises(errors.WorkdirError):
            c.exec(["true"], workdir="/does/not/exist")
        assert c.exec(["true"]).exit_code == 0  # the container still works after each error


def test_bad_image_directory_is_a_clear_error(tmp_path):
    with pytest.raises(errors.ImageError, match="does not exist"):
        sandkit.Image.from_directory(tmp_path / "missing")


def test_bad_mount_is_refused_before_anything_starts(busybox, tmp_path):
    with pytest.raises(errors.MountError, match="does not exist"):
        sandkit.Container(busybox, mounts=[f"{tmp_path}/missing:/x"]).start()
    with pytest.raises(errors.MountError, match="absolute"):
        sandkit.Container(busybox, mounts=[sandkit.Mount.tmpfs("relative")]).start()


def test_killing_the_init_from_outside_is_reported(busybox):
    with sandkit.Container(busybox) as c:
        p = c.spawn(["sleep", "100"])
        os.kill(c._core._init.pid, signal.SIGKILL)
        with pytest.raises(errors.ContainerDiedError, match="exited"):
            p.wait(timeout=10)
        with pytest.raises(errors.ContainerDiedError):
            c.exec(["true"])
        p.close()


def test_kill_9_of_the_host_process_leaves_no_container(busybox_dir, tmp_path):
    script = textwrap.dedent(f"""
        import sys, sandkit
        c = sandkit.Container(sandkit.Image.from_directory({str(busybox_dir)!r})).start()
        p = c.spawn(["sleep", "1000"])
        print(c._core._init.pid, flush=True)
        sys.stdin.read()
    """)
    host = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    init_pid = int(host.stdout.readline())
    assert Path(f"/proc/{init_pid}").exists()
    host.kill()
    host.wait()
    # The orphaned init must end on its own (whoever adopted it reaps it).
    deadline = time.monotonic() + 10
    while _alive(init_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(init_pid)


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- async, many at once ---------------------------------------------------------------------


@pytest.mark.trio
async def test_fifty_containers_at_once_under_trio(busybox):
    results = {}

    async def one(i):
        async with sandkit.AsyncContainer(busybox, hostname=f"c{i}") as c:
            results[i] = (await c.exec(["hostname"])).stdout

    async with anyio.create_task_group() as tasks:
        for i in range(50):
            tasks.start_soon(one, i)
    assert results == {i: f"c{i}\n".encode() for i in range(50)}


def test_the_asyncio_path_works(busybox):
    async def main():
        async with sandkit.AsyncContainer(busybox) as c:
            r = await c.exec(["sh", "-c", "echo asyncio"], timeout=5)
            p = await c.spawn(["cat"])
            await p.stdin.write(b"piped")
            p.stdin.close()
            chunks = [chunk async for chunk in p.stdout]
            assert await p.wait() == 0
            p.close()
            return r.stdout, b"".join(chunks)

    assert anyio.run(main, backend="asyncio") == (b"asyncio\n", b"piped")


# --- rootless --------------------------------------------------------------------------------


def _rootless_checks():
    # Built by the unprivileged user, as a rootless user's images are: its files are theirs, so
    # they map to root inside the user namespace (files of unmapped owners cannot be copied up).
    from conftest import make_busybox_rootfs

    root = make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    with sandkit.Container(sandkit.Image.from_directory(root)) as c:
        r = c.exec(["sh", "-c", "id -u; cat /proc/1/comm; ls /sys/class/net; hostname"])
        c.write_file("/tmp/f", b"data")
        data = c.read_file("/tmp/f")
        timed = c.exec(["sh", "-c", "sleep 100 & sleep 100"], timeout=0.3)
    return r.stdout.decode().split(), data, timed.timed_out, os.geteuid()


def test_rootless_container_works_as_an_unprivileged_user(as_unprivileged):
    out, data, timed_out, euid = as_unprivileged(_rootless_checks)
    assert euid != 0
    assert out[0] == "0" and out[2] == "lo"
    assert data == b"data" and timed_out


def test_rootless_host_image(as_unprivileged):
    def check():
        with sandkit.Container("host") as c:
            return c.exec(["sh", "-c", "echo $((6*7)); cat /etc/shadow"]).stdout

    assert as_unprivileged(check) == b"42\n"


def test_loopback_is_up_and_usable(busybox):
    with sandkit.Container(busybox) as c:
        assert b"UP" in sh(c, "ip link show lo").stdout
        listening = POLL_SH.format(
            condition="grep -q ':1F90 00000000:0000 0A' /proc/net/tcp"
        )  # port 8080
        r = sh(
            c,
            f"nc -l -p 8080 > /tmp/got & {listening}; echo hello | nc -w 1 127.0.0.1 8080; wait; cat /tmp/got",
            timeout=10,
        )
    assert r.stdout == b"hello\n", r


def test_a_container_ends_when_its_lifetime_is_over(busybox):
    asked = time.monotonic()
    with sandkit.Container(busybox, lifetime=0.5) as c:
        started = time.monotonic()
        with pytest.raises(errors.ContainerDiedError, match="lifetime is over"):
            c.exec(["sleep", "30"])
        ended = time.monotonic()
        assert not c.running
    # The clock starts during set-up: not before the call, and over half a second after it.
    assert ended - asked >= 0.5
    assert ended - started < 1.5, f"a lifetime of 0.5 s lasted {ended - started:.1f} s"


def test_the_writable_layer_has_an_inode_limit(busybox):
    with sandkit.Container(busybox, disk_inodes=500) as c:
        r = sh(c, "mkdir /many && cd /many && for i in $(seq 1000); do touch f$i || exit 1; done")
        assert r.exit_code != 0 and b"No space left" in r.stderr
        assert sh(c, "echo fine").stdout == b"fine\n"


def test_an_image_of_a_hundred_layers_mounts(tmp_path, busybox_dir):
    layers = [busybox_dir]
    for i in range(99):
        layer = tmp_path / f"layer-with-a-long-name-to-overflow-one-page-of-options-{i:03d}"
        (layer / "layers").mkdir(parents=True)
        (layer / "layers" / f"{i:03d}").write_text(str(i))
        layers.append(layer)
    image = sandkit.Image(layer_dirs=tuple(layers))
    assert len(":".join(map(str, layers))) > 4096
    with sandkit.Container(image) as c:
        assert len(c.listdir("/layers")) == 99
        assert sh(c, "cat /layers/098").stdout == b"98"


def test_the_containers_working_directory_is_created_like_dockers(busybox):
    with sandkit.Container(busybox, workdir="/srv/app", read_only=True) as c:
        assert sh(c, "pwd").stdout == b"/srv/app\n"
        with pytest.raises(errors.WorkdirError):  # but an exec's own workdir must exist
            c.exec(["true"], workdir="/not/there")


def test_device_nodes_other_than_devs_own_do_not_open(tmp_path, busybox_dir):
    # The host's root disk, as a node shipped in an image layer and as one made inside.
    disk = os.stat("/").st_dev
    major, minor = os.major(disk), os.minor(disk)
    layer = tmp_path / "layer"
    layer.mkdir()
    os.mknod(layer / "disk", 0o666 | stat.S_IFBLK, disk)
    image = sandkit.Image(layer_dirs=(busybox_dir, layer))
    with sandkit.Container(image, mounts=[f"{tmp_path}:/host-dir"]) as c:
        shipped = sh(c, "head -c 512 /disk | wc -c")
        made = sh(c, f"mknod /tmp/made b {major} {minor} && head -c 512 /tmp/made | wc -c")
        bound = sh(c, "head -c 512 /host-dir/layer/disk | wc -c")
        assert sh(c, "head -c 4 /dev/zero | wc -c").stdout == b"4\n"  # /dev's own still work
    for r in (shipped, made, bound):
        assert r.stdout.strip() == b"0" and b"Permission denied" in r.stderr, r


def test_seccomp_per_container_and_per_exec(busybox):
    from sandkit.security import SeccompProfile

    def mode(c, **kwargs):
        return sh(c, "grep Seccomp: /proc/self/status", **kwargs).stdout.split()[1]

    with sandkit.Container(busybox) as c:
        assert mode(c) == b"2"
        no_mkdir = SeccompProfile.docker_default().deny("mkdir", "mkdirat")
        r = sh(c, "mkdir /tmp/x", seccomp=no_mkdir)
        assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, r
        assert sh(c, "mkdir /tmp/y").exit_code == 0  # the container's own profile is unchanged
        with pytest.raises(sandkit.SecurityConfigError, match="seccomp=None"):
            c.exec(["true"], seccomp=None)
    with sandkit.Container(busybox, seccomp=None) as c:
        assert mode(c) == b"0"


def test_write_file_replaces_content_and_reports_a_full_disk(busybox):
    with sandkit.Container(busybox, disk_size="1m") as c:
        c.write_file("/tmp/f", b"a long first version")
        c.write_file("/tmp/f", b"short")
        assert c.read_file("/tmp/f") == b"short"
        with pytest.raises(sandkit.ContainerError, match="cannot write '/big'"):
            c.write_file("/big", b"x" * (4 << 20))


@pytest.mark.trio
async def test_an_exec_awaited_while_another_task_stops_the_container(busybox):
    # The awaiting task waits for the control socket to be readable; stop() closes it on the
    # same loop, which took the fd out of the loop's epoll set: the task hung for ever.
    failure: list[BaseException] = []
    async with sandkit.AsyncContainer(busybox) as c:

        async def run() -> None:
            try:
                await c.exec(["sleep", "1000"])
            except errors.SandkitError as exc:
                failure.append(exc)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run)
                await wait_for_process(c, "sleep 1000")
                # until the exec's task waits on the socket (no other task runs)
                await trio.testing.wait_all_tasks_blocked()
                await c.stop()
    assert [type(f) for f in failure] == [errors.ContainerNotRunningError]


async def wait_for_process(c: sandkit.AsyncContainer, args: str) -> None:
    """Until a process with these arguments runs in the container (ps, polled)."""
    while True:
        if args.encode() in (await c.exec(["ps", "-o", "args"])).stdout:
            return
        await anyio.sleep(0.01)
