"""Containers made ahead of need: used when there, never leaked, never shared."""

from __future__ import annotations

import os
import time

import pytest

import sandkit
from sandkit.runtime import prespawn


@pytest.fixture
def prespawning(monkeypatch):
    monkeypatch.setenv("SANDKIT_PRESPAWN", "1")
    prespawn.drain()
    yield
    prespawn.drain()


def _spare_pids():
    return {ready.init.pid for ready in prespawn.spares()}


def _wait_for_a_spare(timeout=10.0):
    deadline = time.monotonic() + timeout
    while not _spare_pids():
        assert time.monotonic() < deadline, "no spare container was made"
        time.sleep(0.005)
    return _spare_pids()


def test_the_next_container_takes_the_spare_and_a_new_one_is_made(busybox, prespawning):
    with sandkit.Container(busybox) as first:
        first.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, hostname="second") as second:
        assert second._core._init.pid in spare
        assert second.exec(["hostname"]).stdout == b"second\n"
        assert second.exec(["sh", "-c", "ls /tmp | wc -l"]).stdout == b"0\n"
    assert _wait_for_a_spare() != spare


def test_containers_from_spares_are_as_isolated_as_any(busybox, prespawning):
    with sandkit.Container(busybox) as c:
        c.exec(["sh", "-c", "echo secret > /tmp/mine"])
    _wait_for_a_spare()
    with sandkit.Container(busybox) as c:
        assert c.exec(["cat", "/tmp/mine"]).exit_code != 0
        assert c.exec(["cat", "/proc/1/comm"]).stdout == b"sandkit-init\n"
        assert c.exec(["hostname"]).stdout == f"{c.id[:12]}\n".encode()


def test_a_different_setup_gets_no_spare(busybox, prespawning, tmp_path):
    with sandkit.Container(busybox) as c:
        c.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, mounts=[f"{tmp_path}:/data"]) as c:
        assert c._core._init.pid not in spare
    with sandkit.Container(busybox, read_only=True) as c:
        assert c._core._init.pid not in spare


def test_limits_and_lifetimes_bypass_the_spares(busybox, prespawning):
    with sandkit.Container(busybox) as c:
        c.exec(["true"])
    spare = _wait_for_a_spare()
    with sandkit.Container(busybox, pids_limit=50) as c:
        assert c._core._init.pid not in spare
    with sandkit.Container(busybox, lifetime=30) as c:
        assert c._core._init.pid not in spare


def test_drain_stops_every_spare(busybox, prespawning):
    with sandkit.Container(busybox):
        pass
    spare = _wait_for_a_spare()
    prespawn.drain()
    assert not _spare_pids()
    for pid in spare:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
