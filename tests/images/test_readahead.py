"""A layer's source read ahead by a thread of its own while a core is idle (readahead.py)."""

from __future__ import annotations

import gzip
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from polling import stack_of, wait_until

from sandkit.errors import ImageError
from sandkit.images import readahead
from sandkit.images.readahead import CHUNK, ReadAhead

from .conftest import ingest, tar_bytes

DATA = os.urandom(5 * CHUNK + 12345)


def _after(reads: int) -> Callable[[], bool]:
    """A read-ahead policy that says yes from its ``reads``-th question on."""
    asked = 0

    def policy() -> bool:
        nonlocal asked
        asked += 1
        return asked >= reads

    return policy


def _read_all(stream: io.RawIOBase, size: int) -> bytes:
    out, buf = bytearray(), bytearray(size)
    while n := stream.readinto(buf):
        out += buf[:n]
    return bytes(out)


def _reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sandkit-readahead"]


# (7 bytes takes a second or two per switch: slow)
@pytest.mark.parametrize(
    "size", [pytest.param(7, marks=pytest.mark.slow), (64 << 10) + 1, CHUNK + 3]
)
@pytest.mark.parametrize("switch", [None, 1, 4], ids=["never", "at-once", "later"])
def test_every_byte_in_order_whether_and_whenever_it_reads_ahead(
    size: int, switch: int | None
) -> None:
    policy = (lambda: False) if switch is None else _after(switch)
    with ReadAhead(io.BytesIO(DATA), read_ahead=policy) as stream:
        assert _read_all(stream, size) == DATA
        assert stream.reading_ahead == (switch is not None)
    assert not _reading_threads()


def test_a_stream_read_in_one_go_starts_no_thread() -> None:
    with ReadAhead(io.BytesIO(b"small"), read_ahead=lambda: True) as stream:
        assert _read_all(stream, CHUNK) == b"small"
        assert not stream.reading_ahead


class _Failing(io.RawIOBase):
    """Two chunks of bytes, then an error."""

    def __init__(self) -> None:
        self.sent = 0

    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        if self.sent >= 2 * CHUNK:
            raise OSError("the disk went away")
        n = min(len(buf), 2 * CHUNK - self.sent)
        buf[:n] = b"x" * n
        self.sent += n
        return n


def test_an_error_of_the_source_reaches_the_reader_after_the_bytes_before_it_and_stays() -> None:
    with ReadAhead(_Failing(), read_ahead=lambda: True) as stream:
        got, buf = 0, bytearray(64 << 10)
        with pytest.raises(OSError, match="the disk went away"):
            while n := stream.readinto(buf):
                got += n
        assert got == 2 * CHUNK
        with pytest.raises(OSError, match="the disk went away"):
            stream.readinto(buf)


class _Endless(io.RawIOBase):
    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        return len(buf)


def test_closing_stops_a_thread_that_waits_for_room() -> None:
    stream = ReadAhead(_Endless(), read_ahead=lambda: True)
    buf = bytearray(CHUNK)
    stream.readinto(buf)
    stream.readinto(buf)
    (reader,) = _reading_threads()
    # the thread fills the queue and waits for room
    wait_until(
        lambda: stack_of(reader)[:1] == ["wait"] and "_put" in stack_of(reader), "a full queue"
    )
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout=2)  # (a close that never returned would otherwise hang the suite)
    assert not closer.is_alive()
    assert not _reading_threads()


def test_layers_read_ahead_only_while_each_has_a_core_to_spare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(readahead, "usable_cpus", lambda: 2)
    with ReadAhead(io.BytesIO()):
        assert readahead.cores_to_spare()  # one layer on two cores
        with ReadAhead(io.BytesIO()):
            assert not readahead.cores_to_spare()  # two layers keep both cores busy
        assert readahead.cores_to_spare()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[ReadAhead]:
    """Every ReadAhead made during the test, on a machine of two usable CPUs."""
    made: list[ReadAhead] = []
    real_init = ReadAhead.__init__

    def remember(self: ReadAhead, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(ReadAhead, "__init__", remember)
    monkeypatch.setattr(readahead, "usable_cpus", lambda: 2)
    return made


def test_a_layer_applied_alone_is_read_ahead_and_leaves_no_thread(
    store, opened: list[ReadAhead]
) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(3 * CHUNK)
    tar = tar_bytes([("big", "file", payload)])
    rec = ingest(store, gzip.compress(tar, compresslevel=1), tar)
    assert (store.layer_dir(rec.diff_id) / "big").read_bytes() == payload
    assert store.has_blob(rec.digest)
    assert [s.reading_ahead for s in opened] == [True]
    assert not _reading_threads()


def test_a_damaged_layer_read_ahead_is_a_clear_error_and_leaves_nothing(
    store, opened: list[ReadAhead]
) -> None:  # type: ignore[no-untyped-def]
    tar = tar_bytes([("big", "file", os.urandom(3 * CHUNK))])
    blob = gzip.compress(tar, compresslevel=1)
    blob = blob[: len(blob) * 2 // 3]
    with pytest.raises(ImageError, match=r"not valid gzip|truncated or corrupt"):
        ingest(store, blob, tar)
    assert [s.reading_ahead for s in opened] == [True]  # the error came through the thread
    assert not list((store.home / "layers").iterdir())
    assert not list((store.home / "tmp").iterdir())
    assert not _reading_threads()
