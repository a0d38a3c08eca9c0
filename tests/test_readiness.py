"""Readiness waits (`wait_for_port`, `wait_for_http`, `wait_for_exec`, `wait_for_log`) against
real listeners in busybox containers: each wait is first seen to miss while the service is not
there yet, then to succeed once it is; a container that stops fails a wait at once."""

from __future__ import annotations

import threading

import pytest
import trio
from polling import wait_until

import sandkit
from sandkit import errors

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]

# A shell line that waits for the test to create /tmp/go (so that the service starts when the
# test says, not after a fixed sleep), then runs the rest.
GATED = "until [ -e /tmp/go ]; do sleep 0.01; done; "


def release(c: sandkit.Container) -> None:
    c.write_file("/tmp/go", b"")


# --- ports ---------------------------------------------------------------------------------


def test_wait_for_port_waits_for_a_listener_inside(busybox):
    # network="none" and no published port: only the container's own namespace has it.
    with sandkit.Container(busybox, network="none") as c:
        c.spawn(["sh", "-c", GATED + "exec nc -l -p 8080"])
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_port(8080, timeout=0.3)
        assert "port 8080/tcp" in str(missed.value)
        assert isinstance(missed.value, TimeoutError)
        release(c)
        c.wait_for_port(8080, timeout=10)


def test_a_connected_socket_is_no_listener(busybox):
    # The probe reads the socket table: a socket connected *from* port 8081 (a client) does
    # not make 8081 listen, and nothing connects to the service.
    with sandkit.Container(busybox) as c:
        c.spawn(["sh", "-c", "exec nc -l -p 9000"])
        c.wait_for_port(9000, timeout=10)
        c.spawn(["sh", "-c", "exec nc -p 8081 127.0.0.1 9000"])
        with pytest.raises(errors.WaitTimeoutError):
            c.wait_for_port(8081, timeout=0.3)


def test_wait_for_a_udp_port(tmp_path):
    # busybox's nc has no UDP listener: the host image's python binds one.
    script = (
        "import socket, time, os\n"
        "while not os.path.exists('/tmp/go'): time.sleep(0.01)\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s.bind(('::', 5353))\n"
        "time.sleep(1000)\n"
    )
    with sandkit.Container("host") as c:
        c.spawn(["python3", "-c", script])
        with pytest.raises(errors.WaitTimeoutError):
            c.wait_for_port(5353, proto="udp", timeout=0.3)
        release(c)
        c.wait_for_port(5353, proto="udp", timeout=10)
        with pytest.raises(errors.WaitTimeoutError):  # the tcp tables have no such port
            c.wait_for_port(5353, timeout=0.2)


# --- HTTP ----------------------------------------------------------------------------------


def test_wait_for_http_status_mismatch_then_match(busybox):
    with sandkit.Container(busybox, network="none") as c:
        c.exec(["mkdir", "-p", "/www"], check=True)
        c.spawn(["httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/www"])
        c.wait_for_port(8000, timeout=10)
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_http("/health", port=8000, timeout=0.3)
        # busybox httpd answers 404 for a missing file: the message says what it got.
        assert "GET /health on port 8000" in str(missed.value)
        assert "last try: status 404" in str(missed.value)
        c.wait_for_http("/health", port=8000, status=404, timeout=10)
        c.write_file("/www/health", b"ok\n")
        c.wait_for_http("/health", port=8000, timeout=10)
        c.wait_for_http("/health", port=8000, status=lambda code: 200 <= code < 300, timeout=10)


def test_wait_for_http_before_anything_listens(busybox):
    with sandkit.Container(busybox) as c:
        c.exec(["sh", "-c", "mkdir -p /www && echo ok > /www/index.html"], check=True)
        c.spawn(["sh", "-c", GATED + "exec httpd -f -p 8000 -h /www"])
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_http("/", port=8000, timeout=0.3)
        assert "last try: no HTTP answer" in str(missed.value)
        release(c)
        c.wait_for_http("/", port=8000, timeout=10)


def test_a_server_that_never_ends_its_headers_is_no_answer(busybox):
    # An endless header block stops at h11's limit: the wait fails at its timeout, having held
    # a bounded amount of it.
    endless = (
        "printf 'HTTP/1.1 200 OK\\r\\n'; while true; do printf 'X-A: aaaaaaaaaaaaaaaa\\r\\n'; done"
    )
    with sandkit.Container(busybox) as c:
        c.spawn(["nc", "-ll", "-p", "8000", "-e", "sh", "-c", endless])
        c.wait_for_port(8000, timeout=10)
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_http("/", port=8000, timeout=1)
        assert "no HTTP answer" in str(missed.value)


