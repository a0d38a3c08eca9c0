"""Detached containers in the API (``detach=True``, `Container.attach`): several processes of one
user share one container through its supervisor, which `sandkit run -d` uses too.

Every other process here is a real one (a `python -c` child): the creator, the workers, the
CLI. "No process left" is checked by pid: the supervisor's and every process below it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
from polling import wait_until
from proctable import children, descendants

import sandkit
from sandkit import errors
from sandkit.detached import state

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def sandkit_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sandkit_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m sandkit ARGV...`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "sandkit", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=sandkit_env(),
        check=False,
        stdin=subprocess.DEVNULL,
    )


def python(
    code: str, *, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``code`` run by another Python process of this user (its output captured)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=sandkit_env(),
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def alive(pid: int) -> bool:
    return state.process_start_time(pid) is not None


def supervisor_and_below(name: str) -> set[int]:
    """The pids of the container's supervisor and of everything below it (the init and the
    container's processes)."""
    pid = int(state.find(name).state["supervisor_pid"])
    return {pid} | descendants(pid)


@pytest.fixture
def detached():
    """A detached container of the host's programs, named "shared"; removed after the test."""
    container = sandkit.Container("host", name="shared", detach=True).start()
    yield container
    container.remove()


# --- one container, many processes --------------------------------------------------------


def test_a_second_process_attaches_and_uses_it(detached, tmp_path):
    host_file = tmp_path / "in.txt"
    host_file.write_text("copied in\n")
    out = python(
        f"""
        import json, sandkit
        c = sandkit.Container.attach("shared")
        r = c.exec(["sh", "-c", 'cat; echo "$X $(id -u) $(pwd)"; echo e >&2; exit 3'],
                   input=b"in:", env={{"X": "x"}}, user="65534", workdir="/tmp", timeout=30)
        t = c.exec(["sleep", "30"], timeout=0.5)
        c.write_file("/tmp/w", b"written")
        c.copy_in({str(host_file)!r}, "/tmp/copied.txt")
        c.copy_out("/tmp/w", {str(tmp_path / "out")!r})
        with c:  # leaving the block lets go of the container; it goes on
            pass
        print(json.dumps({{
            "r": [r.exit_code, r.stdout.decode(), r.stderr.decode()],
            "timed_out": t.timed_out,
            "read": c.read_file("/tmp/copied.txt").decode(),
            "size": c.stat("/tmp/w").size,
            "id": c.id, "name": c.name, "running": c.running,
        }}))
        """
    )
    seen = json.loads(out.stdout)
    assert seen["r"] == [3, "in:x 65534 /tmp\n", "e\n"]
    assert seen["timed_out"] is True
    assert seen["read"] == "copied in\n" and seen["size"] == len(b"written")
    assert (tmp_path / "out").read_bytes() == b"written"
    assert (seen["id"], seen["name"], seen["running"]) == (detached.id, "shared", True)
    # what the other process did is here too, and its `with` block did not stop the container
    assert detached.running
    assert detached.read_file("/tmp/w") == b"written"
    detached.remove("/tmp/w")
    assert "w" not in detached.listdir("/tmp")


def test_the_creator_exiting_leaves_it_running_and_remove_ends_it():
    python(
        """
        import sandkit
        with sandkit.Container("host", name="left", detach=True, ports=["127.0.0.1::8080"]) as c:
            c.exec(["sh", "-c", "echo kept > /tmp/mark"])
        """
    )
    c = sandkit.Container.attach("left")
    assert c.running and c.read_file("/tmp/mark") == b"kept\n"
    host, port = c.port(8080)
    assert host == "127.0.0.1" and port > 0
    processes = supervisor_and_below("left")
    assert len(processes) >= 2  # the supervisor and the container's init at least

    c.remove()

    wait_until(lambda: not any(alive(pid) for pid in processes), "the container's processes")
    assert not c.running
    with pytest.raises(errors.NoSuchContainerError):
        sandkit.Container.attach("left")
    assert not (state.run_dir() / "names" / "left").exists()


