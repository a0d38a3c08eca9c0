"""The session channel without a container: the host's framing and checks (protocol.py,
wire.py), and the agent's own msgpack against the msgpack library (the spec's reference)."""

from __future__ import annotations

import dataclasses
import datetime
import math
import struct
import subprocess
import sys
from pathlib import Path

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandkit.sessions import protocol
from sandkit.sessions.results import OutputCollector
from sandkit.sessions.session import call_arguments, check_target
from sandkit.sessions.wire import ChannelGarbage

# The agent is source text for the container; loaded here as a module without running main().
AGENT: dict = {"__name__": "agent_under_test"}
_SOURCE = Path(protocol.__file__).with_name("agent.py").read_text()
exec(compile(_SOURCE, "agent", "exec"), AGENT)


def frame(message: object) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def events(data: bytes) -> list[protocol.Event]:
    proto = protocol.AgentProtocol()
    proto.receive_data(data)
    found = []
    while (event := proto.next_event()) is not None:
        found.append(event)
    return found


def test_frames_split_anywhere_give_the_same_events() -> None:
    data = frame(["ready", "3.11.2", 7]) + frame(["out", "stdout", b"hi\n"])
    proto = protocol.AgentProtocol()
    got = []
    for byte in data:  # one byte at a time: every split point
        proto.receive_data(bytes([byte]))
        while (event := proto.next_event()) is not None:
            got.append(event)
    assert got == [protocol.Ready("3.11.2", 7), protocol.Output("stdout", b"hi\n")]


def test_a_frame_over_the_limit_is_refused_from_its_header() -> None:
    proto = protocol.AgentProtocol(max_frame=1024)
    proto.receive_data(struct.pack(">I", 1025))  # no body needed: nothing is buffered for it
    with pytest.raises(ChannelGarbage, match="over the limit"):
        proto.next_event()


@pytest.mark.parametrize(
    "message",
    [
        b"not an array",
        [],
        [1, 2],
        ["nonsense"],
        ["out", "stdin", b"x"],
        ["out", "stdout", "text, not bytes"],
        ["done", {"value": 1}],
        ["done", {"figures": ["not bytes"]}],
        ["done", {"error": {"name": "E"}}],
        ["raise", "E", "m"],
        ["return", b"\xc1"],  # 0xc1 is never used in msgpack
    ],
)
def test_malformed_messages_are_garbage(message: object) -> None:
    with pytest.raises(ChannelGarbage):
        events(frame(message))


def test_ext_types_and_timestamps_are_refused() -> None:
    ext = msgpack.packb(["return", msgpack.ExtType(5, b"x")], use_bin_type=True)
    stamp = msgpack.packb(["ready", datetime.datetime.now(datetime.UTC), 1], datetime=True)
    for body in (ext, stamp):
        with pytest.raises(ChannelGarbage):
            events(struct.pack(">I", len(body)) + body)


def test_a_message_nested_past_the_unpackers_stack_is_garbage() -> None:
    # ["return", [[[...]]]] 5000 levels deep: refused by msgpack, before any Python walks it.
    body = b"\x92\xa6return" + b"\x91" * 5000 + b"\xc0"
    with pytest.raises(ChannelGarbage):
        events(struct.pack(">I", len(body)) + body)


def test_bytes_that_are_not_msgpack_are_garbage() -> None:
    with pytest.raises(ChannelGarbage):
        events(struct.pack(">I", 3) + b"\xc1\xc1\xc1")


@dataclasses.dataclass
class Point:
    x: int
    y: list[int]


@attrs.define
class Box:
    point: Point
    label: str


def test_arguments_become_plain_data() -> None:
    args, kwargs = call_arguments((Box(Point(1, [2]), "b"), (1, 2.5)), {"k": {b"raw": None}})
    assert args == [{"point": {"x": 1, "y": [2]}, "label": "b"}, [1, 2.5]]
    assert kwargs == {"k": {b"raw": None}}


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        ((1, {2}), {}, r"args\[1\]: cannot send a set"),
        (({"x": [object()]},), {}, r"args\[0\]\['x'\]\[0\]: cannot send a object"),
        ((), {"n": 2**64}, r"kwargs\['n'\]: the int 18446744073709551616 does not fit"),
        ((), {"d": {(1, 2): 3}}, r"kwargs\['d'\]: cannot send a dict key of type tuple"),
        ((Point,), {}, r"args\[0\]: cannot send a type"),
    ],
)
def test_unsendable_arguments_name_their_type_and_place(args, kwargs, where) -> None:
    with pytest.raises(TypeError, match=where):
        call_arguments(args, kwargs)


@pytest.mark.parametrize("target", ["os", "os:", ":f", "a b:c", "os:path join", 3, "os:1f"])
def test_malformed_targets_are_refused(target: object) -> None:
    with pytest.raises(ValueError, match=r"package\.module:function"):
        check_target(target)


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(plain)
def test_the_agents_msgpack_matches_the_reference(value: object) -> None:
    packed = AGENT["pack"](value)
    assert msgpack.unpackb(packed, raw=False, strict_map_key=False) == value
    reference = msgpack.packb(value, use_bin_type=True)
    assert AGENT["unpack"](reference) == value


def test_the_agent_refuses_what_it_cannot_send() -> None:
    with pytest.raises(TypeError, match=r"the result\[1\]: cannot send a set"):
        AGENT["pack"]([1, {2}], "the result")
    with pytest.raises(TypeError, match="does not fit in 64 bits"):
        AGENT["pack"](-(2**63) - 1)
    assert AGENT["unpack"](AGENT["pack"](Point(1, [math.inf]))) == {"x": 1, "y": [math.inf]}


def test_the_agent_needs_nothing_newer_than_python_3_8(tmp_path: Path) -> None:
    # vermin reads the source for the minimum version of each construct and library call
    # (test_sessions.py also runs it under a real 3.8)
    agent = Path(protocol.__file__).with_name("agent.py")
    check = [str(Path(sys.executable).with_name("vermin")), "-t=3.8-", "--no-tips", "--violations"]
    found = subprocess.run([*check, str(agent)], capture_output=True, text=True)
    assert found.returncode == 0, found.stdout
    newer = tmp_path / "newer.py"  # the check itself catches what 3.8 lacks
    newer.write_text(agent.read_text() + "\n'x'.removeprefix('y')\n")
    assert subprocess.run([*check, str(newer)], capture_output=True).returncode != 0


def test_the_host_keeps_no_more_output_than_its_limit_whatever_the_agent_sends() -> None:
    kept = OutputCollector(limit=5)
    assert kept.add("stdout", "é".encode()[:1]) == ""  # half a character: held back
    assert kept.add("stdout", "é".encode()[1:] + b"abcdef") == "éabc"
    assert kept.add("stderr", b"12") == "12"
    assert kept.finish("stdout") == "éabc" and kept.truncated
