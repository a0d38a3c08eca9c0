"""The host's end of the control socket against a scripted peer: a full socket, and the two kinds
of reader (tasks on the loop, one blocking thread) sharing it."""

from __future__ import annotations

import linecache
import select
import socket
import sys
import threading
import time

import msgpack
import pytest
import trio
from polling import wait_until

from sandkit.errors import ContainerDiedError
from sandkit.ipc import Ping, Pong, encode
from sandkit.runtime.channel import ControlChannel


@pytest.fixture
def pair():
    host, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel = ControlChannel(host)
    yield channel, peer
    channel.close()
    peer.close()


DEADLINE = 10.0


def _answer_pings(peer: socket.socket, count: int, go: threading.Event) -> threading.Thread:
    """Once ``go`` is set, reads ``count`` pings, then answers them all (answering while the host
    is still sending could fill the other direction too)."""

    def run() -> None:
        go.wait(DEADLINE)
        peer.settimeout(DEADLINE)  # a lost ping ends this thread instead of hanging the test
        ids = [msgpack.unpackb(peer.recv(65536))["id"] for _ in range(count)]
        for request_id in ids:
            peer.send(encode(Pong(id=request_id)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _writable(sock: socket.socket) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


def test_a_send_to_a_full_socket_waits_for_room(pair):
    channel, peer = pair
    count = 400
    channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    failures: list[BaseException] = []

    def send_all() -> None:
        try:
            for _ in range(count):
                channel.send(Ping(id=channel.protocol.next_id()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    go = threading.Event()
    reader = _answer_pings(peer, count, go)
    sender = threading.Thread(target=send_all)
    sender.start()
    # The peer reads nothing until the socket is full while the sender still has pings to send:
    # from then on the sender can only be waiting for room.
    deadline = time.monotonic() + DEADLINE
    while sender.is_alive() and _writable(channel.sock) and time.monotonic() < deadline:
        time.sleep(0.001)
    full_while_sending = sender.is_alive() and not _writable(channel.sock)
    go.set()
    sender.join(DEADLINE)
    assert full_while_sending, "the socket never filled up while the pings were being sent"
    assert not sender.is_alive() and not failures, failures
    with channel.thread_reader() as mine:  # read while the peer answers: both ways are small
        assert mine
        replies = [
            channel.reply_blocking(i, deadline=time.monotonic() + DEADLINE)
            for i in range(1, count + 1)
        ]
    reader.join(DEADLINE)
    assert replies == [(Pong(id=i), []) for i in range(1, count + 1)]  # every ping arrived


def test_a_thread_reader_times_out_and_files_others_replies(pair):
    channel, peer = pair
    first, second = Ping(id=channel.protocol.next_id()), Ping(id=channel.protocol.next_id())
    channel.send(first)
    channel.send(second)
    with channel.thread_reader() as mine:
        assert mine
        assert channel.reply_blocking(first.id, deadline=time.monotonic() + 0.05) is None
        peer.send(encode(Pong(id=second.id)))
        peer.send(encode(Pong(id=first.id)))
        assert channel.reply_blocking(first.id)[0] == Pong(id=first.id)
    # the reply read on the way stays filed for its owner, here a task on the loop
    assert trio.run(channel.reply, second.id)[0] == Pong(id=second.id)


def test_the_loop_waits_while_a_thread_reads(pair):
    channel, peer = pair
    request = Ping(id=channel.protocol.next_id())
    channel.send(request)

    async def main() -> None:
        with channel.thread_reader() as mine:
            assert mine
            with channel.thread_reader() as second:
                assert not second  # one thread reader at a time
            async with trio.open_nursery() as nursery:
                got: list[object] = []

                async def wait() -> None:
                    got.append((await channel.reply(request.id))[0])

                nursery.start_soon(wait)
                await trio.sleep(0.05)
                peer.send(encode(Pong(id=request.id)))
                await trio.sleep(0.05)
                assert got == []  # the loop does not read while the thread may
                channel.reply_blocking(Ping(id=999).id, deadline=time.monotonic() + 0.05)
        # the thread filed it; the waiting task finds it without reading
        assert got == [Pong(id=request.id)]

    trio.run(main)


def _blocked_in_poll(thread: threading.Thread) -> bool:
    """Whether `thread` is inside `reply_blocking`'s poll (a C call: its own frame is on top)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return (
        frame is not None
        and frame.f_code.co_name == "reply_blocking"
        and ".poll(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    )


def test_closing_wakes_a_blocked_thread_reader(pair):
    channel, _peer = pair
    request = Ping(id=channel.protocol.next_id())
    channel.send(request)
    outcome: list[BaseException] = []

    def wait() -> None:
        with channel.thread_reader():
            try:
                channel.reply_blocking(request.id)
            except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
                outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: _blocked_in_poll(thread), "the thread to block waiting for its reply")
    channel.close()
    thread.join(5)
    assert not thread.is_alive() and isinstance(outcome[0], ContainerDiedError)