def test_many_workers_exec_at_once(detached):
    worker = """
        import sys, sandkit
        c = sandkit.Container.attach("shared")
        me = sys.argv[1]
        for i in range(20):
            r = c.exec(["sh", "-c", f"echo {me}-{i}"], timeout=60)
            assert (r.exit_code, r.stdout) == (0, f"{me}-{i}\\n".encode()), r
        print("done", me)
    """
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(worker), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=sandkit_env(),
        )
        for n in range(8)
    ]
    for n, process in enumerate(workers):
        out, err = process.communicate(timeout=300)
        assert (process.returncode, out) == (0, f"done {n}\n"), err


def test_a_worker_killed_mid_exec_harms_neither_the_container_nor_the_others(detached):
    victim = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sandkit; sandkit.Container.attach('shared').exec("
            "['sh', '-c', 'echo $$ > /tmp/victim; exec sleep 600'])",
        ],
        env=sandkit_env(),
    )
    wait_until(lambda: detached.exec(["test", "-s", "/tmp/victim"]).ok, "the victim's command")
    pid = detached.read_file("/tmp/victim").decode().strip()
    victim.kill()
    victim.wait()
    # its command goes with it (the supervisor kills what a vanished client left running) ...
    wait_until(lambda: not detached.exec(["test", "-e", f"/proc/{pid}"]).ok, "the orphan's end")
    # ... and everyone else goes on
    assert detached.exec(["echo", "fine"]).stdout == b"fine\n"
    assert (
        python(
            "import sandkit; print(sandkit.Container.attach('shared').exec(['true']).exit_code)"
        ).stdout
        == "0\n"
    )


def test_spawn_streams_and_its_process_goes_with_the_worker(detached):
    seen = python(
        """
        import sandkit, time
        c = sandkit.Container.attach("shared")
        p = c.spawn(["sh", "-c", "read x; echo got $x; echo err >&2; exit 5"])
        p.stdin.write(b"hello\\n")
        p.stdin.close()
        print(b"".join(p.stdout), b"".join(p.stderr), p.wait(timeout=30))
        # kept: a Process dropped at once closes its link, and its process goes with it
        kept = c.spawn(["sh", "-c", "echo $$ > /tmp/spawned; exec sleep 600"])
        deadline = time.monotonic() + 30
        while not c.exec(["test", "-s", "/tmp/spawned"]).ok and time.monotonic() < deadline:
            pass  # (it is running once it wrote its pid)
        """
    )
    assert seen.stdout == "b'got hello\\n' b'err\\n' 5\n"
    # the worker exited without waiting for its second process: that one was killed
    pid = detached.read_file("/tmp/spawned").decode().strip()
    wait_until(lambda: not detached.exec(["test", "-e", f"/proc/{pid}"]).ok, "its end")


def test_two_processes_creating_one_name_one_wins():
    create = """
        import sandkit
        try:
            sandkit.Container("host", name="race", detach=True).start()
            print("won")
        except sandkit.NameInUseError as exc:
            print("lost:", exc)
    """
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(create)],
            stdout=subprocess.PIPE,
            text=True,
            env=sandkit_env(),
        )
        for _ in range(2)
    ]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    try:
        owner = state.find("race").id
        assert outcomes == [
            # Docker's message for a taken name
            f'lost: Conflict. The container name "/race" is already in use by container '
            f'"{owner}". You have to remove (or rename) that container to be able to reuse '
            "that name.",
            "won",
        ]
    finally:
        sandkit.Container.attach("race").remove()


@pytest.mark.trio
async def test_the_async_api_creates_and_attaches():
    async with sandkit.AsyncContainer("host", name="async", detach=True) as made:
        attached = await sandkit.AsyncContainer.attach("async")
        async with attached:
            r = await attached.exec(["sh", "-c", "echo $((2 + 3))"], timeout=30)
            await attached.write_file("/tmp/a", "from async")
    # neither block stopped it
    try:
        assert made.running and attached.running
        assert await made.read_file("/tmp/a") == b"from async"
        assert r.stdout == b"5\n"
    finally:
        await made.remove()
    assert not attached.running


def test_the_asyncio_path_works_too():
    async def main() -> bytes:
        async with sandkit.AsyncContainer("host", name="aio", detach=True) as c:
            try:
                return (await c.exec(["echo", "asyncio"], timeout=30)).stdout
            finally:
                await c.remove()

    assert anyio.run(main, backend="asyncio") == b"asyncio\n"


# --- the CLI and the API share the supervisor --------------------------------------------


