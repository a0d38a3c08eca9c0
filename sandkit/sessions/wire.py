"""What crosses the session channel: msgpack of plain data only, checked both ways.

Going in, `to_wire` turns the caller's arguments into plain data (attrs and dataclass instances
become dicts, tuples lists) and refuses anything else with a `TypeError` naming the value's type
and where it sits, before anything is sent. Coming out, `decode` reads what the agent sent with
the msgpack library under tight limits: no ext types (so no timestamps, and nothing is ever
unpickled), a bounded size and depth; anything else is `ChannelGarbage`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import attrs
import msgpack

_MAX_DEPTH = 100
_INT_RANGE = range(-(2**63), 2**64)
_KEY_TYPES = (str, int, bytes, float, bool, type(None))


class ChannelGarbage(Exception):
    """The agent's channel carried something that is not a well-formed message."""


def to_wire(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as plain data msgpack carries; `TypeError` naming ``where`` otherwise."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise TypeError(f"{where}: the int {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, (list, tuple)):
        return [to_wire(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {
            _key(key, where): to_wire(item, f"{where}[{key!r}]", depth + 1)
            for key, item in value.items()
        }
    fields = _record_fields(value)
    if fields is None:
        raise TypeError(
            f"{where}: cannot send a {_type_name(value)} (calls carry None, bool, int, float, "
            "str, bytes, lists, tuples, dicts, and attrs or dataclass instances)"
        )
    return to_wire(fields, where, depth)


def _key(key: Any, where: str) -> Any:
    if not isinstance(key, _KEY_TYPES):
        raise TypeError(f"{where}: cannot send a dict key of type {_type_name(key)}")
    return key


def _record_fields(value: Any) -> dict[str, Any] | None:
    if isinstance(value, type):
        return None
    if attrs.has(type(value)):
        return {field.name: getattr(value, field.name) for field in attrs.fields(type(value))}
    if dataclasses.is_dataclass(value):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


# Python str may hold lone surrogates (os.fsdecode of a name that is not UTF-8 gives them): both
# ends carry them as surrogatepass does, so that such a str round-trips instead of being taken
# for garbage; bytes that are not UTF-8 at all are still refused.
_STR_ERRORS = "surrogatepass"


def encode(message: list[Any]) -> bytes:
    """One message (already plain data) as msgpack."""
    return msgpack.packb(message, use_bin_type=True, unicode_errors=_STR_ERRORS)


def decode(body: bytes) -> Any:
    """A message from the agent; `ChannelGarbage` for anything but plain msgpack data.

    msgpack itself refuses ext types (timestamps are one) with ``max_ext_len=0`` and nesting
    past its stack (about 1000 levels), so the result needs no walk in Python: a hostile agent's
    frame of millions of tiny items then costs the unpacker's C loop, not seconds of this
    process's (and its event loop's) time.
    """
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            unicode_errors=_STR_ERRORS,
            strict_map_key=False,
            max_ext_len=0,
            timestamp=0,
        )
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for bad input
        raise ChannelGarbage(f"the agent sent malformed msgpack ({exc})") from None
