"""HEALTHCHECK: the image's (or ``healthcheck=``'s) check, run in the background as Docker runs it.

Docker's rules (moby's daemon/health.go), followed here:

- The state is "starting" until the first check that exits 0 ("healthy"). A check that fails
  while the state is still "starting" and the check began within the start period does not
  count; otherwise each failure adds to the failing streak, and ``retries`` failures in a row make
  the state "unhealthy". A success makes it "healthy" and ends the streak.
- A check runs ``interval`` after the previous one ended (and the first ``interval`` after the
  start); during the start period, while the state is "starting", every ``start_interval``.
- A check that runs longer than ``timeout`` fails (exit -1, "Health check exceeded timeout
  (30s)") and its process and everything it started are killed.
- The last 5 results are kept (exit code, output capped at 4096 bytes with "..." after, start,
  end), as `docker inspect` shows them under State.Health.Log.

The checks run on a thread of their own, not on the caller's event loop (as published ports do,
see forward.py), so that a container's health is kept up to date without a nursery, sync or async,
between the caller's calls. The thread ends when the container stops.
"""

from __future__ import annotations

import collections
import datetime
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .. import errors

# Docker's defaults (moby daemon/health.go).
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
# Docker refuses durations under a millisecond (other than 0, "the default").
MIN_DURATION = 0.001

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
_OPTION_KEYS = ("test", "interval", "timeout", "retries", "start_period", "start_interval")
# The image config's duration fields (nanoseconds) and the option each one is.
_IMAGE_DURATIONS = {
    "Interval": "interval",
    "Timeout": "timeout",
    "StartPeriod": "start_period",
    "StartInterval": "start_interval",
}


@attrs.frozen
class HealthConfig:
    """A health check as run: the command and Docker's timing (seconds), defaults applied."""

    argv: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES
    test: tuple[str, ...] = ()  # as given: ("CMD", ...) or ("CMD-SHELL", "...")


# -- configuration --------------------------------------------------------------------------


def _check_test(test: object, where: str) -> tuple[str, ...]:
    """A Test as Docker takes it: ["CMD", argv...], ["CMD-SHELL", "command"], ["NONE"], or a
    str (a shell command, as ``--health-cmd``)."""
    if isinstance(test, str):
        return ("CMD-SHELL", test)
    if (
        not isinstance(test, list | tuple)
        or not test
        or not all(isinstance(part, str) for part in test)
    ):
        raise errors.ReadinessSpecError(
            f"{where} test={test!r} is not valid: give a shell command (a str), "
            '["CMD", "prog", "arg"...], ["CMD-SHELL", "command"] or ["NONE"]'
        )
    kind = test[0]
    if (
        kind == "NONE"
        or (kind == "CMD" and len(test) > 1)
        or (kind == "CMD-SHELL" and len(test) == 2)
    ):
        return tuple(test)
    raise errors.ReadinessSpecError(
        f'{where} test={list(test)!r} is not valid: its first element must be "CMD" (followed '
        'by the program and its arguments), "CMD-SHELL" (followed by one shell command) or "NONE"'
    )