def test_the_cli_sees_and_manages_an_api_container(detached):
    ps = json.loads(sandkit_cli("ps", "--format", "json").stdout.splitlines()[0])
    assert (ps["Names"], ps["State"], ps["Image"]) == ("shared", "running", "host")
    ran = sandkit_cli("exec", "shared", "sh", "-c", "echo from-cli; exit 5")
    assert (ran.returncode, ran.stdout) == (5, "from-cli\n")
    processes = supervisor_and_below("shared")
    assert sandkit_cli("rm", "-f", "shared").returncode == 0
    wait_until(lambda: not any(alive(pid) for pid in processes), "the container's processes")
    assert not detached.running


def test_the_api_attaches_to_a_cli_container(busybox_dir):
    started = sandkit_cli(
        "run", "-d", "--name", "from-cli", str(busybox_dir), "sh", "-c", "echo up; sleep 600"
    )
    assert started.returncode == 0, started.stderr
    c = sandkit.Container.attach("from-cli")
    assert c.id == started.stdout.strip()
    assert c.exec(["cat", "/proc/1/cmdline"]).ok
    assert c.exec(["sh", "-c", "echo $((6 * 7))"]).stdout == b"42\n"
    processes = supervisor_and_below("from-cli")
    c.remove()
    wait_until(lambda: not any(alive(pid) for pid in processes), "the container's processes")
    assert "from-cli" not in sandkit_cli("ps", "-a").stdout


# --- limits and bad input -----------------------------------------------------------------


def test_lifetime_still_ends_a_detached_container():
    c = sandkit.Container("host", name="brief", detach=True, lifetime=1).start()
    try:
        wait_until(lambda: not c.running, "the lifetime's end", timeout=30)
        with pytest.raises(errors.ContainerNotRunningError, match=r"exited \(exit code 137\)"):
            sandkit.Container.attach("brief")
    finally:
        c.remove()
    assert "brief" not in sandkit_cli("ps", "-a").stdout


def test_attach_to_a_missing_or_stopped_container_says_which():
    with pytest.raises(errors.NoSuchContainerError, match="No such container: nosuch"):
        sandkit.Container.attach("nosuch")
    c = sandkit.Container("host", name="stopped", detach=True).start()
    try:
        c.stop()
        with pytest.raises(errors.ContainerNotRunningError, match=r"exited \(exit code 0\)"):
            sandkit.Container.attach("stopped")
        with pytest.raises(errors.ContainerNotRunningError):
            c.exec(["true"])
    finally:
        c.remove()


def test_a_long_lived_creator_keeps_no_zombie_of_its_containers():
    """A program that makes detached containers over its life (a web app's start-up hook, a
    test session) must not collect a zombie process for each one it made and removed: their
    supervisors are not its children (as Docker's containers are not the client's)."""
    c = sandkit.Container("host", detach=True).start()
    try:
        supervisor = int(state.find(c.id).state["supervisor_pid"])
        assert supervisor not in children(os.getpid())
    finally:
        c.remove()
    assert not [pid for pid in children(os.getpid()) if _is_zombie(pid)]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def test_without_a_name_it_gets_one():
    c = sandkit.Container("host", detach=True).start()
    try:
        assert c.name and sandkit.Container.attach(c.name).id == c.id
        assert sandkit.Container.attach(c.id[:12]).name == c.name
    finally:
        c.remove()


def test_a_container_of_this_process_has_no_name_sync_and_async():
    # (the sync API's `name` is the async one's, for every kind of container)
    assert sandkit.Container("host").name == ""
    assert sandkit.AsyncContainer("host").name == ""


def _entries(directory: Path) -> set[Path]:
    """What ``directory`` holds (nothing when it is not made yet: the first detached container
    of a home makes it)."""
    return set(directory.iterdir()) if directory.is_dir() else set()


def test_a_supervisor_that_fails_to_start_leaves_nothing():
    names = state.run_dir() / "names"
    before = _entries(state.run_dir()) - {names}, _entries(names)
    with pytest.raises(errors.ImageNotFoundError, match="nosuch-image"):
        sandkit.Container("nosuch-image:1", name="failing", detach=True).start()
    after = _entries(state.run_dir()) - {names}, _entries(names)
    assert after == before
    with pytest.raises(errors.ContainerError, match="name= names a detached container"):
        sandkit.Container("host", name="undetached")


