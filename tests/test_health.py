"""HEALTHCHECK: the configuration as Docker merges it, and the state machine run against real
checks in busybox containers. Expected values are Docker's (docs.docker.com "HEALTHCHECK",
"docker run --health-*", and moby's daemon/health.go for the rules the docs leave out)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import pytest
from polling import wait_until

import sandkit
from sandkit import errors
from sandkit.images.config import ImageConfig
from sandkit.runtime import health
from sandkit.runtime.container import probe_from_thread

SECOND = 1_000_000_000  # the image config's durations are nanoseconds

# --- configuration -------------------------------------------------------------------------


def test_docker_defaults():
    config = health.resolve({"Test": ["CMD-SHELL", "pg_isready"]}, None)
    assert config is not None
    assert config.argv == ("/bin/sh", "-c", "pg_isready")  # CMD-SHELL: the shell, as Docker
    assert (config.interval, config.timeout, config.start_period) == (30.0, 30.0, 0.0)
    assert (config.start_interval, config.retries) == (5.0, 3)


def test_the_image_config_in_nanoseconds():
    image = {
        "Test": ["CMD", "curl", "-f", "http://localhost/"],
        "Interval": 5 * SECOND,
        "Timeout": 3 * SECOND,
        "StartPeriod": 10 * SECOND,
        "StartInterval": SECOND // 2,
        "Retries": 4,
    }
    config = health.resolve(image, None)
    assert config is not None
    assert config.argv == ("curl", "-f", "http://localhost/")  # CMD: no shell
    assert (config.interval, config.timeout, config.start_period) == (5.0, 3.0, 10.0)
    assert (config.start_interval, config.retries) == (0.5, 4)


def test_the_option_overrides_the_image_key_by_key():
    # As `docker run --health-interval` over an image's HEALTHCHECK: the rest stays the image's.
    image = {"Test": ["CMD", "true"], "Interval": 5 * SECOND, "Retries": 4}
    config = health.resolve(image, {"interval": 1, "timeout": 0})
    assert config is not None
    assert (config.argv, config.interval, config.retries, config.timeout) == (
        ("true",),
        1.0,
        4,
        30.0,  # 0 means "the default" (here the image has none: Docker's)
    )
    config = health.resolve(image, {"test": "exit 0"})  # a str is a shell command
    assert config is not None and config.argv == ("/bin/sh", "-c", "exit 0")


def test_none_and_no_test_mean_no_health_check():
    assert health.resolve({"Test": ["CMD", "true"]}, {"test": ["NONE"]}) is None
    assert health.resolve({"Test": ["NONE"]}, None) is None
    assert health.resolve(None, None) is None
    assert health.resolve({"Interval": SECOND}, {"retries": 2}) is None  # timing, no test


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ({"test": []}, "test=[]"),
        ({"test": ["true"]}, 'must be "CMD"'),
        ({"test": ["CMD"]}, 'must be "CMD"'),
        ({"test": ["CMD-SHELL", "a", "b"]}, 'must be "CMD"'),
        ({"test": 42}, "test=42"),
        ({"interval": -1}, "interval=-1"),
        ({"timeout": "30s"}, "timeout='30s'"),
        ({"start_period": 0.0001}, "1 ms"),
        ({"retries": -1}, "retries=-1"),
        ({"retries": 1.5}, "retries=1.5"),
        ({"intervall": 1}, "'intervall'"),
        (["CMD", "true"], "give a dict"),
    ],
)
def test_bad_options_are_refused_when_the_container_is_made(busybox, option, named):
    with pytest.raises(errors.ReadinessSpecError) as refused:
        sandkit.Container(busybox, healthcheck=option)
    assert named in str(refused.value)


def test_a_malformed_image_healthcheck_names_the_image():
    with pytest.raises(errors.ImageError) as refused:
        health.resolve({"Test": ["CMD", "true"], "Interval": "30s"}, None)
    assert "image's Healthcheck" in str(refused.value)
    assert "healthcheck=" in str(refused.value)


@pytest.mark.parametrize(
    ("seconds", "go"),
    # Go's time.Duration.String(), as in Docker's "Health check exceeded timeout (30s)".
    [
        (30, "30s"),
        (1.5, "1.5s"),
        (0.5, "500ms"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (0.0015, "1.5ms"),
    ],
)
def test_durations_print_as_go_prints_them(seconds, go):
    assert health.go_duration(seconds) == go


def test_output_is_capped_as_docker_caps_it():
    assert health.cap_output(b"x" * 4096) == "x" * 4096
    assert health.cap_output(b"x" * 5000) == "x" * 4096 + "..."


# --- the state machine against real checks -------------------------------------------------


@pytest.fixture
def container(busybox):
    with sandkit.Container(busybox) as c:
        yield c


@contextlib.contextmanager
def monitoring(container: sandkit.Container, **option: object) -> Iterator[health.HealthMonitor]:
    """The monitor a container with a main process would run (``run=`` starts one the same
    way), here on a container whose check the test drives through its files; closed after."""
    config = health.resolve(None, option)
    assert config is not None
    core = container._core
    monitor = health.HealthMonitor(
        health.HealthState(config), functools.partial(probe_from_thread, core)
    )
    monitor.start()
    try:
        yield monitor
    finally:
        monitor.close()


def first_result(monitor: health.HealthMonitor) -> dict[str, object]:
    wait_until(lambda: results(monitor), "a check", timeout=30)
    return results(monitor)[0]


def results(monitor: health.HealthMonitor) -> list[dict[str, object]]:
    return monitor.state.to_docker()["Log"]  # type: ignore[return-value]


FAST = {"interval": 0.05, "start_interval": 0.05, "timeout": 5}


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_starting_healthy_unhealthy(container):
    with monitoring(
        container, test=["CMD", "test", "-e", "/tmp/healthy"], retries=2, **FAST
    ) as monitor:
        wait_until(lambda: len(results(monitor)) >= 3, "three failed checks")
        # Failures before the first success: the streak counts (no start period), and after
        # `retries` of them the state is unhealthy even though it never was healthy.
        assert monitor.status == "unhealthy"
        container.write_file("/tmp/healthy", b"")
        wait_until(lambda: monitor.status == "healthy", "healthy")
        assert monitor.state.to_docker()["FailingStreak"] == 0
        container.exec(["rm", "/tmp/healthy"], check=True)
        wait_until(lambda: monitor.status == "unhealthy", "unhealthy again")
        report = monitor.state.to_docker()
        assert report["FailingStreak"] >= 2
        log = results(monitor)
        assert len(log) == 5  # Docker keeps the last 5
        assert log[-1]["ExitCode"] == 1
        assert set(log[-1]) == {"Start", "End", "ExitCode", "Output"}
        assert log[-1]["Start"] <= log[-1]["End"]


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_one_failure_short_of_retries_stays_healthy(container):
    container.write_file("/tmp/healthy", b"")
    # Fails every other check: never two in a row.
    script = "if [ -e /tmp/flip ]; then rm /tmp/flip; exit 1; else touch /tmp/flip; fi"
    with monitoring(container, test=script, retries=2, **FAST) as monitor:
        wait_until(lambda: len(results(monitor)) >= 5, "five checks")
        codes = [entry["ExitCode"] for entry in results(monitor)]
        assert 1 in codes and 0 in codes
        assert monitor.status == "healthy"


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_failures_in_the_start_period_do_not_count(container):
    with monitoring(
        container, test=["CMD", "false"], retries=1, start_period=3600, **FAST
    ) as monitor:
        wait_until(lambda: len(results(monitor)) >= 3, "three failed checks")
        assert monitor.status == "starting"
        assert monitor.state.to_docker()["FailingStreak"] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_a_check_longer_than_its_timeout_fails_and_is_killed(container):
    hang = "echo started; echo $$ > /tmp/check.pid; exec sleep 1000"
    with monitoring(container, test=hang, retries=1, interval=0.05, timeout=0.2) as monitor:
        entry = first_result(monitor)
        assert entry["ExitCode"] == -1
        assert entry["Output"] == "Health check exceeded timeout (200ms): started\n"
        assert monitor.status == "unhealthy"
        pid = container.read_file("/tmp/check.pid").strip().decode()
        alive = container.exec(["kill", "-0", pid])
        assert alive.exit_code != 0  # the hanging check is gone


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_a_check_that_cannot_start_is_a_failure_with_the_reason(container):
    with monitoring(container, test=["CMD", "pg_isready"], retries=1, **FAST) as monitor:
        entry = first_result(monitor)
        assert entry["ExitCode"] == -1
        assert "pg_isready" in entry["Output"]
        assert monitor.status == "unhealthy"


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_output_over_4096_bytes_is_cut(container):
    with monitoring(container, test="head -c 10000 /dev/zero | tr '\\0' x", **FAST) as monitor:
        assert first_result(monitor)["Output"] == "x" * 4096 + "..."


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_the_thread_ends_with_the_container(busybox):
    with (
        sandkit.Container(busybox) as c,
        monitoring(c, test="sleep 1000", interval=0.01) as monitor,
    ):
        wait_until(lambda: b"sleep 1000" in c.exec(["ps", "-o", "args"]).stdout, "a check runs")
        c.stop()
        # The check under way is given up when the container stops; the thread ends by itself.
        wait_until(lambda: not _health_threads(), "the health thread to end")
        assert monitor.status == "unhealthy"


def _health_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sandkit-health"]


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_close_abandons_a_running_check(container):
    with monitoring(container, test="sleep 1000", interval=0.01) as monitor:
        wait_until(
            lambda: b"sleep 1000" in container.exec(["ps", "-o", "args"]).stdout, "a check runs"
        )
    assert not _health_threads()
    assert results(monitor) == []  # an abandoned check records nothing
    assert monitor.status == "unhealthy"  # Docker's state once the checks end
    wait_until(
        lambda: b"sleep 1000" not in container.exec(["ps", "-o", "args"]).stdout,
        "the abandoned check to be killed",
    )


@pytest.mark.slow
def test_no_health_check_without_a_main_process(busybox):
    # Docker checks only containers whose main process runs: without run= there is none.
    with sandkit.Container(busybox, healthcheck={"test": "true", "interval": 0.01}) as c:
        assert c.health is None
        assert c.health_report() is None
        assert not _health_threads()


# --- with a main process (run=) ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_a_service_starting_healthy_unhealthy_then_stopped(busybox):
    check = {
        "test": "test -e /tmp/ok",
        "interval": 0.05,
        "start_interval": 0.05,
        "start_period": 3600,  # failures before the first success do not count...
        "retries": 1,
    }
    with sandkit.Container(busybox, run=["sleep", "1000"], healthcheck=check) as c:
        wait_until(lambda: len(c.health_report()["Log"]) >= 2, "two checks")
        assert c.health == "starting"
        c.write_file("/tmp/ok", b"")
        wait_until(lambda: c.health == "healthy", "healthy")
        c.exec(["rm", "/tmp/ok"], check=True)
        # ...but once it was healthy they do, start period or not.
        wait_until(lambda: c.health == "unhealthy", "unhealthy")
        assert _health_threads()
    assert not _health_threads()
    assert c.health == "unhealthy"
    assert c.health_report()["Log"][-1]["ExitCode"] == 1


@pytest.mark.slow
def test_the_images_healthcheck_and_none(busybox_dir):
    config = ImageConfig(
        cmd=("sleep", "1000"),
        healthcheck={"Test": ["CMD-SHELL", "exit 0"], "Interval": SECOND // 20},
    )
    image = sandkit.Image.from_directory(busybox_dir, config=config)
    with sandkit.Container(image, run=True) as c:
        wait_until(lambda: c.health == "healthy", "the image's check to pass")
    with sandkit.Container(image, run=True, healthcheck={"test": ["NONE"]}) as c:
        assert c.health is None
        assert c.health_report() is None
    # healthcheck= over the image's, key by key: its test, the image's interval.
    with sandkit.Container(image, run=True, healthcheck={"test": "exit 1", "retries": 1}) as c:
        wait_until(lambda: c.health == "unhealthy", "the overriding check to fail")


@pytest.mark.slow
def test_the_check_ends_when_the_main_process_does(busybox):
    check = {"test": "true", "interval": 0.05}
    with sandkit.Container(busybox, run=["sh", "-c", "exit 0"], healthcheck=check) as c:
        assert c.wait(timeout=30) == 0
        wait_until(lambda: not _health_threads(), "the health thread to end")
        assert c.health == "unhealthy"


# --- waiting for it (wait_for_healthy: the pytest fixtures' wait_for_healthy=) -----------------


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_wait_for_healthy_returns_once_the_check_passes(busybox):
    check = {"test": "test -e /tmp/ok", "interval": 0.05, "start_interval": 0.05}
    serve = ["sh", "-c", "sleep 0.5; touch /tmp/ok; exec sleep 1000"]
    with sandkit.Container(busybox, run=serve, healthcheck=check) as c:
        assert c.health == "starting"
        c.wait_for_healthy(timeout=30)
        assert c.health == "healthy"


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_wait_for_healthy_times_out_naming_the_state_and_the_checks_output(busybox):
    check = {"test": "echo not yet, disk busy; exit 1", "interval": 0.05, "retries": 1}
    with (
        sandkit.Container(busybox, run=["sleep", "1000"], healthcheck=check) as c,
        pytest.raises(errors.WaitTimeoutError, match=r"(?s)unhealthy.*not yet, disk busy"),
    ):
        c.wait_for_healthy(timeout=1)


@pytest.mark.slow
def test_wait_for_healthy_without_a_check_says_so_at_once(busybox):
    with (
        sandkit.Container(busybox, run=["sleep", "1000"]) as c,
        pytest.raises(errors.ReadinessSpecError, match="no health check"),
    ):
        c.wait_for_healthy(timeout=3600)
