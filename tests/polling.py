"""Waiting for a condition instead of sleeping a fixed time: a test waits as long as the
condition takes and no longer, and fails with what it waited for. No pytest in here."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

# A shell snippet that runs CONDITION (a shell command) until it succeeds, for at most 5 s:
# `POLL_SH.format(condition=...)` inside a container's script.
POLL_SH = "i=0; until {condition}; do [ $i -ge 500 ] && break; i=$((i+1)); sleep 0.01; done"


# How long a wait gives its condition by default: what a slow step takes on a loaded 2-core CI
# machine shared with other test runs, with room to spare. Only a failing test waits that long.
DEFAULT_TIMEOUT = 60.0


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.005,
) -> None:
    """Returns once `condition()` is true; raises AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stack_of(thread: threading.Thread) -> list[str]:
    """The names of the functions `thread` is in, innermost first ([] once it has ended)."""
    frame = sys._current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names
