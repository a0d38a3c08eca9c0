"""Hand-built tar pieces for hostile layers and archives: headers tarfile would never write
(oversized PAX headers, base-256 numbers, sparse maps, loops), and streams made on the fly so
that a test can feed gigabytes without holding or writing them."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

BLOCK = 512
END = b"\0" * (2 * BLOCK)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: str | bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_600_000_000,
    linkname: str | bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    raw: dict[int, bytes] | None = None,
) -> bytes:
    """One ustar header block; ``raw`` overwrites bytes at offsets (e.g. base-256 numbers)
    before the checksum is computed."""
    as_bytes = [v.encode() if isinstance(v, str) else v for v in (name, linkname)]
    block = bytearray(BLOCK)
    block[0:100] = as_bytes[0][:100].ljust(100, b"\0")
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(uid, 8)
    block[116:124] = _octal(gid, 8)
    block[124:136] = _octal(size, 12) if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    block[136:148] = _octal(mtime, 12)
    block[156:157] = typeflag
    block[157:257] = as_bytes[1][:100].ljust(100, b"\0")
    block[257:265] = b"ustar\x0000"
    block[329:337] = _octal(devmajor, 8)
    block[337:345] = _octal(devminor, 8)
    for offset, value in (raw or {}).items():
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def member(name: str | bytes, data: bytes = b"", typeflag: bytes = b"0", **fields: object) -> bytes:
    return header(name, typeflag, len(data), **fields) + padded(data)  # type: ignore[arg-type]


def pax_record(key: str, value: str | bytes) -> bytes:
    """``"<len> key=value\\n"``, where len counts the whole record, itself included."""
    body = (
        b" " + key.encode() + b"=" + (value.encode() if isinstance(value, str) else value) + b"\n"
    )
    length = len(body) + 1
    while len(str(length).encode() + body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: dict[str, str | bytes], typeflag: bytes = b"x") -> bytes:
    data = b"".join(pax_record(k, v) for k, v in records.items())
    return member("PaxHeader", data, typeflag)


class StreamOf(io.RawIOBase):
    """A readable stream of the pieces an iterator yields (made when read, never all at once)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        super().__init__()
        self._pieces: Iterator[bytes] = iter(pieces)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = memoryview(piece)
        n = min(len(buf), len(self._left))
        buf[:n] = self._left[:n]
        self._left = self._left[n:]
        return n
