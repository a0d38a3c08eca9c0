"""Fuzzing both ends of the control protocol's decoding.

- The init's C msgpack decoder (sandkit/_init/mpack.c) under libFuzzer with ASan and UBSan, for a
  bounded time, seeded with real messages the host sends (tests/fuzz/fuzz_mpack.c).
- The host's `sandkit.ipc.decode` with hypothesis, for what tests/test_ipc.py does not cover:
  the request direction and hostile sizes and nesting (a packet the init, or something posing
  as it, could send).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandkit.errors import ProtocolError
from sandkit.ipc import Exec, Open, Ping, Setup, Signal, decode, encode

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
REPO = HERE.parent.parent
FUZZ_SECONDS = int(os.environ.get("SANDKIT_FUZZ_SECONDS", "20"))


def _seeds() -> dict[str, bytes]:
    setup = Setup(
        scratch="/var/lib/sandkit/mnt",
        rootfs={"kind": "overlay", "lower": ["/l/2", "/l/1"], "readonly": False, "userxattr": True},
        hostname="box",
        mounts=(
            {"type": "bind", "src": "/data", "dst": "/data", "ro": True},
            {"type": "tmpfs", "dst": "/scratch", "size": 1 << 20, "mode": 0o1777},
            {"type": "symlink", "dst": "/bin", "target": "usr/bin"},
        ),
        masked=("/proc/kcore", "/sys/firmware"),
        readonly=("/proc/sys",),
        rootless=True,
        scratch_size=16 << 20,
    )
    exe = Exec(
        id=7,
        argv=("sh", b"-c", "echo hi"),
        env=("PATH=/bin", b"A=\xff"),
        cwd="/tmp",
        user="app:staff",
        caps=0xA80425FB,
        seccomp=b"\x06\x00\x00\x00\x00\x00\xff\x7f",
        rlimits=((7, 1024, -1),),
        cgroups=2,
    )
    return {
        "setup": encode(setup),
        "exec": encode(exe),
        "exec-pty": encode(Exec(id=8, argv=("sh",), env=(), stdio="pty", rows=50, cols=200)),
        "exec-capture": encode(
            Exec(id=12, argv=("cat",), env=(), stdio="capture", input=b"in", limit=10)
        ),
        "signal": encode(Signal(id=9, target=7, sig=9, tree=True)),
        "open": encode(Open(id=10, path="/etc/passwd", mode="r")),
        "ping": encode(Ping(id=11)),
        "widths": msgpack.packb(
            {
                "t": "x",
                "i": [0, -1, -33, 200, -200, 70000, -70000, 2**40, -(2**40), 2**63 - 1],
                "f": [1.5],
                "n": None,
                "s": "x" * 300,
                "b": b"y" * 300,
            }
        ),
        "deep": b"\x91" * 8 + b"\xc0",
        "ext": b"\x81\xa1t\xd4\x01\x02",
    }


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory) -> Path:
    clang = shutil.which("clang") or shutil.which("clang-14")
    if clang is None:
        pytest.skip(
            "clang is not installed (apt-get install clang libclang-rt-14-dev): "
            "the init's decoder is not fuzzed in this run"
        )
    out = tmp_path_factory.mktemp("fuzz") / "fuzz_mpack"
    build = subprocess.run(
        [
            clang,
            "-g",
            "-O1",
            "-fsanitize=fuzzer,address,undefined",
            "-fno-sanitize-recover=undefined",
            "-I",
            str(REPO / "sandkit/_init"),
            "-o",
            str(out),
            str(HERE / "fuzz_mpack.c"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0 and "libclang_rt" in build.stderr + build.stdout:
        pytest.skip(
            f"clang cannot link libFuzzer (apt-get install libclang-rt-14-dev): {build.stderr[-300:]}"
        )
    assert build.returncode == 0, build.stderr
    return out


def test_init_decoder_under_libfuzzer(fuzzer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, data in _seeds().items():
        (corpus / name).write_bytes(data)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    started = time.monotonic()
    run = subprocess.run(
        [
            str(fuzzer),
            f"-max_total_time={FUZZ_SECONDS}",
            "-max_len=70000",
            "-timeout=10",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        check=False,
    )
    crashes = sorted(p.name for p in artifacts.iterdir())
    tail = run.stderr[-3000:]
    assert run.returncode == 0 and not crashes, f"the fuzzer found {crashes}:\n{tail}"
    runs = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", run.stderr).group(1))
    print(f"libFuzzer: {runs} executions in {time.monotonic() - started:.0f} s, no crash")
    assert runs > 1000, tail


# --- the host's decoder, where tests/test_ipc.py stops -----------------------------------------


def _refused_or_message(packet: bytes, direction: str) -> None:
    try:
        decode(packet, direction=direction)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_request_direction_never_crashes(data):
    _refused_or_message(data, "request")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(_seeds().values())), st.data())
def test_mutated_real_messages_give_a_message_or_a_protocol_error(seed, data):
    # byte flips, truncations and extensions of real packets reach deeper than random bytes
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "add"]))
        if op == "flip" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        elif op == "cut" and buf:
            del buf[data.draw(st.integers(0, len(buf) - 1)) :]
        else:
            buf += data.draw(st.binary(min_size=1, max_size=9))
    for direction in ("request", "reply"):
        _refused_or_message(bytes(buf), direction)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x91" * 100_000 + b"\xc0",  # nesting far deeper than any message
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion elements
        b"\xdf\xff\xff\xff\xff",  # map32 likewise
        b"\xc6\xff\xff\xff\xff" + b"x" * 16,  # bin32 claiming 4 GiB
        b"\xdb\x7f\xff\xff\xff" + b"x" * 16,  # str32 likewise
        b"\x81\xa1t\xdc\x10\x00" + b"\xc0" * 4096,  # a 4096-element array where "t" goes
        msgpack.packb({"t": "exit", "id": 1, "code": 2**64 - 1}),
        msgpack.packb({"t": "exit", "id": -(2**63)}),
        msgpack.packb({"t": "started", "id": 1, "pid": 1.5}),
        msgpack.packb({1: "exit"}),
        msgpack.packb({"t": b"exit", "id": 1}),
    ],
    ids=[
        "deep",
        "array32",
        "map32",
        "bin32",
        "str32",
        "wide",
        "u64",
        "negid",
        "float",
        "intkey",
        "bintype",
    ],
)
@pytest.mark.parametrize("direction", ["reply"])
def test_hostile_sizes_and_shapes_are_refused_quickly(packet, direction):
    started = time.monotonic()
    try:
        message = decode(packet[:70_000], direction=direction)
    except ProtocolError:
        message = None
    assert time.monotonic() - started < 1.0
    if message is not None:  # whatever got through must be well typed
        assert isinstance(message.id, int) and message.id >= 0