def _check_seconds(name: str, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise errors.ReadinessSpecError(
            f"{where} {name}={value!r} is not valid: give seconds, a number >= 0 (0: the default)"
        )
    if 0 < value < MIN_DURATION:
        raise errors.ReadinessSpecError(
            f"{where} {name}={value!r} is too short: Docker's minimum is 1 ms (0: the default)"
        )
    return float(value)


def _check_retries(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.ReadinessSpecError(
            f"{where} retries={value!r} is not valid: give an int >= 0 (0: the default, 3)"
        )
    return value


def from_option(option: Mapping[str, Any]) -> dict[str, Any]:
    """``healthcheck=`` checked, in the image config's terms (durations in seconds)."""
    where = "healthcheck="
    if not isinstance(option, Mapping):
        raise errors.ReadinessSpecError(
            f"{where}{option!r} is not valid: give a dict with some of the keys "
            f"{', '.join(_OPTION_KEYS)}"
        )
    unknown = sorted(set(option) - set(_OPTION_KEYS))
    if unknown:
        raise errors.ReadinessSpecError(
            f"{where} has no key {unknown[0]!r}: the keys are {', '.join(_OPTION_KEYS)} "
            "(durations in seconds)"
        )
    checked: dict[str, Any] = {}
    if option.get("test") is not None:
        checked["test"] = _check_test(option["test"], where)
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if option.get(key) is not None:
            checked[key] = _check_seconds(key, option[key], where)
    if option.get("retries") is not None:
        checked["retries"] = _check_retries(option["retries"], where)
    return checked


def from_image(healthcheck: Mapping[str, Any] | None) -> dict[str, Any]:
    """The image config's Healthcheck (durations in nanoseconds) in the same terms; a malformed
    one is an `ImageError` naming the field."""
    if not healthcheck:
        return {}
    where = "the image's Healthcheck"
    try:
        checked: dict[str, Any] = {}
        if healthcheck.get("Test"):
            checked["test"] = _check_test(healthcheck["Test"], where)
        for key, name in _IMAGE_DURATIONS.items():
            nanoseconds = healthcheck.get(key)
            if nanoseconds:
                if isinstance(nanoseconds, bool) or not isinstance(nanoseconds, int):
                    raise errors.ReadinessSpecError(f"{where} {key}={nanoseconds!r} is not an int")
                checked[name] = _check_seconds(name, nanoseconds / 1e9, where)
        if healthcheck.get("Retries"):
            checked["retries"] = _check_retries(healthcheck["Retries"], where)
    except errors.ReadinessSpecError as exc:
        raise errors.ImageError(
            f"{exc} (rebuild the image, or override it with healthcheck=)"
        ) from None
    return checked


def resolve(
    image_healthcheck: Mapping[str, Any] | None, option: Mapping[str, Any] | None
) -> HealthConfig | None:
    """The check a container runs: ``healthcheck=`` over the image's Healthcheck key by key (as
    ``docker run --health-*`` over the image's: a key not given, or 0, takes the image's), then
    Docker's defaults; None when there is no test, or it is ["NONE"]."""
    merged = from_image(image_healthcheck)
    for key, value in from_option(option).items() if option is not None else ():
        if value or key == "test":
            merged[key] = value
    test = merged.get("test")
    if not test or test[0] == "NONE":
        return None
    argv = test[1:] if test[0] == "CMD" else ("/bin/sh", "-c", test[1])
    return HealthConfig(
        argv=tuple(argv),
        interval=merged.get("interval") or DEFAULT_INTERVAL,
        timeout=merged.get("timeout") or DEFAULT_TIMEOUT,
        start_period=merged.get("start_period") or DEFAULT_START_PERIOD,
        start_interval=merged.get("start_interval") or DEFAULT_START_INTERVAL,
        retries=merged.get("retries") or DEFAULT_RETRIES,
        test=tuple(test),
    )


# -- results and state ----------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it ("30s", "1.5s", "500ms", "1m30s"), which
    Docker's timeout message uses."""
    nanoseconds = round(seconds * 1e9)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanoseconds >= size:
                return f"{_trim(nanoseconds / size)}{unit}"
    hours, rest = divmod(nanoseconds, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return f"{text}{_trim(rest / 1e9)}s"


_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a duration written as Go's time.ParseDuration reads it, which Docker's
    ``--health-*`` flags use: "30s", "1m30s", "500ms", "1.5h", "-2s", "0". ValueError with
    Go's message for anything else ("5": a number needs its unit)."""
    body = text[1:] if text[:1] in "+-" else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, position = 0.0, 0
    while position < len(body):
        part = _GO_PART.match(body, position)
        if part is None:
            if re.fullmatch(r"[\d.]+", body[position:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        position = part.end()
    return sign * total


def _trim(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".")


def timestamp(ns: int) -> str:
    """A wall-clock time in RFC 3339 with nanoseconds, as Docker's JSON shows times."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def cap_output(output: bytes) -> str:
    """Docker keeps the first 4096 bytes of a check's output, with "..." when there was more."""
    text = output[:MAX_OUTPUT].decode("utf-8", "replace")
    return text + "..." if len(output) > MAX_OUTPUT else text


@attrs.frozen
class CheckResult:
    """One check, as `docker inspect` lists it in State.Health.Log."""

    exit_code: int
    output: str
    start: int  # time.time_ns()
    end: int
    start_monotonic: float = 0.0

    def to_docker(self) -> dict[str, Any]:
        """The entry as `docker inspect` shows it (times in RFC 3339 with nanoseconds)."""
        return {
            "Start": timestamp(self.start),
            "End": timestamp(self.end),
            "ExitCode": self.exit_code,
            "Output": self.output,
        }


@attrs.define(eq=False)
class HealthState:
    """The state machine: what the results so far say (thread-safe: the checking thread writes,
    any thread reads)."""

    config: HealthConfig
    started: float = attrs.field(factory=time.monotonic)  # the container's start
    status: str = STARTING
    failing_streak: int = 0
    log: collections.deque[CheckResult] = attrs.field(
        factory=lambda: collections.deque(maxlen=MAX_LOG_ENTRIES)
    )
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def record(self, result: CheckResult) -> None:
        """Take one check's result, by Docker's rules."""
        with self._lock:
            self.log.append(result)
            if result.exit_code == 0:
                self.failing_streak = 0
                self.status = HEALTHY
                return
            in_start_period = result.start_monotonic - self.started < self.config.start_period
            if self.status == STARTING and in_start_period:
                return  # failures while starting up do not count
            self.failing_streak += 1
            if self.failing_streak >= self.config.retries:
                self.status = UNHEALTHY

    def monitor_stopped(self) -> None:
        """The checks have ended with the container: Docker then says "unhealthy" (moby's
        CloseMonitorChannel, "for compatibility reasons"), whatever the last check said."""
        with self._lock:
            self.status = UNHEALTHY

    def next_interval(self) -> float:
        """How long after a check ends the next one starts (Docker's ``getInterval``)."""
        elapsed = time.monotonic() - self.started
        if elapsed >= self.config.start_period:
            return self.config.interval
        with self._lock:
            status = self.status
        if status == STARTING:
            return self.config.start_interval
        # Healthy within the start period: the next check no later than the period's end.
        return min(self.config.interval, self.config.start_period - elapsed)

    def to_docker(self) -> dict[str, Any]:
        """State.Health as `docker inspect` shows it."""
        with self._lock:
            return {
                "Status": self.status,
                "FailingStreak": self.failing_streak,
                "Log": [entry.to_docker() for entry in self.log],
            }


# -- the checking thread --------------------------------------------------------------------


@attrs.frozen
class ProbeOutcome:
    """What running the check command gave: its exit code and output, or that it timed out."""

    exit_code: int
    output: bytes
    timed_out: bool = False


# (argv, timeout in seconds, stop event) -> the outcome. Raises ContainerNotRunningError or
# ContainerDiedError when the container is gone; ExecStartError when the command cannot start.
ProbeRunner = Callable[[Sequence[str], float, threading.Event], ProbeOutcome]


@attrs.define(eq=False)
class HealthMonitor:
    """Runs a container's health check in the background, from `start` until `close`."""

    state: HealthState
    run_probe: ProbeRunner
    # Called on the checking thread after each result, and once when the checks end (the CLI's
    # supervisor writes the state where `sandkit ps` and `inspect` read it).
    on_change: Callable[[HealthState], None] | None = None
    _stop: threading.Event = attrs.field(factory=threading.Event, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)

    @property
    def status(self) -> str:
        """The state: "starting", "healthy" or "unhealthy"."""
        return self.state.status

    def start(self) -> None:
        """Start checking, on a thread of its own (the first check one interval from now)."""
        self._thread = threading.Thread(target=self._run, name="sandkit-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop checking (a check under way is abandoned and its process killed); returns once
        the thread has ended. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            self._changed()  # "starting", before the first check
            while not self._stop.wait(self.state.next_interval()):
                result = self._check()
                if result is None:
                    return  # stopped, or the container is gone
                self.state.record(result)
                self._changed()
        finally:
            self.state.monitor_stopped()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.state)

    def _check(self) -> CheckResult | None:
        config = self.state.config
        start_ns, start = time.time_ns(), time.monotonic()
        try:
            outcome = self.run_probe(config.argv, config.timeout, self._stop)
        except (errors.ContainerNotRunningError, errors.ContainerDiedError):
            return None
        except errors.SandkitError as exc:  # it could not start: Docker records the error
            outcome = ProbeOutcome(-1, str(exc).encode())
        if self._stop.is_set():
            return None
        output = cap_output(outcome.output)
        exit_code = outcome.exit_code
        if outcome.timed_out:
            exit_code = -1
            message = f"Health check exceeded timeout ({go_duration(config.timeout)})"
            output = f"{message}: {output}" if output else message
        return CheckResult(exit_code, output, start_ns, time.time_ns(), start)
