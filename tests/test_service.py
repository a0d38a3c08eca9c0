"""A container's main process (``run=``): the image's program as Docker runs it, its logs, its
end, restart policies and stop, against the real kernel, root and rootless.

Expected values come from Docker's documented behaviour: ENTRYPOINT and CMD are concatenated and
`--entrypoint` drops the image's CMD ("Understand how CMD and ENTRYPOINT interact"), Env,
WorkingDir and User apply unless -e/-w/-u say otherwise, `docker logs -t` prefixes each line with
an RFC 3339 time with nine fraction digits, `docker wait` reports 128 + N for signal N, a
container stops when its main process exits, `docker stop` sends the image's STOPSIGNAL and
SIGKILLs after 10 s, and `--restart` waits 100 ms before the first restart and doubles it each time.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import os
import re
import threading
import time
from pathlib import Path

import anyio
import pytest
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.cli.spec import RunSpec
from sandkit.images.config import ImageConfig
from sandkit.runtime import cgroups, handover, service, sessionkill

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z "


def image_with(busybox_dir: Path, **config: object) -> sandkit.Image:
    """The busybox root filesystem with an image config of ``config`` (ImageConfig's fields)."""
    return sandkit.Image.from_directory(busybox_dir, config=ImageConfig(**config))  # type: ignore[arg-type]


def service_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sandkit-service"]


def processes_named(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (a process of a container is one too)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


# --- the image's program ---------------------------------------------------------------------


IDENTITY = 'echo "$FOO $BAR"; pwd; id -un; echo "$@"'


def test_the_images_entrypoint_cmd_env_workdir_and_user_are_used(busybox_dir):
    # Docker: ENTRYPOINT ["sh", "-c", SCRIPT, "sh"] + CMD ["a", "b"] runs sh -c SCRIPT sh a b,
    # with the image's ENV, in its WORKDIR (made if missing), as its USER.
    img = image_with(
        busybox_dir,
        entrypoint=("sh", "-c", IDENTITY, "sh"),
        cmd=("a", "b"),
        env=("FOO=from-image", "BAR=also"),
        working_dir="/srv/app",
        user="app",
    )
    with sandkit.Container(img, run=True) as c:
        assert c.wait(timeout=30) == 0
        assert c.logs() == b"from-image also\n/srv/app\napp\na b\n"


def test_run_list_replaces_cmd_and_keeps_the_entrypoint(busybox_dir):
    img = image_with(busybox_dir, entrypoint=("sh", "-c", IDENTITY, "sh"), cmd=("a", "b"))
    with sandkit.Container(img, run=["x", "y"]) as c:
        c.wait(timeout=30)
        assert c.logs().splitlines()[-1] == b"x y"


def test_entrypoint_replaces_the_images_and_drops_its_cmd(busybox_dir):
    img = image_with(busybox_dir, entrypoint=("sh", "-c", IDENTITY, "sh"), cmd=("a", "b"))
    # --entrypoint echo: the image's CMD goes with its ENTRYPOINT
    with sandkit.Container(img, run=True, entrypoint="echo") as c:
        assert c.wait(timeout=30) == 0
        assert c.logs() == b"\n"
    with sandkit.Container(img, run=["one", "two"], entrypoint=["echo", "-n"]) as c:
        c.wait(timeout=30)
        assert c.logs() == b"one two"
    # --entrypoint "": cleared, the command is all there is
    with sandkit.Container(img, run=["echo", "plain"], entrypoint="") as c:
        c.wait(timeout=30)
        assert c.logs() == b"plain\n"


def test_the_container_options_override_the_images_env_workdir_and_user(busybox_dir):
    img = image_with(
        busybox_dir,
        entrypoint=("sh", "-c", IDENTITY, "sh"),
        env=("FOO=from-image", "BAR=kept"),
        working_dir="/srv/app",
        user="app",
    )
    options = {"env": {"FOO": "from-option"}, "workdir": "/tmp", "user": "root"}
    with sandkit.Container(img, run=True, **options) as c:
        c.wait(timeout=30)
        assert c.logs() == b"from-option kept\n/tmp\nroot\n\n"


def test_an_image_with_no_command_is_a_clear_error_and_leaves_nothing(busybox_dir):
    img = image_with(busybox_dir)
    c = sandkit.Container(img, run=True)
    with pytest.raises(errors.ContainerError, match=r"neither Entrypoint nor Cmd.*run=\['program'"):
        c.start()
    assert not c.running
    with pytest.raises(errors.ContainerError, match="neither Entrypoint nor Cmd"):
        sandkit.Container("host", run=True).start()
    # --entrypoint "" drops the image's Cmd too: nothing is left (docker run refuses it too)
    img = image_with(busybox_dir, cmd=("echo", "hi"))
    with pytest.raises(errors.ContainerError, match=r"drops its Cmd.*run=\["):
        sandkit.Container(img, run=True, entrypoint="").start()
    # None is no run, as False
    with (
        sandkit.Container(img, run=None) as c,
        pytest.raises(errors.ContainerError, match="no main"),
    ):
        c.logs()


@pytest.mark.parametrize(
    ("argv", "error", "code"),
    [
        (["no-such-program"], errors.CommandNotFoundError, 127),
        (["/etc/passwd"], errors.CommandNotExecutableError, 126),
    ],
)
def test_a_main_process_that_cannot_start_fails_start_and_leaves_nothing(
    busybox, argv, error, code
):
    c = sandkit.Container(busybox, run=argv)
    with pytest.raises(error, match="main process cannot start") as caught:
        c.start()
    assert caught.value.exit_code == code  # what docker run exits with
    assert argv[0] in str(caught.value)
    assert not c.running
    assert service_threads() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run": "echo hi"}, "list of strings"),
        ({"run": []}, "list of strings"),
        ({"run": ["echo", 1]}, "list of strings"),
        ({"run": True, "restart": "sometimes"}, "not a restart policy"),
        ({"run": True, "restart": "always:3"}, "not a restart policy"),
        ({"run": True, "restart": "on-failure:-1"}, "not a restart policy"),
        ({"run": True, "log_size": 0}, "log_size=0"),
        ({"run": True, "log_size": "0"}, "log_size='0'"),
        ({"run": True, "log_size": "lots"}, "cannot read 'lots' as a size"),
        ({"entrypoint": "sh"}, "start one with run=True"),
        ({"restart": "always"}, "start one with run=True"),
    ],
)
def test_malformed_service_options_fail_before_anything_is_made(busybox, options, message):
    with pytest.raises(errors.ContainerError, match=re.escape(message)):
        sandkit.Container(busybox, **options)


