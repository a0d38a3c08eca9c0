"""Bringing an init up (runtime/startup.py): a failure leaves nothing behind."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import our_children

from sandkit.runtime import startup


def test_a_setup_the_socket_cannot_carry_leaves_no_init_and_no_fd(warmed_up):
    children, fds = our_children(), sorted(os.listdir("/proc/self/fd"))
    # Larger than any unix datagram the kernel takes (the socket's send buffer): EMSGSIZE.
    too_large = b"\x80" * (4 << 20)
    with pytest.raises(OSError) as failed:
        startup.spawn_with_setup(
            too_large, user_namespace=os.geteuid() != 0, network=True, cgroup=None
        )
    assert failed.value.errno == errno.EMSGSIZE
    assert our_children() == children
    assert sorted(os.listdir("/proc/self/fd")) == fds