def test_a_server_that_says_nothing_times_out(busybox):
    with sandkit.Container(busybox) as c:
        c.spawn(["nc", "-ll", "-p", "8000", "-e", "sleep", "1000"])
        c.wait_for_port(8000, timeout=10)
        with pytest.raises(errors.WaitTimeoutError):
            c.wait_for_http("/", port=8000, timeout=0.5)


# --- commands ------------------------------------------------------------------------------


def test_wait_for_exec_until_it_exits_0(busybox):
    with sandkit.Container(busybox) as c:
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_exec(["test", "-e", "/tmp/ready"], timeout=0.3)
        assert "['test', '-e', '/tmp/ready'] to exit 0" in str(missed.value)
        c.write_file("/tmp/ready", b"")
        c.wait_for_exec(["test", "-e", "/tmp/ready"], timeout=10)


def test_a_hanging_command_is_killed_at_the_timeout(busybox):
    with sandkit.Container(busybox) as c:
        with pytest.raises(errors.WaitTimeoutError):
            c.wait_for_exec(["sleep", "1000"], timeout=0.3)
        assert b"sleep" not in c.exec(["ps", "-o", "args"]).stdout


def test_a_command_that_does_not_exist_is_said_at_once(busybox):
    with sandkit.Container(busybox) as c, pytest.raises(errors.CommandNotFoundError):
        c.wait_for_exec(["pg_isready"], timeout=30)


# --- a container that goes away -------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "wait",
    [
        lambda c: c.wait_for_port(8080, timeout=60),
        lambda c: c.wait_for_http("/", port=8080, timeout=60),
        lambda c: c.wait_for_exec(["false"], timeout=60),
    ],
    ids=["port", "http", "exec"],
)
async def test_a_container_that_stops_fails_the_wait_at_once(busybox, wait):
    failure: list[BaseException] = []
    async with sandkit.AsyncContainer(busybox) as c:

        async def waiter() -> None:
            try:
                await wait(c)
            except errors.SandkitError as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await c.exec(["true"])  # the waiter has polled at least once meanwhile
            await c.stop()
    # Not the 60 s timeout: the nursery ended once the wait saw the container gone.
    assert len(failure) == 1
    assert type(failure[0]) is errors.ContainerNotRunningError, failure[0]
    assert "not running" in str(failure[0])


def test_a_wait_on_a_stopped_container(busybox):
    c = sandkit.Container(busybox)
    with c:
        pass
    with pytest.raises(errors.ContainerNotRunningError):
        c.wait_for_port(80, timeout=1)


