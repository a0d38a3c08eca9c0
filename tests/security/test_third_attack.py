"""Holes found by a third attack, on the init's and the clone helper's newer parts (published-port
connects, netif, files, volume fill, the nested clone), kept as regression tests, root and
rootless. Driven through the init harness (tests/init_harness.py): the attacks need a listener
or a process inside the container's namespaces, which the test makes itself."""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import init_harness as H
from test_init_agent import (  # noqa: F401 - fixtures: the init built, a container with loopback
    built,
    lo_ctr,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nsenter, useradd)"),
]

# The init's cap on TCP connects in progress (MAX_CONNECTING in sandkit/_init/connect.c).
MAX_CONNECTING = 64


def init_pid(i: H.Init) -> int:
    """The init: the one child of the harness's `unshare --fork`."""
    with open(f"/proc/{i.proc.pid}/task/{i.proc.pid}/children") as f:
        (pid,) = f.read().split()
    return int(pid)


# A listener in the container's network namespace that never accepts: its backlog fills with
# the first connection, and every SYN after that is dropped, so a connect to it stays in
# progress until the kernel gives up.
NEVER_ACCEPTS = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(0)
print("listening", flush=True)
time.sleep(3600)
"""


@pytest.fixture
def never_accepting(lo_ctr):
    port = 9000
    proc = subprocess.Popen(
        ["nsenter", f"--net=/proc/{init_pid(lo_ctr)}/ns/net", sys.executable, "-c", NEVER_ACCEPTS,
         str(port)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == b"listening\n"
        yield lo_ctr, port
    finally:
        proc.kill()
        proc.wait()


def replies_now(i: H.Init, timeout: float) -> list[dict]:
    """The replies that arrive within timeout, their fds closed."""
    got = []
    while select.select([i.sock], [], [], timeout)[0]:
        msg, fds = i.recv()
        for fd in fds:
            os.close(fd)
        got.append(msg)
        timeout = 0.05
    return got


def test_connects_to_a_listener_that_never_accepts_do_not_block_other_ports_for_minutes(
    never_accepting,
):
    i, port = never_accepting
    # Fill the init's table of connects in progress, as clients of a published port do when the
    # server behind it stops accepting (the host gives each up after CONNECT_TIMEOUT, 5 s).
    for _ in range(MAX_CONNECTING + 4):
        i.send({"t": "connect", "id": i.new_id(), "proto": "tcp", "port": port})
    refused = [m for m in replies_now(i, 1.0) if m["t"] == "error" and m["errno"] == errno.EAGAIN]
    assert refused, "the table of connects in progress was never full"
    # The host gave up on them long ago; the init must too, soon after, or every published
    # port of the container is refused for as long as the kernel retries a SYN (over 2 min).
    deadline = time.monotonic() + 30
    while True:
        ask = i.new_id()
        reply, fds = i.request({"t": "connect", "id": ask, "proto": "tcp", "port": port + 1})
        while reply["id"] != ask:  # a late reply for one of the stale connects
            for fd in fds:
                os.close(fd)
            reply, fds = i.recv()
        for fd in fds:
            os.close(fd)
        if reply["errno"] != errno.EAGAIN:
            break
        assert time.monotonic() < deadline, (
            "30 s after the host gave up, the init still refuses every connect: its table is "
            "full of connects to a listener that never accepts"
        )
        time.sleep(0.5)
    assert reply["errno"] == errno.ECONNREFUSED, reply  # nothing listens on port + 1
