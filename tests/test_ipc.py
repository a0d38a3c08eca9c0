"""The sans-IO protocol: strict decoding, fd bookkeeping, no crash on any input."""

import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandkit.errors import ProtocolError
from sandkit.ipc import (
    MAX_PACKET,
    Connection,
    Error,
    Exec,
    Exit,
    File,
    Interface,
    Netif,
    Opened,
    Output,
    Setup,
    Started,
    decode,
    encode,
)


def test_exec_round_trip_keeps_every_field():
    request = Exec(
        id=7,
        argv=("sh", "-c", b"echo \xff"),
        env=("A=1",),
        cwd="/tmp",
        user="app:app",
        caps=5,
        seccomp=b"\x00" * 8,
        cgroups=2,
    )
    decoded = decode(encode(request), direction="request")
    assert decoded == request


def test_exec_stdio_kinds_take_their_fds():
    assert Exec(id=1, argv=("sh",), env=()).fd_count() == 3
    assert Exec(id=1, argv=("sh",), env=(), stdio="pty").fd_count() == 0
    assert Exec(id=1, argv=("sh",), env=(), stdio="capture", cgroups=2).fd_count() == 2


def test_a_captured_exec_round_trips_with_its_input_and_limit():
    request = Exec(id=3, argv=("cat",), env=(), stdio="capture", input=b"\x00data", limit=100)
    assert decode(encode(request), direction="request") == request


def test_an_unknown_stdio_kind_is_refused():
    packet = msgpack.packb({"t": "exec", "id": 1, "argv": ["sh"], "env": [], "stdio": "socket"})
    with pytest.raises(ProtocolError, match="bad stdio"):
        decode(packet, direction="request")


def test_exit_and_output_events_carry_captured_bytes():
    exited = Exit(id=4, code=0, stdout=b"out", stderr=b"err", truncated=True)
    output = Output(id=4, fd=2, data=b"\xff" * 100)
    assert decode(encode(exited)) == exited
    assert decode(encode(output)) == output


def test_setup_carries_the_protocol_version():
    wire = msgpack.unpackb(encode(Setup(scratch="/s", rootfs={"kind": "tmpfs"}, hostname="h")))
    assert wire["v"] == 1 and wire["t"] == "setup" and wire["id"] == 0


def test_setup_carries_an_interface_and_files_as_the_protocol_spells_them():
    setup = Setup(
        scratch="/s",
        rootfs={"kind": "tmpfs"},
        hostname="h",
        loopback=True,
        net=Interface(iface="eth0", address="10.88.0.5", prefix=16, gateway="10.88.0.1", mtu=65520),
        files=(File(path="/etc/hosts", data=b"\xff\n", mode=0o600), File("/etc/resolv.conf", b"")),
    )
    wire = msgpack.unpackb(encode(setup))
    assert wire["net"] == {
        "iface": "eth0",
        "address": "10.88.0.5",
        "prefix": 16,
        "gateway": "10.88.0.1",
        "mtu": 65520,
    }
    assert wire["files"] == [
        {"path": "/etc/hosts", "data": b"\xff\n", "mode": 0o600},
        {"path": "/etc/resolv.conf", "data": b"", "mode": 0o644},
    ]
    assert decode(encode(setup), direction="request") == setup


def test_netif_carries_the_same_map_and_leaves_absent_keys_out():
    request = Netif(id=5, net=Interface(iface="eth1", address="10.89.0.2", prefix=24))
    wire = msgpack.unpackb(encode(request))
    assert wire == {
        "t": "netif",
        "id": 5,
        "net": {"iface": "eth1", "address": "10.89.0.2", "prefix": 24},
    }
    assert decode(encode(request), direction="request") == request