def test_a_sync_wait_ends_when_another_thread_stops_the_container(busybox):
    failure: list[BaseException] = []
    with sandkit.Container(busybox) as c:

        def waiter() -> None:
            try:
                c.wait_for_exec(["test", "-e", "/never"], timeout=60)
            except errors.SandkitError as exc:
                failure.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [type(f) for f in failure] == [errors.ContainerNotRunningError]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda c: c.wait_for_port(0), "port=0"),
        (lambda c: c.wait_for_port(70000), "port=70000"),
        (lambda c: c.wait_for_port("80"), "port='80'"),
        (lambda c: c.wait_for_port(True), "port=True"),
        (lambda c: c.wait_for_port(80, proto="sctp"), "proto='sctp'"),
        (lambda c: c.wait_for_port(80, timeout=0), "timeout=0"),
        (lambda c: c.wait_for_port(80, timeout=-1), "timeout=-1"),
        (lambda c: c.wait_for_port(80, timeout=float("nan")), "timeout=nan"),
        (lambda c: c.wait_for_log("(", timeout=1), "not a valid regex"),
        (lambda c: c.wait_for_log(42, timeout=1), "pattern=42"),
        (lambda c: c.wait_for_log("x", times=0), "times=0"),
        (lambda c: c.wait_for_http("health", port=80), "path='health'"),
        (lambda c: c.wait_for_http("/a b", port=80), "path='/a b'"),
        (lambda c: c.wait_for_http("/\r\nX: y", port=80), "path="),
        (lambda c: c.wait_for_http("/", port=80, status=42), "status=42"),
        (lambda c: c.wait_for_http("/", port=80, status="200"), "status='200'"),
        (lambda c: c.wait_for_exec("pg_isready"), "argv='pg_isready'"),
        (lambda c: c.wait_for_exec([]), "argv=[]"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(busybox, call, named):
    with sandkit.Container(busybox) as c:
        with pytest.raises(errors.ReadinessSpecError) as refused:
            call(c)
        assert named in str(refused.value)
        assert isinstance(refused.value, ValueError)
        # nothing was started: the init and this ps are all there is
        assert len(c.exec(["ps", "-o", "pid"]).stdout.splitlines()) == 3


# --- rootless ------------------------------------------------------------------------------


def _waits_in_the_host_image() -> list[str]:
    from sandkit.runtime.container import start_health_checks

    check = {"test": "test -e /tmp/www/index.html", "interval": 0.05}
    done = []
    with sandkit.Container("host", healthcheck=check) as c:
        c.spawn(["busybox", "nc", "-l", "-p", "8080"])
        c.wait_for_port(8080, timeout=10)
        done.append("port")
        c.exec(["mkdir", "-p", "/tmp/www"], check=True)
        c.spawn(["busybox", "httpd", "-f", "-p", "8000", "-h", "/tmp/www"])
        c.wait_for_http("/index.html", port=8000, status=404, timeout=10)
        c.write_file("/tmp/www/index.html", b"ok\n")
        c.wait_for_http("/index.html", port=8000, timeout=10)
        done.append("http")
        c.wait_for_exec(["test", "-e", "/tmp/www/index.html"], timeout=10)
        done.append("exec")
        start_health_checks(c._core)  # as run= does (the main process here: the init's)
        wait_until(lambda: c.health == "healthy", "healthy")
        done.append(c.health or "")
    return done


def test_waits_and_health_rootless(as_unprivileged):
    assert as_unprivileged(_waits_in_the_host_image) == ["port", "http", "exec", "healthy"]


# --- with a main process (run=) ---------------------------------------------------------------

# A service that says "ready" once, then again when the test creates /tmp/go.
TWICE_READY = "echo starting; echo ready; " + GATED + "echo ready; exec sleep 1000"


def test_wait_for_log_counts_matches_since_the_start(busybox):
    with sandkit.Container(busybox, run=["sh", "-c", TWICE_READY]) as c:
        c.wait_for_log("ready", timeout=10)
        c.wait_for_log(b"^ready$", timeout=10)  # bytes, multi-line: ^ and $ at each line
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_log(r"ready", times=2, timeout=0.3)
        assert "'ready' 2 times" in str(missed.value)
        release(c)
        c.wait_for_log(r"ready", times=2, timeout=10)


def test_a_timeout_ends_with_the_services_last_log_lines(busybox):
    script = "for i in $(seq 1 30); do echo line $i; done; exec sleep 1000"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        c.wait_for_log("line 30", timeout=10)
        with pytest.raises(errors.WaitTimeoutError) as missed:
            c.wait_for_port(5432, timeout=0.2)
    message = str(missed.value)
    assert message.endswith("line 30")
    assert "line 11\n" in message and "line 10\n" not in message  # the last 20 lines
    assert message.index("port 5432/tcp") < message.index("line 11")


@pytest.mark.parametrize(
    "wait",
    [
        lambda c: c.wait_for_port(5432, timeout=60),
        lambda c: c.wait_for_log("never", timeout=60),
        lambda c: c.wait_for_http("/", port=80, timeout=60),
        lambda c: c.wait_for_exec(["false"], timeout=60),
    ],
    ids=["port", "log", "http", "exec"],
)
def test_a_main_process_that_exits_fails_the_wait_with_its_status(busybox, wait):
    script = GATED + "echo giving up >&2; exit 3"
    with sandkit.Container(busybox, run=["sh", "-c", script]) as c:
        failure: list[BaseException] = []

        def waiter() -> None:
            try:
                wait(c)
            except errors.SandkitError as exc:
                failure.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        release(c)
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert [type(f) for f in failure] == [errors.ContainerNotRunningError]
    assert "exited with status 3" in str(failure[0])
    assert "giving up" in str(failure[0])


def test_wait_for_log_without_a_main_process(busybox):
    with sandkit.Container(busybox) as c, pytest.raises(errors.ContainerError) as refused:
        c.wait_for_log("ready", timeout=1)
    assert "run=True" in str(refused.value)
