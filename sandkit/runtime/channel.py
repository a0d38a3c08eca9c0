"""The host's end of a container's control socket: packets with fds, under anyio (trio or asyncio).

Replies are matched to requests without a background task: whoever waits for a reply takes the
read lock and reads packets until its own has arrived, filing the others for their owners. So a
container needs no nursery of its own, and `start()`/`stop()` work outside `async with`.
"""

from __future__ import annotations

import array
import errno
import os
import socket
from collections.abc import Sequence

import anyio
import attrs

from ..errors import ContainerDiedError, ProtocolError
from ..ipc import MAX_FDS, MAX_PACKET, Connection, Error, Reply, Request

_FD_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


@attrs.define(eq=False)
class _Slot:
    """Replies (and fds) filed for one request id until its owner collects them."""

    replies: list[tuple[Reply, list[int]]] = attrs.field(factory=list)


@attrs.define(eq=False)
class ControlChannel:
    sock: socket.socket
    protocol: Connection = attrs.field(factory=Connection)
    _slots: dict[int, _Slot] = attrs.field(factory=dict, init=False)
    _read_lock: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)
    _dead: str | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.sock.setblocking(False)

    # -- sending --------------------------------------------------------------------------

    def send(self, request: Request, fds: Sequence[int] = ()) -> None:
        """Send a request; register its id so that replies to it are kept."""
        if self._dead is not None:
            raise ContainerDiedError(self._dead)
        packet = self.protocol.packet_for(request, fds)
        self._slots.setdefault(request.id, _Slot())
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            # A seqpacket send to a live init never blocks long: its buffer holds many requests.
            self.sock.sendmsg([packet], ancillary)
        except BlockingIOError:
            self._blocking_send(packet, ancillary)
        except (BrokenPipeError, ConnectionResetError):
            self._die("the container's init has exited")
            raise ContainerDiedError(self._dead) from None

    def _blocking_send(self, packet: bytes, ancillary: list) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendmsg([packet], ancillary)
        finally:
            self.sock.setblocking(False)

    # -- receiving ------------------------------------------------------------------------

    async def reply(self, request_id: int) -> tuple[Reply, list[int]]:
        """The next reply (or event) for ``request_id``, with the fds it carries."""
        slot = self._slots.setdefault(request_id, _Slot())
        while not slot.replies:
            if self._dead is not None:
                raise ContainerDiedError(self._dead)
            async with self._read_lock:
                if slot.replies:
                    break
                await self._read_one()
        return slot.replies.pop(0)

    def forget(self, request_id: int) -> None:
        """Drop a request's slot and close fds nobody will collect."""
        slot = self._slots.pop(request_id, None)
        if slot:
            for _, fds in slot.replies:
                for fd in fds:
                    os.close(fd)

    async def _read_one(self) -> None:
        while True:
            try:
                data, ancdata, flags, _ = self.sock.recvmsg(
                    MAX_PACKET + 1, _FD_SPACE, socket.MSG_CMSG_CLOEXEC
                )
                break
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
            except OSError as exc:
                self._die(f"the control socket failed: {os.strerror(exc.errno or errno.EIO)}")
                raise ContainerDiedError(self._dead) from None
        fds = _fds_from(ancdata)
        if not data and not fds:
            self._die("the container's init has exited")
            raise ContainerDiedError(self._dead)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_PACKET:
            for fd in fds:
                os.close(fd)
            raise ProtocolError("the init sent an oversized packet or too many fds")
        reply, kept = self.protocol.receive(data, fds)
        slot = self._slots.get(reply.id)
        if slot is None and reply.id == 0 and isinstance(reply, Error):
            # After set-up, an error for request 0 is the init's last word before it ends the
            # container (its lifetime is over): it becomes the reason every waiter is given.
            self._die(reply.msg)
            raise ContainerDiedError(self._dead)
        if slot is None:
            # A reply for a request nobody waits for any more (its waiter was cancelled).
            for fd in kept:
                os.close(fd)
            return
        slot.replies.append((reply, kept))

    def _die(self, why: str) -> None:
        if self._dead is None:
            self._dead = why

    @property
    def dead(self) -> bool:
        return self._dead is not None

    def close(self) -> None:
        self._die("the container has been stopped")
        for request_id in list(self._slots):
            self.forget(request_id)
        self.sock.close()


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    return fds
