"""Attacks on the host side of networks and volumes: a keeper that stops answering, state files
another local user reaches for, calls repeated until something runs out (fds), and processes
that could outlive the host process that started them."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading

import pytest
from net.helpers import network_processes
from polling import wait_until

from sandkit import errors
from sandkit.net import client, egress, store

pytestmark = [pytest.mark.slow]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root")


@pytest.fixture
def no_keeper_left():
    """No network process of ours before the test, and none left after it."""
    home = os.environ["SANDKIT_HOME"]
    wait_until(lambda: not network_processes(home), "the networks of earlier tests to end")
    yield
    wait_until(lambda: not network_processes(home), "the test's keepers to end")


def _keeper_pid(connection: client.KeeperConnection) -> int:
    creds = connection._sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return struct.unpack("3i", creds)[0]


def _outcome_within(call, seconds: float) -> BaseException | object:
    """Runs ``call`` in a thread and returns what it returned or raised; fails the test if it
    is still running after ``seconds`` (the thread is left to the stopped keeper)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: outcome, f"{call} to return or raise", timeout=seconds)
    return outcome[0]


@needs_root
@pytest.mark.root
def test_a_keeper_that_stops_answering_fails_join_and_requests_instead_of_hanging(
    no_keeper_left, monkeypatch
):
    monkeypatch.setattr(client, "KEEPER_REPLY_TIMEOUT", 1.0)
    member = client.join(store.BRIDGE)
    keeper = _keeper_pid(member)
    os.kill(keeper, signal.SIGSTOP)
    try:
        joined = _outcome_within(lambda: client.join(store.BRIDGE), 20)
        assert isinstance(joined, errors.NetworkError), joined
        assert "did not answer" in str(joined) and str(keeper) in str(joined)
        listed = _outcome_within(lambda: client.attached_containers(store.BRIDGE), 20)
        assert isinstance(listed, errors.NetworkError), listed
        # a member's own request (set_egress) and the ones after it fail the same way
        for _ in range(2):
            swapped = _outcome_within(
                lambda: member.set_egress(egress.ResolvedEgress(allow_all=True), []), 20
            )
            assert isinstance(swapped, errors.NetworkError), swapped
            assert "did not answer" in str(swapped)
    finally:
        os.kill(keeper, signal.SIGCONT)
        member.close()
