"""The container init lives as long as its container and serves every request of it: what it
allocates or opens for one request must be freed when the request is over. Measured from the host
on the real init (tests/init_harness.py): its resident memory (/proc/<pid>/status VmRSS) and its
open fds, after a warm-up and again after many rounds of every kind of request."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import init_harness as H

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)"),
]

# A user whose home is long: the HOME= entry the init adds to an exec's environment is then
# 4 KiB, so that even one leaked copy per exec adds up to megabytes within the test.
LONG_HOME = "/home/" + "h" * 4000
WARM_UP, ROUNDS = 20, 150
# Generous: leaking one HOME= string per round would grow the init by 600 KiB.
MAX_GROWTH_KB = 256


@pytest.fixture(scope="module", autouse=True)
def built():
    return H.build_init()


def _init_pid(i: H.Init) -> int:
    """The init is the child of `unshare --fork`."""
    with open(f"/proc/{i.proc.pid}/task/{i.proc.pid}/children") as f:
        return int(f.read().split()[0])


def _usage(pid: int) -> tuple[int, list[str]]:
    """VmRSS in kB and the targets of the open fds of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def _one_round(i: H.Init) -> None:
    """One request of every kind the init serves, each checked to have done its work."""
    r = i.capture(["sh", "-c", 'test ${#HOME} -gt 4000 && echo "$HOME" | wc -c'], user="long")
    assert r["stdout"] == b"4007\n", r
    assert i.run(["echo", "piped"])["stdout"] == b"piped\n"
    assert i.capture(["missing-program"])["reply"]["kind"] == "notfound"
    assert i.capture(["true"], user="nosuchuser")["reply"]["kind"] == "user"
    msg = {
        "t": "exec",
        "argv": ["tty"],
        "env": ["PATH=/bin"],
        "stdio": "pty",
        "rows": 24,
        "cols": 80,
    }
    reply, fds = i.request(msg)
    assert reply["t"] == "started" and len(fds) == 1, reply
    os.close(fds[0])
    i.wait_exit(reply["id"])
    reply, (o_r, e_r) = i.start(["sleep", "4343"])
    assert reply["t"] == "started", reply
    ok, _ = i.request({"t": "signal", "target": reply["id"], "sig": 9, "tree": True})
    assert ok["t"] == "ok", ok
    assert i.wait_exit(reply["id"])["signal"] == 9
    H.read_all(o_r), H.read_all(e_r)
    opened, fds = i.request({"t": "open", "path": "/etc/hello.txt", "mode": "r"})
    assert opened["t"] == "opened" and len(fds) == 1, opened
    os.close(fds[0])
    assert i.request({"t": "ping"})[0]["t"] == "pong"


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_the_init_frees_what_each_request_takes(rootless):
    i = H.Init(rootless=rootless)
    try:
        assert i.setup()["t"] == "ready"
        r = i.capture(["sh", "-c", f"echo 'long:x:0:0::{LONG_HOME}:/bin/sh' >> /etc/passwd"])
        assert r["exit"]["code"] == 0, r
        pid = _init_pid(i)
        for _ in range(WARM_UP):  # the init's arrays and heap reach their working size
            _one_round(i)
        rss_before, fds_before = _usage(pid)
        for _ in range(ROUNDS):
            _one_round(i)
        rss_after, fds_after = _usage(pid)
        assert fds_after == fds_before
        assert rss_after - rss_before <= MAX_GROWTH_KB, (
            f"the init grew from {rss_before} kB to {rss_after} kB over {ROUNDS} rounds of requests"
        )
    finally:
        i.close()