def test_another_user_cannot_reach_the_containers(detached, as_unprivileged):
    root_home = os.environ["SANDKIT_HOME"]

    def attach_as_another_user(home: str | None) -> str:
        if home is not None:
            os.environ["SANDKIT_HOME"] = home
        try:
            sandkit.Container.attach("shared")
        except errors.SandkitError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "attached"

    # its own home has no such container ...
    missing = as_unprivileged(attach_as_another_user, None)
    assert missing.startswith("NoSuchContainerError: No such container: shared: no detached")
    # ... and root's home is not its to use
    refused = as_unprivileged(attach_as_another_user, root_home)
    assert refused != "attached" and root_home in refused


def _python_for_another_user() -> None:
    """This process's interpreter may sit where the test user cannot run it (under /root):
    the system's Python 3.11 with this venv's packages is the same program for the test."""
    import site

    sys.executable = "/usr/bin/python3.11"
    paths = [str(REPO), *site.getsitepackages()]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def test_rootless_create_attach_and_remove(as_unprivileged):
    if sys.version_info[:2] != (3, 11) or not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("needs the system's python3.11 for the test user")

    def in_a_rootless_session() -> list[object]:
        _python_for_another_user()
        c = sandkit.Container("host", name="mine", detach=True).start()
        other = python(
            "import sandkit; print(sandkit.Container.attach('mine').exec(['id', '-u']).stdout)"
        )
        processes = supervisor_and_below("mine")
        c.remove()
        wait_until(lambda: not any(alive(pid) for pid in processes), "the container's processes")
        return [other.stdout.strip(), c.running]

    assert as_unprivileged(in_a_rootless_session) == ["b'0\\n'", False]


def test_the_supervisor_socket_stays_private(detached):
    record = state.find("shared")
    assert os.stat(record.dir).st_mode & 0o777 == 0o700
    assert os.stat(state.run_dir()).st_mode & 0o077 == 0


# --- a main process (run=, A's service) in a detached container ----------------------------

SERVICE = "echo ready; echo warn >&2; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done"


def test_a_detached_main_process_is_read_and_stopped_from_another_process():
    c = sandkit.Container("host", name="svc", detach=True, run=["sh", "-c", SERVICE]).start()
    try:
        wait_until(lambda: b"warn" in c.logs(), "the main process's output")
        seen = python(
            """
            import json, sandkit
            c = sandkit.Container.attach("svc")
            print(json.dumps([c.logs(stderr=False).decode(), c.log_tail(),
                              b"".join(c.logs_stream(follow=False, tail=1)).decode()]))
            """
        )
        assert json.loads(seen.stdout) == ["ready\n", "ready\nwarn\n", "warn\n"]
        cli = sandkit_cli("logs", "svc")  # Docker's: stdout to stdout, stderr to stderr
        assert (cli.returncode, cli.stdout, cli.stderr) == (0, "ready\n", "warn\n")
        c.stop()
        assert c.wait(timeout=30) == 3  # its TERM trap's status: the stop signal reached it
        assert "Exited (3)" in sandkit_cli("ps", "-a").stdout
    finally:
        c.remove()


@pytest.mark.trio
async def test_log_tail_works_inside_an_event_loop():
    # (what readiness errors call, from async code)
    run = ["sh", "-c", "echo line; sleep 600"]
    async with sandkit.AsyncContainer("host", name="tail", detach=True, run=run) as c:
        try:
            with anyio.fail_after(30):
                async for chunk in c.logs_stream():  # until the line is there
                    if b"line" in chunk:
                        break
            assert c.log_tail() == "line\n"
        finally:
            await c.remove()


def test_a_detached_main_process_ends_its_container_with_its_status():
    c = sandkit.Container("host", name="short", detach=True, run=["sh", "-c", "exit 7"]).start()
    try:
        assert c.wait(timeout=30) == 7
        with pytest.raises(errors.ContainerNotRunningError, match=r"exit code 7"):
            sandkit.Container.attach("short")
    finally:
        c.remove()


