"""Messages to single packets and back. Strict: anything off-spec raises `ProtocolError`."""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs
import msgpack

from ..errors import ProtocolError
from .messages import REPLY_TYPES, REQUEST_TYPES, Exec, Reply, Request

PROTOCOL_VERSION = 1
MAX_PACKET = 65536
MAX_FDS = 16

# Limits handed to msgpack so that a hostile packet cannot make the host allocate much.
_UNPACK_LIMITS = {
    "max_str_len": MAX_PACKET,
    "max_bin_len": MAX_PACKET,
    "max_array_len": 4096,
    "max_map_len": 4096,
    "max_ext_len": 0,
}


def encode(message: Request | Reply) -> bytes:
    """One message as one packet."""
    wire: dict[str, Any] = {"t": message.TYPE}
    for field in attrs.fields(type(message)):
        value = getattr(message, field.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        wire[field.name] = value
    if message.TYPE == "setup":
        wire["v"] = PROTOCOL_VERSION
    packet = msgpack.packb(wire, use_bin_type=True)
    if len(packet) > MAX_PACKET:
        raise ProtocolError(
            f"a {message.TYPE!r} message is {len(packet)} bytes, over the protocol's limit of "
            f"{MAX_PACKET}: pass less data inline (large argv/env or too many mounts)"
        )
    return packet


def decode(packet: bytes, *, direction: str = "reply") -> Request | Reply:
    """Parse one packet. ``direction`` is "reply" (what the host receives) or "request"."""
    if len(packet) > MAX_PACKET:
        raise ProtocolError(f"packet of {len(packet)} bytes is over the limit of {MAX_PACKET}")
    try:
        wire = msgpack.unpackb(packet, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many unrelated types for bad input
        raise ProtocolError(f"undecodable packet ({type(exc).__name__}: {exc})") from None
    if not isinstance(wire, dict):
        raise ProtocolError(f"a packet must hold a map, not {type(wire).__name__}")
    kind = wire.get("t")
    table: dict[str, Any] = REPLY_TYPES if direction == "reply" else REQUEST_TYPES
    if not isinstance(kind, str) or (cls := table.get(kind)) is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    if cls is Exec and wire.get("stdio", "fds") not in Exec.STDIO:
        raise ProtocolError(f"exec: bad stdio {wire['stdio']!r}")
    kwargs = {}
    for field in _wire_fields(cls):
        if field.name not in wire:
            if field.required:
                raise ProtocolError(f"{kind}: missing key {field.name!r}")
            continue
        kwargs[field.name] = field.checked(kind, wire[field.name])
    if kwargs.get("id", 0) < 0:
        raise ProtocolError(f"{kind}: a negative id ({kwargs['id']}) is not a request id")
    return cls(**kwargs)


@attrs.frozen
class _WireField:
    """What one message field accepts on the wire, worked out once per class from its type hint:
    the exact Python types msgpack gives for it (bool is not an int here: a 'code' of True is a
    protocol error), and whether a list (made a tuple) or a map may stand for it."""

    name: str
    required: bool
    exact: frozenset[type]
    sequence: bool
    mapping: bool

    def checked(self, kind: str, value: Any) -> Any:
        kind_of = type(value)
        if kind_of in self.exact:
            return value
        if kind_of is list and self.sequence:
            return tuple(value)
        if kind_of is dict and self.mapping:
            return value
        raise ProtocolError(
            f"{kind}: key {self.name!r} has a value of the wrong type: {value!r:.80}"
        )


_FIELDS: dict[type, tuple[_WireField, ...]] = {}


def _wire_fields(cls: type) -> tuple[_WireField, ...]:
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple(
            _wire_field(f.name, f.default is attrs.NOTHING, hints[f.name])
            for f in attrs.fields(cls)
        )
    return _FIELDS[cls]


def _wire_field(name: str, required: bool, hint: Any) -> _WireField:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    exact = frozenset(o for o in options if o in (str, bytes, bool, int, type(None)))
    sequence = any(typing.get_origin(o) is tuple for o in options)
    mapping = any(o is dict or typing.get_origin(o) is dict for o in options)
    return _WireField(name, required, exact, sequence, mapping)