def test_without_run_there_are_no_logs_and_nothing_to_wait_for(busybox):
    with sandkit.Container(busybox) as c:
        with pytest.raises(errors.ContainerError, match=r"no main process.*run=True"):
            c.logs()
        with pytest.raises(errors.ContainerError, match="no main process"):
            c.wait(timeout=1)
        with pytest.raises(errors.ContainerError, match="no main process"):
            c.logs_stream()
        assert c.log_tail() == ""
        assert c.restart_count == 0


def test_the_cli_specs_entrypoint_stays_the_specs(busybox_dir):
    # `entrypoint` is a container option too now: a detached run's supervisor is handed the
    # spec's command resolved, never the spec's entrypoint as a container option.
    spec = RunSpec(image=str(busybox_dir), command=["x"], entrypoint="")
    image = spec.resolve_image()
    assert spec.argv(image) == ["x"]
    assert "entrypoint" not in handover.options_to_json(spec.container_options(image))


# --- logs ------------------------------------------------------------------------------------


def test_logs_keep_stdout_and_stderr_apart_and_in_order(busybox):
    script = "echo out1; echo err1 >&2; sleep 0.05; echo out2; echo err2 >&2"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        assert c.wait(timeout=30) == 0
        assert c.logs(stderr=False) == b"out1\nout2\n"
        assert c.logs(stdout=False) == b"err1\nerr2\n"
        both = c.logs()
        assert sorted(both.splitlines()) == [b"err1", b"err2", b"out1", b"out2"]
        assert both.index(b"out1") < both.index(b"out2") and both.index(b"err1") < both.index(
            b"out2"
        )
        assert c.logs(tail=1, stdout=False) == b"err2\n"
        assert c.logs(tail=0) == b""
        assert c.logs(tail=100) == both
        with pytest.raises(errors.ContainerError, match="tail=-1"):
            c.logs(tail=-1)


