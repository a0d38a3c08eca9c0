"""Messages between a detached container's supervisor and its clients (the CLI, attached
containers).

A unix SOCK_SEQPACKET socket: one JSON object per packet (the boundaries come free), file
descriptors alongside with SCM_RIGHTS. JSON and not pickle, so that a process that can reach the
socket can at worst send a bad request, never code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from typing import Any

import anyio

from .. import errors

# Docker's log multiplexing header, in the supervisor's log file: stream (1 stdout, 2 stderr),
# 3 zero bytes, big-endian length.
LOG_HEADER = struct.Struct(">BxxxI")
STOP_TIMEOUT = 10.0  # seconds a stop waits before it kills
# How long a process's output is still read after it exited (what its children left in the pipe).
OUTPUT_GRACE = 1.0

MAX_MESSAGE = 65536
MAX_FDS = 3
# A memfd sent with a message cannot change once sent.
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def make_socket() -> socket.socket:
    """A new non-blocking, close-on-exec unix SOCK_SEQPACKET socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    return sock


async def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send ``message`` as one JSON packet, with ``fds`` attached, waiting while the socket is
    full."""
    data = json.dumps(message).encode()
    while True:
        try:
            socket.send_fds(sock, [data], fds or [])
            return
        except BlockingIOError:
            await anyio.wait_writable(sock)


async def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and its fds; (None, []) when the other side has closed."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
            break
        except BlockingIOError:
            await anyio.wait_readable(sock)
        except ConnectionResetError:
            return None, []
    if not data:
        return None, fds
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return {"op": "invalid"}, fds
    return message, fds


@contextlib.contextmanager
def short_path(path: str) -> Iterator[str]:
    """``path`` as a name that fits in a unix socket address (108 bytes): a deep SANDKIT_HOME
    plus a 64-digit id do not. The socket's directory is reached through an fd of ours."""
    directory = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{directory}/{os.path.basename(path)}"
    finally:
        os.close(directory)


def listen(path: str) -> socket.socket:
    """A socket listening at ``path`` (however long the path is)."""
    sock = make_socket()
    try:
        with short_path(path) as name:
            sock.bind(name)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


async def connect(path: str) -> socket.socket:
    """A socket connected to the supervisor listening at ``path``; `OSError` when none listens
    there."""
    sock = make_socket()
    try:
        with short_path(path) as name:
            sock.connect(name)
    except BlockingIOError:
        await anyio.wait_writable(sock)
    except OSError:
        sock.close()
        raise
    return sock


def error_from(reply: dict[str, Any], default: type[errors.SandkitError]) -> errors.SandkitError:
    """A supervisor's refusal (``{"error": message, "kind": class name}``) as that
    `sandkit.errors` class, so a client raises what the same call raises in-process; ``default``
    for a class this sandkit does not have, or one that takes more than a message."""
    kind = getattr(errors, str(reply.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.SandkitError)):
        kind = default
    try:
        return kind(str(reply.get("error")))
    except TypeError:
        return default(str(reply.get("error")))


def memfd_holding(data: bytes) -> int:
    """A sealed memfd holding ``data``: bytes of any size (an exec's input or output) sent
    alongside a message, which itself stays small."""
    fd = os.memfd_create("sandkit-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def memfd_content(fd: int) -> bytes:
    """What a received memfd holds, from its start (whatever its offset); `ValueError` for an
    fd that is no regular file (a pipe or a device would not say its size, or never end)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("expected a memfd")
    return os.pread(fd, st.st_size, 0) if st.st_size else b""
