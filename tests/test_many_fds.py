"""A process that holds more than 1024 files (or ~500 containers) still starts containers and
reads their output: nothing on the host side waits with select(), which cannot watch an fd
above 1023 ("ValueError: filedescriptor out of range in select()")."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from conftest import make_busybox_rootfs

import sandkit
from sandkit.runtime import prespawn

pytestmark = pytest.mark.slow

# Every fd sandkit makes after these are open is above select()'s FD_SETSIZE (1024).
_HIGH_FD = 1100


def _fill_fds_past_1024() -> list[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * _HIGH_FD:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2 * _HIGH_FD, hard), hard))
    held = []
    while not held or held[-1] < _HIGH_FD:
        held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return held


def _wait_for_a_spare(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not prespawn.spares():
        assert time.monotonic() < deadline, "no spare container was made"
        time.sleep(0.005)


def _containers_with_high_fds(image: sandkit.Image) -> tuple[bytes, bytes, bytes]:
    """A fresh start, a start from a spare (made by the background thread), an exec and a
    spawn whose output is read through blocking waits, all with every new fd above 1024."""
    held = _fill_fds_past_1024()
    os.environ["SANDKIT_PRESPAWN"] = "1"
    try:
        with sandkit.Container(image) as fresh:
            assert fresh._core._channel.sock.fileno() > 1024
            first = fresh.exec(["echo", "fresh"]).stdout
        _wait_for_a_spare()
        with sandkit.Container(image) as c:
            second = c.exec(["echo", "spare"]).stdout
            with c.spawn(["sh", "-c", "sleep 0.2; echo streamed"]) as p:
                streamed = b"".join(p.stdout)  # blocks in a wait for readable output
                p.wait()
        return first, second, streamed
    finally:
        os.environ["SANDKIT_PRESPAWN"] = "0"
        prespawn.drain()
        for fd in held:
            os.close(fd)


def test_containers_start_and_stream_with_fds_above_1024(busybox, no_leaks):
    assert _containers_with_high_fds(busybox) == (b"fresh\n", b"spare\n", b"streamed\n")


def _with_own_busybox() -> tuple[bytes, bytes, bytes]:
    # Made by the user itself: pytest's basetemp is private to root.
    image = sandkit.Image.from_directory(
        make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    )
    return _containers_with_high_fds(image)


@pytest.mark.skipif(os.geteuid() != 0, reason="root creates the unprivileged user")
def test_rootless_containers_start_and_stream_with_fds_above_1024(as_unprivileged):
    assert as_unprivileged(_with_own_busybox) == (b"fresh\n", b"spare\n", b"streamed\n")
