"""Holes found by a second attack on the code that closed issues 14 and 15, kept as regression
tests, root and rootless (see test_attacks.py for the helpers and how a hole is kept)."""

from __future__ import annotations

import os
import time
import warnings

import pytest
from test_attacks import (  # noqa: F401 - fixtures: the helpers, and the C module loaded as root first
    MODES,
    _image,
    _sandkit_loaded,
    attack_bin,
    in_mode,
)

import sandkit

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="covers root and rootless mode, the latter as a user it creates"
    ),
]


def _left_after(c, token: str) -> str:
    """The container's processes whose command line holds ``token``, once any the timeout killed are gone (5 s)."""
    deadline = time.monotonic() + 5
    while True:
        ps = c.exec(["ps", "-o", "pid,ppid,pgid,sid,args"]).stdout.decode()
        left = "\n".join(line for line in ps.splitlines() if token in line)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# --- a process the exec's root makes a child of PID 1, in a session of its own ---------------


def _reparent_past_the_timeout(
    image_dir: str, bindir: str, how: str, token: str, user: str | None = None
) -> tuple[bool, str, str]:
    """Runs ``reparent how token`` as the exec (see attacks/reparent.c) with a 1 s timeout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(_image(image_dir), mounts=[f"{bindir}:/attacks:ro"]) as c:
            r = c.exec(["/attacks/reparent", how, token], user=user, timeout=1)
            return r.timed_out, r.stdout.decode(), _left_after(c, token)


# How the exec's root makes a process that no walk of its tree from /proc/*/stat finds (see
# attacks/reparent.c); the other user is root mode's only: rootless maps uid 0 alone.
REPARENTS = [
    pytest.param("clone_parent", None, id="clone_parent"),
    # The orphan of an exited root, not dumpable: its /proc/<pid>/fd, where the init finds
    # who holds the exec's output, is closed to all without CAP_SYS_PTRACE over it.
    pytest.param("nodump_orphan", "1000", id="nodump_orphan"),
]


@pytest.mark.parametrize(("how", "user"), REPARENTS)
@pytest.mark.parametrize("mode", MODES)
def test_a_reparented_process_does_not_outlive_the_exec_timeout(
    mode, how, user, as_unprivileged, busybox_dir, attack_bin
):
    token = f"{how[:2]}{os.getpid() % 100000}"
    timed_out, out, left = in_mode(
        mode,
        as_unprivileged,
        _reparent_past_the_timeout,
        str(busybox_dir),
        str(attack_bin),
        how,
        token,
        user if mode == "root" else None,
    )
    assert timed_out, out
    assert not left, f"a process the exec made outlived its timeout ({out.strip()}):\n{left}"


# --- a setsid orphan of an exec's root that has already exited -----------------------------


def _setsid_orphan_past_the_timeout(image_dir: str, token: str) -> tuple[bool, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sandkit.Container(_image(image_dir)) as c:
            # The root (sh) exits at once; its child starts a session of its own and keeps the
            # exec's output open, so the exec goes on until its timeout. Re-parented to PID 1,
            # it is in neither the root's session nor its group nor under any subreaper.
            r = c.exec(["sh", "-c", f"setsid sleep {token} & exit 0"], timeout=1)
            return r.timed_out, _left_after(c, f"sleep {token}")


@pytest.mark.parametrize("mode", MODES)
def test_a_setsid_orphan_of_an_exited_root_does_not_outlive_the_timeout(
    mode, as_unprivileged, busybox_dir
):
    token = str(900_000 + os.getpid() % 100_000)
    timed_out, left = in_mode(
        mode, as_unprivileged, _setsid_orphan_past_the_timeout, str(busybox_dir), token
    )
    assert timed_out
    assert not left, f"a process the exec started outlived its timeout:\n{left}"
