"""Request ids and the file descriptors that belong to each packet, without doing any I/O."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import attrs

from ..errors import ProtocolError
from .codec import MAX_FDS, decode, encode
from .messages import Error, Exec, Reply, Request, Started


@attrs.define
class Connection:
    """The host's side of one control channel.

    ``next_id()`` numbers requests; ``packet_for()`` turns a request and its fds into what to send;
    ``receive()`` turns a received packet and the fds that came with it into a reply, keeping only
    the fds the reply may carry and closing the rest, so a confused or hostile init cannot make the
    host leak descriptors.
    """

    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _pty_execs: set[int] = attrs.field(factory=set, init=False)

    def next_id(self) -> int:
        """A request id not used before on this channel (1, 2, ...; 0 is the setup's)."""
        return next(self._ids)

    def packet_for(self, request: Request, fds: Sequence[int] = ()) -> bytes:
        """The encoded packet for ``request``, to send with ``fds``. Raises `ProtocolError` when the
        number of fds is not what the request takes."""
        if len(fds) != request.fd_count() or len(fds) > MAX_FDS:
            raise ProtocolError(
                f"{request.TYPE!r} takes {request.fd_count()} fds, {len(fds)} were given"
            )
        if isinstance(request, Exec) and request.pty:
            self._pty_execs.add(request.id)
        return encode(request)

    def receive(self, packet: bytes, fds: Sequence[int] = ()) -> tuple[Reply, list[int]]:
        """Decode a reply; returns it with the fds it carries (the caller owns those)."""
        try:
            reply = decode(packet, direction="reply")
        except ProtocolError:
            _close_all(fds)
            raise
        assert isinstance(reply, Reply)
        expected = reply.FDS
        if isinstance(reply, Started | Error) and reply.id in self._pty_execs:
            self._pty_execs.discard(reply.id)
            expected = 1 if isinstance(reply, Started) else 0
        kept, extra = list(fds[:expected]), fds[expected:]
        _close_all(extra)
        if len(kept) < expected:
            _close_all(kept)
            raise ProtocolError(f"{reply.TYPE!r} for request {reply.id} came without its fd")
        return reply, kept


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