@pytest.mark.parametrize(
    "fields, complaint",
    [
        ({"net": {"iface": "eth0", "address": "10.0.0.2"}}, "missing key 'prefix'"),
        ({"net": {"iface": 0, "address": "10.0.0.2", "prefix": 8}}, "'iface' has a value"),
        ({"net": ["eth0"]}, "'net' has a value of the wrong type"),
        ({"files": [{"path": "/x", "data": "text"}]}, "'data' has a value"),
        ({"files": ["/etc/hosts"]}, "'files' holds a str, not a map"),
    ],
)
def test_a_malformed_interface_or_file_is_a_protocol_error(fields, complaint):
    wire = {"t": "setup", "id": 0, "scratch": "/s", "rootfs": {}, "hostname": "h", **fields}
    with pytest.raises(ProtocolError, match=complaint):
        decode(msgpack.packb(wire), direction="request")


@pytest.mark.parametrize(
    "packet, complaint",
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "must hold a map"),
        (msgpack.packb({"t": "nonsense", "id": 1}), "unknown message type"),
        (msgpack.packb({"t": "exit", "code": 1}), "missing key 'id'"),
        (msgpack.packb({"t": "exit", "id": 1, "code": True}), "wrong type"),
        (msgpack.packb({"t": "exit", "id": "1"}), "wrong type"),
        (msgpack.packb({"t": "error", "id": 1, "msg": b"bytes"}), "wrong type"),
        (b"\x00" * (MAX_PACKET + 1), "over the limit"),
    ],
)
def test_malformed_replies_are_protocol_errors(packet, complaint):
    with pytest.raises(ProtocolError, match=complaint):
        decode(packet)


def test_unknown_keys_are_ignored_for_forward_compatibility():
    assert decode(msgpack.packb({"t": "exit", "id": 3, "code": 0, "future": [1]})) == Exit(
        id=3, code=0
    )


def test_an_oversized_request_is_refused_before_sending():
    with pytest.raises(ProtocolError, match="over the protocol's limit"):
        encode(Exec(id=1, argv=("x" * MAX_PACKET,), env=()))


def _open_fds(n):
    fds = []
    for _ in range(n):
        r, w = os.pipe()
        os.close(w)
        fds.append(r)
    return fds


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_extra_fds_on_a_reply_are_closed_not_leaked():
    connection = Connection()
    fds = _open_fds(3)
    reply, kept = connection.receive(encode(Opened(id=4)), fds)
    assert reply == Opened(id=4) and kept == fds[:1]
    assert _is_open(fds[0]) and not _is_open(fds[1]) and not _is_open(fds[2])
    os.close(fds[0])


def test_fds_of_a_rejected_packet_are_closed():
    fds = _open_fds(2)
    with pytest.raises(ProtocolError):
        Connection().receive(b"\xc1", fds)
    assert not any(_is_open(fd) for fd in fds)


def test_a_pty_exec_expects_its_master_with_started():
    connection = Connection()
    connection.packet_for(Exec(id=5, argv=("sh",), env=(), stdio="pty"))
    fds = _open_fds(1)
    _reply, kept = connection.receive(encode(Started(id=5, pid=2)), fds)
    assert kept == fds
    os.close(fds[0])
    with pytest.raises(ProtocolError, match="without its fd"):
        connection.packet_for(Exec(id=6, argv=("sh",), env=(), stdio="pty"))
        connection.receive(encode(Started(id=6, pid=3)), [])


def test_a_request_with_the_wrong_number_of_fds_is_refused():
    with pytest.raises(ProtocolError, match="takes 3 fds"):
        Connection().packet_for(Exec(id=1, argv=("true",), env=()), [])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_decoding_arbitrary_bytes_never_crashes(data):
    try:
        decode(data)
    except ProtocolError:
        pass


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.slow  # 500 examples: seconds
@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["exit", "started", "error", "opened", "ready", "pong", "ok"]),
    st.dictionaries(
        st.sampled_from(["id", "code", "signal", "core", "pid", "errno", "msg", "kind", "v"]),
        _values,
    ),
)
def test_decoding_arbitrary_maps_gives_a_reply_or_a_protocol_error(kind, fields):
    try:
        reply = decode(msgpack.packb({"t": kind, **fields}))
    except ProtocolError:
        return
    assert isinstance(reply.id, int)
    if isinstance(reply, Error):
        assert isinstance(reply.msg, str)
