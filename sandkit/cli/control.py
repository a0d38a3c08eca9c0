"""Messages between the CLI and a detached container's supervisor.

A unix SOCK_SEQPACKET socket: one JSON object per packet (the boundaries come free), file
descriptors alongside with SCM_RIGHTS. JSON and not pickle, so that a process that can reach the
socket can at worst send a bad request, never code.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio

MAX_MESSAGE = 65536
MAX_FDS = 3


def make_socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    return sock


async def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
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


async def connect(path: str) -> socket.socket:
    sock = make_socket()
    try:
        sock.connect(path)
    except BlockingIOError:
        await anyio.wait_writable(sock)
    except OSError:
        sock.close()
        raise
    return sock
