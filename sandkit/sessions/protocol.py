"""The session channel as a sans-IO protocol (bytes in, events out, as h11 does): no fds, no
threads, no event loop, so the sync and the async driver share every rule.

Frames are a 4-byte big-endian length and one msgpack array (see agent.py for the messages). A
frame over ``max_frame`` is refused from its header alone, so a hostile interpreter cannot make
the host buffer more than that. Anything malformed raises `ChannelGarbage`; the session then ends
that interpreter.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .wire import ChannelGarbage, decode, encode

MAX_FRAME = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_STREAMS = ("stdout", "stderr")


@attrs.frozen
class Ready:
    """The agent is up: its Python version and pid (inside the container)."""

    version: str
    pid: int


@attrs.frozen
class Output:
    """A chunk of the running code's stdout or stderr."""

    stream: str
    data: bytes


@attrs.frozen
class Done:
    """A snippet ended (see `CodeResult` for the fields)."""

    value: str | None
    rich: dict[str, str | bytes]
    figures: list[bytes]
    error: tuple[str, str, str] | None
    truncated: bool


@attrs.frozen
class Item:
    """One item of a call_iter generator (msgpack data, decoded by the caller)."""

    value: Any


@attrs.frozen
class Returned:
    """A call returned (``value``; None at the end of a call_iter)."""

    value: Any


@attrs.frozen
class Raised:
    """A call raised: the remote exception's type name, message and traceback text."""

    type_name: str
    message: str
    traceback: str


Event = Ready | Output | Done | Item | Returned | Raised


class AgentProtocol:
    """Reads the agent's frames into events; writes requests as frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the agent's stdout."""
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next complete event, or None until more data arrives."""
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self.max_frame:
            raise ChannelGarbage(
                f"the agent sent a frame of {length} bytes, over the limit of {self.max_frame}"
            )
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return _event(decode(body))

    # -- requests ---------------------------------------------------------------------------------

    @staticmethod
    def bootstrap(source: bytes) -> bytes:
        """What the bootstrap reads from stdin: the agent's length as a line, then its source."""
        return b"%d\n" % len(source) + source

    @staticmethod
    def run(code: str, env: Mapping[str, str] | None, max_output: int) -> bytes:
        """A run_code request."""
        return _frame(["run", code, dict(env) if env else None, max_output])

    @staticmethod
    def call(
        target: str, args: Sequence[Any], kwargs: Mapping[str, Any], credit: int | None
    ) -> bytes:
        """A call request (``credit``: items the agent may send ahead; None for a plain call)."""
        return _frame(["call", target, list(args), dict(kwargs), credit])

    @staticmethod
    def more(count: int) -> bytes:
        """call_iter: the caller took items; the agent may send ``count`` more."""
        return _frame(["more", count])

    @staticmethod
    def stop() -> bytes:
        """call_iter: the caller let go; close the generator."""
        return _frame(["stop"])


def _frame(message: list[Any]) -> bytes:
    body = encode(message)
    if len(body) > MAX_FRAME:  # the agent would refuse it (and end)
        raise ValueError(
            f"the request is {len(body)} bytes of msgpack, over the limit of {MAX_FRAME}: "
            "pass large data through a file (write_file, copy_in) instead"
        )
    return _LENGTH.pack(len(body)) + body


def _event(message: Any) -> Event:
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ChannelGarbage("the agent sent a message that is not a [kind, ...] array")
    kind, fields = message[0], message[1:]
    parse = _PARSERS.get(kind)
    if parse is None:
        raise ChannelGarbage(f"the agent sent an unknown message {kind[:40]!r}")
    try:
        return parse(*fields)
    except (TypeError, ValueError) as exc:
        raise ChannelGarbage(f"the agent sent a malformed {kind!r} message ({exc})") from None


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


def _ready(version: Any, pid: Any) -> Ready:
    _need(isinstance(version, str) and isinstance(pid, int), "version and pid")
    return Ready(version, pid)


def _output(stream: Any, data: Any) -> Output:
    _need(stream in _STREAMS and isinstance(data, bytes), "stream and bytes")
    return Output(stream, data)


def _done(reply: Any) -> Done:
    _need(isinstance(reply, dict), "a map")
    value, rich = reply.get("value"), reply.get("rich", {})
    figures, error = reply.get("figures", []), reply.get("error")
    _need(value is None or isinstance(value, str), "value")
    _need(
        isinstance(rich, dict)
        and all(isinstance(k, str) and isinstance(v, (str, bytes)) for k, v in rich.items()),
        "rich",
    )
    _need(isinstance(figures, list) and all(isinstance(f, bytes) for f in figures), "figures")
    return Done(value, rich, figures, _error(error), reply.get("truncated") is True)


def _error(error: Any) -> tuple[str, str, str] | None:
    if error is None:
        return None
    _need(isinstance(error, dict), "error")
    fields = (error.get("name"), error.get("value"), error.get("traceback"))
    _need(all(isinstance(f, str) for f in fields), "error fields")
    return fields  # checked just above


def _packed(data: Any) -> Any:
    _need(isinstance(data, bytes), "packed data")
    return decode(data)


def _raised(type_name: Any, message: Any, traceback: Any) -> Raised:
    _need(all(isinstance(f, str) for f in (type_name, message, traceback)), "three strings")
    return Raised(type_name, message, traceback)


_PARSERS: dict[str, Any] = {
    "ready": _ready,
    "out": _output,
    "done": _done,
    "item": lambda data: Item(_packed(data)),
    "return": lambda data: Returned(_packed(data)),
    "raise": _raised,
}
