"""Bring up a container's init: spawn it, send its setup, check that it answers Ready.

One implementation for both who do it: a fresh `start()` awaits the answer on the event loop
(`await_ready`), the prespawn worker thread blocks for it (`wait_ready_blocking`). Each failure
has one message, whichever waited.
"""

from __future__ import annotations

import array
import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence

import anyio

from .. import errors
from ..ipc import Error, Ready, Reply
from .cgroups import ContainerCgroup
from .channel import ControlChannel
from .outcomes import start_failure
from .resources import spawn_options
from .spawn import SpawnedInit, spawn_init

# How long the init may take to build the container (mounts, layers, seccomp) and say Ready.
SET_UP_TIMEOUT = 30.0
# The setup is request 0: the first the init reads, before any other.
_SETUP_ID = 0


def spawn_with_setup(
    setup: bytes | Callable[[SpawnedInit], bytes],
    *,
    user_namespace: bool,
    network: bool,
    cgroup: ContainerCgroup | None,
    parent_userns: int | None = None,
    fds: Sequence[int] = (),
) -> tuple[SpawnedInit, ControlChannel]:
    """Spawn an init (in ``cgroup``, if any; its user namespace under ``parent_userns``, if
    given: see `spawn_init`) and send it ``setup``, an encoded `Setup`, or what ``setup(init)``
    returns (for what needs the init to exist first: its interface on a network), with
    ``fds`` (a persistent layer's directory).

    Its answer is the caller's to wait for. On failure nothing is left behind (the cgroup is the
    caller's).
    """
    host_end, init_end = socket.socketpair(
        socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC
    )
    with init_end:
        try:
            init = spawn_init(
                init_end,
                user_namespace=user_namespace,
                network=network,
                parent_userns=parent_userns,
                **spawn_options(cgroup),
            )
        except BaseException:
            host_end.close()
            raise
    try:
        if callable(setup):
            setup = setup(init)
        # The socket is new and empty: this one packet never blocks. An init that died already
        # is found by the wait for its answer (end of file), which says so.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            host_end.sendmsg([setup], ancillary if fds else [])
    except BaseException:
        host_end.close()
        init.close()  # kills and reaps it
        raise
    return init, ControlChannel(host_end)


async def await_ready(channel: ControlChannel, *, rootless: bool) -> None:
    """Wait on the event loop for the init's answer to its setup; raise unless it is Ready."""
    reply = None
    with _answer_to_setup(channel), anyio.move_on_after(SET_UP_TIMEOUT):
        reply, _ = await channel.reply(_SETUP_ID)
    check_ready(reply, rootless=rootless)


def wait_ready_blocking(channel: ControlChannel, *, rootless: bool) -> None:
    """`await_ready`, blocking this thread (for a channel no other thread or task reads)."""
    with _answer_to_setup(channel):
        answer = channel.reply_blocking(_SETUP_ID, time.monotonic() + SET_UP_TIMEOUT)
    check_ready(answer[0] if answer else None, rootless=rootless)


@contextlib.contextmanager
def _answer_to_setup(channel: ControlChannel) -> Iterator[None]:
    try:
        yield
    except errors.ContainerDiedError:
        raise init_exited() from None
    finally:
        channel.forget(_SETUP_ID)


def check_ready(reply: Reply | None, *, rootless: bool) -> None:
    """Raise unless ``reply``, the init's answer to its setup (None: none came in time), is Ready."""
    if reply is None:
        raise errors.ContainerStartError(
            f"the container did not finish set-up within {SET_UP_TIMEOUT:.0f} s"
        )
    if isinstance(reply, Error):
        raise errors.ContainerStartError(start_failure(reply, rootless))
    if not isinstance(reply, Ready):
        raise errors.ProtocolError(f"expected 'ready' from the init, got {reply!r}")


def init_exited() -> errors.ContainerStartError:
    """The error for an init that ended before it was ready (a spare's too, when it is taken)."""
    return errors.ContainerStartError(
        "the container's init exited during set-up without saying why: "
        "run `sandkit doctor` to check what this host supports"
    )