def test_a_supervisor_ending_while_a_request_is_sent_reads_as_not_running(tmp_path):
    """A supervisor that closes its socket with our connection still unaccepted (its container
    just ended) resets it: a request then says "not running", which `wait` takes as the end."""
    from types import SimpleNamespace

    from sandkit.detached import client, control

    path = str(tmp_path / "s")
    listener = control.make_socket()
    listener.bind(path)
    listener.listen(1)
    record = SimpleNamespace(id="ended", socket_path=path)

    async def ask() -> None:
        original = control.connect

        async def connect_then_supervisor_ends(where: str):  # type: ignore[no-untyped-def]
            sock = await original(where)
            listener.close()
            return sock

        control.connect = connect_then_supervisor_ends  # type: ignore[assignment]
        try:
            await client.request(record, {"op": "wait"}, True)  # type: ignore[arg-type]
        finally:
            control.connect = original  # type: ignore[assignment]

    with pytest.raises(errors.ContainerNotRunningError, match="not running"):
        anyio.run(ask, backend="trio")


def test_a_client_sending_a_pipe_as_input_is_refused_and_harms_nothing(detached):
    """A run request's input must be a memfd: a pipe (or device) would neither say its size nor
    necessarily end, and would hold the supervisor."""
    from sandkit.detached import control

    record = state.find("shared")
    read_end, write_end = os.pipe()

    async def ask() -> dict[str, object] | None:
        with await control.connect(record.socket_path) as sock:
            await control.send(sock, {"op": "run", "argv": ["cat"]}, [read_end])
            reply, _ = await control.receive(sock)
            return reply

    try:
        reply = anyio.run(ask, backend="trio")
    finally:
        os.close(read_end)
        os.close(write_end)
    assert reply == {"error": "malformed run request", "kind": "ContainerError"}
    assert detached.exec(["echo", "still here"]).stdout == b"still here\n"


def test_the_health_of_a_detached_main_process_shows_in_ps_and_inspect():
    """A detached `run=` container's health checks start with the container in its supervisor;
    their state must still reach `sandkit ps` and `inspect` (as Docker shows it)."""
    check = {"test": ["CMD", "true"], "interval": 0.1}
    c = sandkit.Container(
        "host", name="healthy", detach=True, run=["sleep", "60"], healthcheck=check
    ).start()
    try:
        wait_until(
            lambda: "(healthy)" in sandkit_cli("ps").stdout, "ps shows it healthy", timeout=30
        )
        inspected = json.loads(sandkit_cli("inspect", "healthy").stdout)
        assert inspected[0]["State"]["Health"]["Status"] == "healthy"
    finally:
        c.remove()


# A service that serves /tmp/www over HTTP on port 8000 once it has said "ready".
WEB = (
    "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && echo ready && "
    "exec busybox httpd -f -p 8000 -h /tmp/www"
)


def test_an_attached_container_waits_for_its_service_and_reads_its_health():
    """The waits and health of the README's Services section, on a container attached from
    another process (the README's gunicorn workers), as on one of this process."""
    check = {"test": ["CMD", "test", "-e", "/tmp/www/index.html"], "interval": 0.1}
    c = sandkit.Container(
        "host", name="web", detach=True, run=["sh", "-c", WEB], healthcheck=check
    ).start()
    try:
        worker = python(
            """
            import json, sandkit
            from sandkit import errors
            c = sandkit.Container.attach("web")
            c.wait_for_healthy(timeout=60)  # the supervisor's check, from its first moment
            c.wait_for_log("ready", timeout=60)
            c.wait_for_port(8000, timeout=60)
            c.wait_for_http("/index.html", port=8000, timeout=60)
            c.wait_for_http("/missing", port=8000, status=404, timeout=60)
            c.wait_for_exec(["test", "-e", "/tmp/www/index.html"], timeout=60)
            try:
                c.wait_for_port(9, timeout=0.5)  # nothing listens there
            except errors.WaitTimeoutError as exc:
                print(json.dumps(str(exc)))
            """
        )
        # Its message names the wait and ends with the service's last log lines.
        assert json.loads(worker.stdout).endswith("its last log lines:\nready")
        attached = sandkit.Container.attach("web")
        assert attached.health == "healthy"
        assert attached.health_report()["Status"] == "healthy"  # type: ignore[index]
        attached.stop()
        with pytest.raises(errors.ContainerNotRunningError, match=r"exit code 143"):
            attached.wait_for_port(8000, timeout=60)  # at once: there is nothing to wait for
    finally:
        c.remove()


