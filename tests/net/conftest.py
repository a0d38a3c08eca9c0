"""Fixtures of the network tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from polling import wait_until

from sandkit.net import pasta

from .helpers import host_state, network_processes


@pytest.fixture
def open_tun():
    """/dev/net/tun readable and writable by everyone (mode 0666, as most distributions ship
    it; this host's is 0600) for the test, so that a rootless pasta can open it; restored after."""
    mode = os.stat(pasta.TUN_DEVICE).st_mode & 0o777
    os.chmod(pasta.TUN_DEVICE, 0o666)
    try:
        yield
    finally:
        os.chmod(pasta.TUN_DEVICE, mode)


@pytest.fixture(scope="session")
def users_busybox():
    """A busybox root filesystem that belongs to the unprivileged test user, as the images a
    rootless user pulls do (one of root's is read-only to a rootless container's root: /etc
    could not take the network's /etc/hosts). Not under pytest's temporary directory: other
    pytest sessions on the machine set that back to 0700."""
    from conftest import unprivileged_ids
    from rootfs import make_busybox_rootfs

    import sandkit

    parent = Path(tempfile.mkdtemp(prefix="sandkit-users-busybox-"))
    os.chmod(parent, 0o755)
    root = make_busybox_rootfs(parent / "rootfs")
    uid, gid = unprivileged_ids()
    for path in [parent, *parent.rglob("*")]:
        os.lchown(path, uid, gid)
    yield sandkit.Image.from_directory(root)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def clean_host():
    """Fails the test when the host's interfaces, firewall or network processes differ after.

    The state before is taken once the networks of earlier tests have wound down: a keeper and
    its uplink end some tens of ms after their last container left, and a snapshot taken sooner
    held processes that were gone by the end (the test then failed at teardown for a leak that
    was none, or passed while a keeper lingered and failed the next test)."""
    home = os.environ["SANDKIT_HOME"]
    wait_until(lambda: not network_processes(home), "the networks of earlier tests to end")
    before = host_state(home)
    yield
    with contextlib.suppress(AssertionError):
        wait_until(lambda: host_state(home) == before, "the host's network state as before")
    assert host_state(home) == before  # pytest shows what differs