def test_timestamps_go_before_each_line_as_docker_logs_t_prints_them(busybox):
    # One line written in two parts gets one timestamp, the time its first part came.
    script = "printf 'first '; sleep 0.2; printf 'half\\nsecond\\n'; printf 'partial'"
    before = time.time()
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        c.wait(timeout=30)
        plain = c.logs()
        stamped = c.logs(timestamps=True)
    after = time.time()
    assert plain == b"first half\nsecond\npartial"
    lines = stamped.split(b"\n")
    assert [re.sub(STAMP, b"", line) for line in lines] == plain.split(b"\n")
    assert all(re.match(STAMP, line) for line in lines), stamped
    assert len(re.findall(STAMP, stamped)) == 3  # none inside the line that came in two parts
    seconds = [_seconds(line) for line in lines]
    assert all(before - 1 <= s <= after for s in seconds)
    assert seconds[0] <= seconds[1]  # "second" came with the second part of the first line


def test_a_service_that_exits_at_once_gives_its_code_and_message(busybox):
    script = "echo 'FATAL: no configuration file' >&2; exit 2"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        assert c.wait(timeout=30) == 2
        assert "FATAL: no configuration file" in c.log_tail()
        assert not c.running
    assert c.wait() == 2  # after stop too
    assert c.log_tail(1) == "FATAL: no configuration file\n"


def test_follow_sync_streams_as_it_comes_and_ends_with_the_service(busybox):
    script = "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo bye >&2"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        got = b"".join(c.logs_stream())
        assert not c.running
        assert got == c.logs() == b"line1\nline2\nline3\nbye\n"
        assert b"".join(c.logs_stream(stderr=False, tail=1)) == b"line3\n"


def test_follow_ends_when_the_consumer_stops(busybox):
    with sandkit.Container(
        busybox, run=["sh", "-c", "while :; do echo tick; sleep 0.01; done"]
    ) as c:
        stream = c.logs_stream()
        first = next(stream)
        stream.close()
        assert first.startswith(b"tick\n")
        assert c.running


@pytest.mark.trio
async def test_follow_async_under_trio(busybox):
    await _follow_async(busybox)


def test_follow_async_under_asyncio(busybox):
    asyncio.run(_follow_async(busybox))


async def _follow_async(busybox):
    script = "echo start; sleep 0.1; echo middle >&2; sleep 0.1; echo end"
    async with sandkit.AsyncContainer(busybox, run=["sh", "-c", script]) as c:
        chunks = [chunk async for chunk in c.logs_stream(timestamps=True)]
        assert await c.wait(timeout=30) == 0
        got = b"".join(chunks)
        assert re.sub(STAMP, b"", got) == b"start\nmiddle\nend\n"
        assert len(re.findall(STAMP, got)) == 3
        assert await c.logs(stdout=False) == b"middle\n"
        # while it runs, an async reader can also stop following at any time
    async with sandkit.AsyncContainer(busybox, run=["sh", "-c", "echo a; sleep 1000"]) as c:
        async for chunk in c.logs_stream():
            assert chunk == b"a\n"
            break
        with pytest.raises(TimeoutError):
            await c.wait(timeout=0.2)
        assert c.running


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_service_writing_100_mb_stays_within_the_ring(busybox):
    # The service never blocks on a full pipe (it finishes: its output was all read), and the
    # host keeps at most the ring of it.
    total = 100 * 1000 * 1000
    script = f"head -c {total} /dev/zero; echo done >&2"
    baseline = _rss()
    peak = baseline
    with sandkit.Container(busybox, run=["sh", "-c", script], log_size="1m") as c:
        while c.running:
            peak = max(peak, _rss())
            time.sleep(0.01)
        assert c.wait(timeout=120) == 0
        kept = c.logs(stderr=False)
        assert 512 * 1024 < len(kept) <= 1 << 20
        assert kept.count(0) == len(kept)
        assert c.logs(stdout=False) == b"done\n"
    growth = peak - baseline
    print(f"RSS growth while 100 MB went through a 1 MiB ring: {growth / (1 << 20):.1f} MiB")
    assert growth < 32 << 20