@pytest.mark.trio
async def test_an_attached_containers_waits_in_async_code():
    async with sandkit.AsyncContainer("host", name="aweb", detach=True, run=["sh", "-c", WEB]) as c:
        try:
            attached = await sandkit.AsyncContainer.attach("aweb")
            await attached.wait_for_http("/index.html", port=8000, timeout=60)
            await attached.wait_for_log("ready", timeout=60)
            assert attached.health is None  # the host image has no HEALTHCHECK
            with pytest.raises(errors.ReadinessSpecError, match="no health check"):
                await attached.wait_for_healthy(timeout=60)
        finally:
            await c.remove()


def test_an_attached_container_counts_restarts_and_reads_its_stats():
    # Docker: --restart on-failure:N starts a process that exited non-zero again, at most N
    # times. This one fails twice, then stays up (its runs are counted in the container's /tmp).
    script = "echo run >> /tmp/runs; [ $(wc -l < /tmp/runs) -ge 3 ] && exec sleep 600; exit 1"
    c = sandkit.Container(
        "host",
        name="flaky",
        detach=True,
        run=["sh", "-c", script],
        restart="on-failure:5",
        memory="256m",
    ).start()
    try:
        worker = python(
            """
            import json, sandkit
            c = sandkit.Container.attach("flaky")
            stats = c.stats()
            print(json.dumps([stats.memory_current > 0, stats.pids_current >= 1]))
            """
        )
        assert json.loads(worker.stdout) == [True, True]
        wait_until(
            lambda: c.exec(["wc", "-l", "/tmp/runs"]).stdout.startswith(b"3 "), "3 runs", timeout=60
        )
        assert c.restart_count == 2
        c.stop()
        assert c.wait(timeout=60) == 143  # sleep has no SIGTERM handler: 128 + 15
        assert c.restart_count == 2  # (as an in-process container's, after its end too)
    finally:
        c.remove()


def test_stats_of_an_attached_container_without_a_cgroup_says_how(detached):
    with pytest.raises(errors.ContainerError, match=r"accounting=True"):
        sandkit.Container.attach("shared").stats()


def test_an_attached_container_refuses_what_an_in_process_one_refuses(detached):
    attached = sandkit.Container.attach("shared")
    for argv in ("ls", []):  # a str would run as its letters: 'l' 's'
        with pytest.raises(errors.ExecStartError, match="non-empty list of strings"):
            attached.exec(argv)  # type: ignore[arg-type]
        with pytest.raises(errors.ExecStartError, match="non-empty list of strings"):
            attached.spawn(argv)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match=r"still runs after 0\.1 s"):
        attached.wait(timeout=0.1)  # it runs until removed


def test_rootless_an_attached_container_waits_for_its_service(as_unprivileged):
    if sys.version_info[:2] != (3, 11) or not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("needs the system's python3.11 for the test user")
    # (imported here: this interpreter's standard library may sit where the test user cannot
    # read it, and restart_count imports it in the child)
    import concurrent.futures.thread  # noqa: F401

    def in_a_rootless_session() -> list[object]:
        _python_for_another_user()
        c = sandkit.Container("host", name="rweb", detach=True, run=["sh", "-c", WEB]).start()
        try:
            attached = sandkit.Container.attach("rweb")
            attached.wait_for_port(8000, timeout=60)
            attached.wait_for_http("/index.html", port=8000, timeout=60)
            return [attached.restart_count, attached.health]
        finally:
            c.remove()

    assert as_unprivileged(in_a_rootless_session) == [0, None]


def test_ps_and_inspect_show_a_run_containers_command():
    """Docker's ps shows the main process's command, and inspect its Path and Args: for a
    `run=` container that is the one resolved in the supervisor, not given by the caller."""
    c = sandkit.Container("host", name="cmd", detach=True, run=["sleep", "61"]).start()
    try:
        listed = sandkit_cli("ps", "--no-trunc").stdout
        assert '"sleep 61"' in listed
        inspected = json.loads(sandkit_cli("inspect", "cmd").stdout)[0]
        assert (inspected["Path"], inspected["Args"]) == ("sleep", ["61"])
    finally:
        c.remove()
