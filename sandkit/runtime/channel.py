"""The host's end of a container's control socket: packets with fds, under anyio (trio or asyncio).

Replies are matched to requests without a background task: whoever waits for a reply takes the
read lock and reads packets until its own has arrived, filing the others for their owners. So a
container needs no nursery of its own, and `start()`/`stop()` work outside `async with`.

The sync API may also read from its own thread, blocking (`reply_blocking`), which saves it two
thread hand-offs per exec. Only one reader at a time: a thread reader starts only while no task
on the loop is reading or waiting to, and a task that wants to read while a thread does waits for
it to finish (its reply may well be filed by then).
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import anyio
import attrs

from ..errors import ContainerDiedError, ProtocolError
from ..ipc import MAX_FDS, MAX_PACKET, Connection, Error, Reply, Request

_FD_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
# How long a thread other than the loop's and the sync caller's reads the socket at a time
# (`reply_from_thread`) before it lets others have a turn and looks whether to give up.
_THREAD_TURN = 0.05


@attrs.define(eq=False)
class _Slot:
    """Replies (and fds) filed for one request id until its owner collects them."""

    replies: list[tuple[Reply, list[int]]] = attrs.field(factory=list)


@attrs.define(eq=False)
class ControlChannel:
    """The host's end of one container's control socket: sends requests with their fds and routes
    each reply to whoever waits for its request id."""

    sock: socket.socket
    protocol: Connection = attrs.field(factory=Connection)
    _slots: dict[int, _Slot] = attrs.field(factory=dict, init=False)
    _read_lock: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)
    _dead: str | None = attrs.field(default=None, init=False)
    # Who reads: tasks on the loop (counted) or one thread of the sync API. Held for a few
    # instructions only, never across I/O.
    _readers_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _loop_readers: int = attrs.field(default=0, init=False)
    _thread_reading: bool = attrs.field(default=False, init=False)
    # Called (on whichever thread read the packet) when a reply for the request id is filed:
    # how a thread that does not read the socket itself learns of its replies (service.py).
    _watchers: dict[int, Callable[[], None]] = attrs.field(factory=dict, init=False)

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
            self._send_packet(packet, ancillary)
        except (BrokenPipeError, ConnectionResetError):
            self._die("the container's init has exited")
            raise ContainerDiedError(self._dead) from None

    def _send_packet(
        self, packet: bytes, ancillary: list[tuple[int, int, array.array[int]]]
    ) -> None:
        # When the socket is full this waits for room rather than making the socket blocking:
        # a thread reader relies on a receive never blocking.
        poller: select.poll | None = None
        while True:
            try:
                self.sock.sendmsg([packet], ancillary)
                return
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(self.sock, select.POLLOUT)
                poller.poll()

    # -- receiving ------------------------------------------------------------------------

    async def reply(self, request_id: int) -> tuple[Reply, list[int]]:
        """The next reply (or event) for ``request_id``, with the fds it carries."""
        slot = self._slots.setdefault(request_id, _Slot())
        pause = 0.0001
        while not slot.replies:
            if self._dead is not None:
                raise ContainerDiedError(self._dead)
            with self._readers_lock:
                thread_reading = self._thread_reading
                self._loop_readers += not thread_reading
            if thread_reading:
                # Rare (a sync call on another thread holds the socket): look again shortly.
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.005)
                continue
            try:
                async with self._read_lock:
                    if slot.replies:
                        break
                    while not self._receive_one():
                        try:
                            await anyio.wait_readable(self.sock)
                        except anyio.ClosedResourceError:  # closed by another task: see close()
                            raise ContainerDiedError(
                                self._dead or "the channel was closed"
                            ) from None
            finally:
                with self._readers_lock:
                    self._loop_readers -= 1
        return slot.replies.pop(0)

    @contextlib.contextmanager
    def thread_reader(self) -> Iterator[bool]:
        """For the sync API: yields True if this thread may use `reply_blocking` until the block
        ends (no task on the loop reads meanwhile), False if the loop is reading already."""
        with self._readers_lock:
            mine = not self._thread_reading and not self._loop_readers
            self._thread_reading |= mine
        try:
            yield mine
        finally:
            if mine:
                with self._readers_lock:
                    self._thread_reading = False

    def reply_blocking(
        self, request_id: int, deadline: float | None = None
    ) -> tuple[Reply, list[int]] | None:
        """`reply`, blocking this thread (inside `thread_reader` only). None at ``deadline``
        (a `time.monotonic()` value)."""
        slot = self._slots.setdefault(request_id, _Slot())
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while not slot.replies:
            if self._dead is not None:
                raise ContainerDiedError(self._dead)
            if self._receive_one():
                continue
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0:
                return None
            poller.poll(None if wait is None else wait * 1000 + 1)
        return slot.replies.pop(0)

    def request_from_thread(
        self, request: Request, timeout: float
    ) -> tuple[Reply, list[int]] | None:
        """Send a request with one reply and wait for it on a thread that is neither the loop's
        nor the sync API caller's (a published port's): it reads the socket itself when nobody
        else does, else waits for the reader to file its reply. None after ``timeout``."""
        self.send(request)
        try:
            return self.reply_from_thread(request.id, time.monotonic() + timeout)
        finally:
            self.forget(request.id)

    def reply_from_thread(
        self,
        request_id: int,
        deadline: float | None,
        give_up: threading.Event | None = None,
    ) -> tuple[Reply, list[int]] | None:
        """The next reply for ``request_id``, waited for on such a thread: None at ``deadline``
        (a `time.monotonic()` value; None: none), or soon after ``give_up`` is set. It reads
        the socket in short turns, so that a task on the loop never waits long for it."""
        while give_up is None or not give_up.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            turn = now + _THREAD_TURN if deadline is None else min(deadline, now + _THREAD_TURN)
            with self.thread_reader() as mine:
                got = self.reply_blocking(request_id, turn) if mine else None
            if got is None:
                got = self._take_filed(request_id)
            if got is not None:
                return got
            if not mine:
                time.sleep(0.0005)  # a loop task reads: it files our reply, or is done soon
        return None

    def watch(self, request_id: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a reply for ``request_id`` is filed, until `forget`. It
        runs on the thread that read the packet: it must be quick and never block."""
        self._watchers[request_id] = callback

    def reply_nowait(self, request_id: int) -> tuple[Reply, list[int]] | None:
        """The next reply for ``request_id`` if it has come: filed already, or among the packets
        waiting on the socket, which this reads (filing the others) when nobody else reads. None
        otherwise; never blocks. For a thread that is neither the loop's nor a sync caller's."""
        got = self._take_filed(request_id)
        if got is None:
            with self.thread_reader() as mine:
                if mine:
                    got = self.reply_blocking(request_id, deadline=0.0)
        return got

    def _take_filed(self, request_id: int) -> tuple[Reply, list[int]] | None:
        if self._dead is not None:
            raise ContainerDiedError(self._dead)
        slot = self._slots.get(request_id)
        return slot.replies.pop(0) if slot and slot.replies else None

    def forget(self, request_id: int) -> None:
        """Drop a request's slot and close fds nobody will collect."""
        self._watchers.pop(request_id, None)
        slot = self._slots.pop(request_id, None)
        if slot:
            for _, fds in slot.replies:
                for fd in fds:
                    os.close(fd)

    def _receive_one(self) -> bool:
        """Read one packet if there is one and file its reply; False if none is waiting."""
        try:
            data, ancdata, flags, _ = self.sock.recvmsg(
                MAX_PACKET + 1, _FD_SPACE, socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return False
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
            return True
        slot.replies.append((reply, kept))
        watcher = self._watchers.get(reply.id)
        if watcher is not None:
            watcher()
        return True

    def _die(self, why: str) -> None:
        if self._dead is None:
            self._dead = why

    @property
    def dead(self) -> bool:
        """True once the init's end is gone (closed, died, or the channel was closed here)."""
        return self._dead is not None

    def close(self) -> None:
        """Close the socket: the init sees EOF and ends the container. Every reply still waited for
        fails with `ContainerDiedError`, and the fds filed for them are closed."""
        self._die("the container has been stopped")
        for request_id in list(self._slots):
            self.forget(request_id)
        # A thread blocked in poll on this socket keeps it open; shutting it down still tells
        # the init (EOF) and wakes that thread.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        # A task on the loop waiting for it to be readable would never wake once it is closed
        # (the fd leaves the loop's epoll set): it is told, and fails with ContainerDiedError.
        with contextlib.suppress(RuntimeError):  # not on an event loop's thread: no such task
            anyio.notify_closing(self.sock)
        self.sock.close()


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % array.array("i").itemsize
            fds.extend(array.array("i", payload[:usable]))
    return fds
