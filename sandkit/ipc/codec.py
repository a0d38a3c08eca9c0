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
    wire: dict[str, Any] = {"t": message.TYPE, **_wire_map(message)}
    if message.TYPE == "setup":
        wire["v"] = PROTOCOL_VERSION
    packet = msgpack.packb(wire, use_bin_type=True)
    if len(packet) > MAX_PACKET:
        raise ProtocolError(
            f"a {message.TYPE!r} message is {len(packet)} bytes, over the protocol's limit of "
            f"{MAX_PACKET}: pass less data inline (large argv/env, files or too many mounts)"
        )
    return packet


def _wire_map(record: Any) -> dict[str, Any]:
    """An attrs record as a msgpack map: its fields but those that are None (absent)."""
    return {
        field.name: _wire_value(value)
        for field in attrs.fields(type(record))
        if (value := getattr(record, field.name)) is not None
    }


def _wire_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_wire_value(v) for v in value]
    if attrs.has(type(value)):
        return _wire_map(value)
    return value


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
    message = _record(kind, cls, wire)
    if message.id < 0:
        raise ProtocolError(f"{kind}: a negative id ({message.id}) is not a request id")
    return message


def _record(kind: str, cls: type, wire: dict[str, Any]) -> Any:
    """``cls`` (a message, or a record in one) from its map, every field checked."""
    kwargs = {}
    for field in _wire_fields(cls):
        if field.name not in wire:
            if field.required:
                raise ProtocolError(f"{kind}: missing key {field.name!r}")
            continue
        kwargs[field.name] = field.checked(kind, wire[field.name])
    return cls(**kwargs)


@attrs.frozen
class _WireField:
    """What one message field accepts on the wire, worked out once per class from its type hint:
    the exact Python types msgpack gives for it (bool is not an int here: a 'code' of True is a
    protocol error), whether a list (made a tuple) or a map may stand for it, and the attrs
    class a map (``record``) or each element of the list (``element``) is made into."""

    name: str
    required: bool
    exact: frozenset[type]
    sequence: bool
    mapping: bool
    record: type | None = None
    element: type | None = None

    def checked(self, kind: str, value: Any) -> Any:
        kind_of = type(value)
        if kind_of in self.exact:
            return value
        if kind_of is list and self.sequence:
            return tuple(self._nested(kind, self.element, v) for v in value)
        if kind_of is dict and self.mapping:
            return self._nested(kind, self.record, value)
        raise ProtocolError(
            f"{kind}: key {self.name!r} has a value of the wrong type: {value!r:.80}"
        )

    def _nested(self, kind: str, cls: type | None, value: Any) -> Any:
        if cls is None:
            return value
        if type(value) is not dict:
            raise ProtocolError(
                f"{kind}: key {self.name!r} holds a {type(value).__name__}, not a map"
            )
        return _record(f"{kind}.{self.name}", cls, value)


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
    tuples = [o for o in options if typing.get_origin(o) is tuple]
    records = [o for o in options if attrs.has(o)]
    elements = [e for t in tuples for e in typing.get_args(t) if attrs.has(e)]
    mapping = bool(records) or any(o is dict or typing.get_origin(o) is dict for o in options)
    return _WireField(
        name,
        required,
        exact,
        sequence=bool(tuples),
        mapping=mapping,
        record=records[0] if records else None,
        element=elements[0] if elements else None,
    )