def test_the_ring_keeps_the_newest_output_and_charges_small_writes():
    ring = service.LogRing(1000)
    for i in range(100):
        ring.append(service.STDOUT, b"%03d" % i)
    kept = ring.since(0)
    # each 3-byte chunk costs RECORD_OVERHEAD more: single bytes cannot fill memory
    assert len(kept) == 1000 // (3 + service.RECORD_OVERHEAD)
    assert kept[-1][2] == b"099"
    assert ring.end == 100
    ring.append(service.STDERR, b"x" * 5000)
    assert [r[2] for r in ring.since(0)] == [b"x" * 1000]


# --- the end of the main process -------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 143), ("kill -KILL $$", 137)],
)
def test_wait_gives_dockers_status(busybox, script, status):
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        assert c.wait(timeout=30) == status


def test_the_container_stops_with_its_main_process(busybox):
    marker = "sleep 987651"
    with sandkit.Container(busybox, run=["sh", "-c", f"{marker} & echo bye; exit 4"]) as c:
        assert c.wait(timeout=30) == 4
        assert not c.running
        # the other processes went with it (Docker: the pid namespace ends with its PID 1)
        wait_until(lambda: processes_named(marker) == [], "the background sleep to go")
        with pytest.raises(errors.ContainerNotRunningError, match=r"(?s)exited with status 4.*bye"):
            c.exec(["true"])
        assert c.logs() == b"bye\n"
        assert c.wait() == 4


def test_exec_works_beside_the_main_process(busybox):
    with sandkit.Container(busybox, run=["sh", "-c", "echo up; exec sleep 1000"]) as c:
        wait_until(lambda: c.logs() == b"up\n", "the service to start")
        r = c.exec(["sh", "-c", "ps -o args | grep -c '^sleep 1000'"])
        assert r.stdout == b"1\n"
        c.write_file("/tmp/f", b"x")
        assert c.read_file("/tmp/f") == b"x"
        assert c.running
        c.stop()
        assert c.wait() == 143


def test_execs_beside_a_chatty_service_all_complete(busybox):
    # The service thread reads the control socket when nobody else does: sync execs (which
    # read it on the caller's thread) and it must share it.
    with sandkit.Container(busybox, run=["sh", "-c", "while :; do echo x; done"]) as c:
        for i in range(50):
            assert c.exec(["echo", str(i)], timeout=10).stdout == f"{i}\n".encode()
        assert c.running


# --- stop ------------------------------------------------------------------------------------


TRAP_USR1 = "trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.05; done"


def test_stop_sends_the_images_stop_signal_first(busybox_dir):
    img = image_with(busybox_dir, stop_signal="SIGUSR1")
    with sandkit.Container(img, run=["sh", "-c", TRAP_USR1]) as c:
        wait_until(lambda: b"ready" in c.logs(), "the service to set its trap")
    assert c.wait() == 7
    assert c.logs() == b"ready\ngot USR1\n"


def test_stop_kills_after_the_grace_period(busybox):
    script = "trap 'echo ignored' TERM; echo ready; while :; do sleep 0.05; done"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        wait_until(lambda: b"ready" in c.logs(), "the service to set its trap")
        started = time.monotonic()
        c.stop(timeout=0.5)
        took = time.monotonic() - started
    assert took >= 0.5  # it had its grace period, then was killed
    assert c.wait() == 137
    assert b"ignored" in c.logs()


def test_stop_of_a_default_service_is_sigterm(busybox):
    with sandkit.Container(busybox, run=["sleep", "1000"]) as c:
        pass
    assert c.wait() == 128 + 15


# --- restart policies ------------------------------------------------------------------------


def test_on_failure_restarts_up_to_n_times_with_dockers_delays(busybox):
    with sandkit.Container(
        busybox, run=["sh", "-c", "echo run; exit 3"], restart="on-failure:3"
    ) as c:
        assert c.wait(timeout=60) == 3
        assert c.restart_count == 3
        runs = c.logs(timestamps=True).splitlines()
    assert [re.sub(STAMP, b"", r) for r in runs] == [b"run"] * 4
    starts = [_seconds(r) for r in runs]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 100 ms before the first restart, doubled each time (a lower bound: never sooner)
    assert all(gap >= want for gap, want in zip(gaps, (0.1, 0.2, 0.4), strict=True)), gaps


def _seconds(stamped: bytes) -> float:
    """The time of a line that `docker logs -t` stamped (UTC)."""
    whole = time.strptime(stamped[:19].decode(), "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(whole) + int(stamped[20:29]) / 1e9


def test_on_failure_does_not_restart_a_success(busybox):
    with sandkit.Container(busybox, run=["sh", "-c", "echo once"], restart="on-failure") as c:
        assert c.wait(timeout=30) == 0
        assert c.restart_count == 0
        assert not c.running


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
def test_always_restarts_a_success_until_stopped(busybox, policy):
    with sandkit.Container(busybox, run=["sh", "-c", "echo run"], restart=policy) as c:
        wait_until(lambda: c.restart_count >= 2, "two restarts")
        assert c.running
        with pytest.raises(TimeoutError):
            c.wait(timeout=0.05)
    assert c.wait() == 0
    assert c.logs().count(b"run\n") >= 3


def test_stop_during_a_restart_delay_stops_at_once(busybox, monkeypatch):
    monkeypatch.setattr(service, "FIRST_DELAY", 600.0)
    with sandkit.Container(busybox, run=["sh", "-c", "exit 5"], restart="always") as c:
        wait_until(lambda: c.logs() == b"" and not _runs(c), "the first run to end")
        started = time.monotonic()
    assert time.monotonic() - started < 5  # not the 600 s delay
    assert c.wait() == 5
    assert c.restart_count == 0


def _runs(c: sandkit.Container) -> bool:
    """Whether the main process is running (ps inside finds `sh -c exit 5`)."""
    r = c.exec(["sh", "-c", "ps -o args | grep -c '^sh -c exit 5'"])
    return r.stdout != b"0\n"


def test_the_restart_delay_follows_dockers_rule():
    s = object.__new__(service.Service)  # only its delay state is used
    s._delay = 0.0
    run = service._Run(exec_id=1, pid=2, started=time.monotonic(), pipes={})
    delays = [s._next_delay(run) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0  # at most a minute
    run.started = time.monotonic() - 10  # a run of 10 s resets it
    assert s._next_delay(run) == 0.1


def test_a_restart_kills_what_the_last_run_left(busybox):
    # Docker restarts the whole container: what a run started in the background is gone when
    # the next run starts (each run counts the marker's processes before starting one).
    marker = "sleep 987652"
    script = f"echo $(ps -o args | grep -c '^{marker}'); {marker} & exit 1"
    with sandkit.Container(busybox, run=["sh", "-c", script], restart="on-failure:2") as c:
        assert c.wait(timeout=30) == 1
        assert c.logs() == b"0\n0\n0\n"
    assert processes_named(marker) == []


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def _ns_ids(pid: int, key: str) -> list[int]:
    line = next(
        x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(key)
    )
    return [int(v) for v in line.split()[1:]]


def test_a_restart_never_kills_another_containers_process(busybox, monkeypatch):
    # The process table a restart kills from is a moment old: a pid it lists may have been
    # reused meanwhile by a process of another container, whose session number (as its own
    # container sees it) may well be the same. Here the table is made stale on purpose: B's
    # service is listed under A's init. It must survive.
    with (
        sandkit.Container(busybox, run=["sh", "-c", "exec sleep 987670"]),
        sandkit.Container(busybox, run=["sh", "-c", "exec sleep 987671"]) as b,
    ):
        wait_until(
            lambda: processes_named("sleep 987670") and processes_named("sleep 987671"), "both"
        )
        [a_main], [b_main] = processes_named("sleep 987670"), processes_named("sleep 987671")
        a_init = _parent(a_main)
        level = len(_ns_ids(a_init, "NSpid")) - 1
        b_session = _ns_ids(b_main, "NSsid")[level]
        real = sessionkill._parents
        monkeypatch.setattr(sessionkill, "_parents", lambda: {**real(), b_main: a_init})
        sessionkill.kill_session(a_init, b_session)
        assert b.running
        assert processes_named("sleep 987671") == [b_main]


# --- nothing left behind ---------------------------------------------------------------------


def _sandkit_cgroups() -> list[Path]:
    host = cgroups.host()
    if not host.usable:
        pytest.skip(f"no usable cgroups here: {host.why_not}")
    parents = sorted({Path(p, host.name) for p in host.parents.values()})
    return [d for parent in parents for d in parent.glob(f"{os.getpid()}-*")]


def test_nothing_is_left_after_stop(busybox):
    before = _sandkit_cgroups()
    marker = "sleep 987653"
    script = f"{marker} & while :; do echo x; sleep 0.01; done"
    with sandkit.Container(busybox, run=["sh", "-c", script], memory="64m") as c:
        wait_until(lambda: processes_named(marker), "the service to start")
        assert len(service_threads()) == 1
    assert processes_named(marker) == []
    assert service_threads() == []
    assert _sandkit_cgroups() == before
    assert c.logs().startswith(b"x\n")


def test_a_service_that_ended_leaves_nothing_either(busybox):
    with sandkit.Container(busybox, run=["true"], memory="64m") as c:
        c.wait(timeout=30)
        wait_until(lambda: service_threads() == [], "the service thread to end")


# --- rootless --------------------------------------------------------------------------------


def _rootless_service(busybox_dir: str) -> dict[str, object]:
    img = image_with(
        Path(busybox_dir),
        entrypoint=("sh", "-c", IDENTITY + "; sleep 987654 & exit 3", "sh"),
        cmd=("a",),
        env=("FOO=foo", "BAR=bar"),
        working_dir="/home",  # (one that exists: rootless, the root-owned layer is not ours to change)
    )
    with sandkit.Container(img, run=True) as c:
        status = c.wait(timeout=30)
        running, logs = c.running, c.logs()
        left = processes_named("sleep 987654")
    # each run counts what the last one left running (killed from the host before a restart)
    counting = "echo $(ps -o args | grep -c '^sleep 987655'); sleep 987655 & exit 1"
    with sandkit.Container(
        img, run=["sh", "-c", counting], entrypoint=[], restart="on-failure:2"
    ) as c:
        restarted = (c.wait(timeout=30), c.restart_count, c.logs())
    with sandkit.Container(img, run=["sleep", "1000"], entrypoint=[]) as c:
        pass
    return {
        "status": status,
        "running": running,
        "logs": logs,
        "left": left,
        "restarted": restarted,
        "stopped": c.wait(),
        "threads": len(service_threads()),
    }


def test_rootless_services(busybox_dir, as_unprivileged):
    got = as_unprivileged(_rootless_service, str(busybox_dir))
    assert got == {
        "status": 3,
        "running": False,
        "logs": b"foo bar\n/home\nroot\na\n",
        "left": [],
        "restarted": (1, 2, b"0\n0\n0\n"),
        "stopped": 143,
        "threads": 0,
    }


# --- the async API's own ---------------------------------------------------------------------


@pytest.mark.trio
async def test_async_wait_timeout_and_stop(busybox):
    async with sandkit.AsyncContainer(busybox, run=["sleep", "1000"]) as c:
        with pytest.raises(TimeoutError):
            await c.wait(timeout=0.1)
        assert c.running
        with anyio.fail_after(10):
            await c.stop()
    assert await c.wait() == 143


@pytest.mark.trio
async def test_a_cancelled_follower_still_stops_the_container(busybox):
    with anyio.CancelScope() as scope:
        async with sandkit.AsyncContainer(
            busybox, run=["sh", "-c", "while :; do echo x; sleep 0.01; done"]
        ) as c:
            # The deadline starts once the container runs: on a loaded machine a start may
            # take longer than it, and a cancelled start is another case than this one.
            scope.deadline = anyio.current_time() + 0.3
            async for _ in c.logs_stream():
                pass
    assert not c.running
    assert service_threads() == []
    # cancelled, the stop has no grace period to give: the main process is killed at once
    assert await c.wait() == 137


def test_many_chatty_services_at_once_stop_cleanly(busybox):
    script = "i=0; while :; do echo out $i; echo err $i >&2; i=$((i+1)); done"
    containers = [
        sandkit.Container(busybox, run=["sh", "-c", script], log_size="64k") for _ in range(8)
    ]
    try:
        for c in containers:
            c.start()
        for c in containers:
            wait_until(lambda c=c: len(c.logs()) > 32 * 1024, "output")
            assert c.exec(["echo", "beside"]).stdout == b"beside\n"
    finally:
        for c in containers:
            c.stop()
    assert service_threads() == []
    for c in containers:
        assert c.wait() == 143
        assert len(c.logs()) <= 64 * 1024
