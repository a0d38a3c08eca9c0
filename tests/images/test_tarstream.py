"""The forward-only reader that layer tars are parsed from, with chunks small enough that every
header, name and file body straddles chunk boundaries."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandkit.images.layers import apply_tar
from sandkit.images.tarstream import CHUNK, ForwardReader

from .conftest import tar_bytes

ENTRIES = [
    ("d", "dir", None),
    ("d/" + "long-name-" * 30, "file", bytes(range(256)) * 41),  # a PAX header for the name
    ("d/empty", "file", b""),
    ("d/link", "symlink", "empty"),
    ("d/exact", "file", b"e" * 1024),  # ends on a block boundary: no padding to skip
]


@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_tarfile_parses_through_it_and_copy_to_gets_each_file(tmp_path, chunk):
    reader = ForwardReader(io.BytesIO(tar_bytes(ENTRIES)), chunk)
    got = {}
    with tarfile.TarFile(fileobj=reader, mode="r") as tar:  # type: ignore[arg-type]
        for i, member in enumerate(tar):
            if member.isreg():
                reader.seek(member.offset_data)
                out = tmp_path / str(i)
                with open(out, "wb") as f:
                    reader.copy_to(f.fileno(), member.size)
                got[member.name] = out.read_bytes()
            else:
                got[member.name] = member.type  # its data, if any, is skipped by tarfile's seek
    assert got == {
        name: payload
        if kind == "file"
        else {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[kind]
        for name, kind, payload in ENTRIES
    }


def test_read_and_seek_across_chunks():
    reader = ForwardReader(io.BytesIO(bytes(range(100))), 8)
    assert reader.read(3) == bytes([0, 1, 2])
    assert reader.read(10) == bytes(range(3, 13))
    assert reader.seek(50) == 50 and reader.tell() == 50
    assert reader.read(2) == bytes([50, 51])
    assert reader.seek(49) == 49  # back inside the current chunk is fine
    assert reader.read() == bytes(range(49, 100))
    assert reader.read(5) == b""
    assert reader.seek(1000) == 100  # stops at the end, as a stream must


def test_seeking_back_before_the_current_chunk_is_refused():
    reader = ForwardReader(io.BytesIO(bytes(100)), 8)
    reader.seek(40)
    with pytest.raises(tarfile.StreamError):
        reader.seek(10)


def test_copy_to_a_truncated_stream_is_a_read_error(tmp_path):
    reader = ForwardReader(io.BytesIO(b"x" * 10), 4)
    with open(tmp_path / "f", "wb") as f, pytest.raises(tarfile.ReadError, match="unexpected end"):
        reader.copy_to(f.fileno(), 11)


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar makes the sparse archive")
def test_sparse_members_are_laid_out_by_tarfile(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(3 << 20)
        f.write(b"end")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", archive, "-C", src, "holes"], check=True
    )
    with tarfile.open(archive) as tar:
        assert tar.getmember("holes").issparse()
    root = tmp_path / "layer"
    root.mkdir()
    apply_tar(io.BytesIO(archive.read_bytes()), root)
    assert (root / "holes").read_bytes() == (src / "holes").read_bytes()
    assert os.stat(root / "holes").st_size == (3 << 20) + 3


def test_a_layer_of_many_files_applies_whole(tmp_path: Path):
    entries = [("d", "dir", None)] + [
        (f"d/f{i}", "file", os.urandom(i * 97 % 3000)) for i in range(300)
    ]
    root = tmp_path / "layer"
    root.mkdir()
    apply_tar(io.BytesIO(tar_bytes(entries)), root)
    for name, _kind, payload in entries[1:]:
        assert (root / name).read_bytes() == payload


def test_the_buffer_starts_small_and_grows_for_a_big_stream(tmp_path):
    payload = os.urandom(300 << 10)  # several fills of the first, small buffer
    reader = ForwardReader(io.BytesIO(tar_bytes([("big", "file", payload)])))
    assert len(reader._buffer) < CHUNK  # a small layer never pays for the big buffer
    with tarfile.TarFile(fileobj=reader, mode="r") as tar:  # type: ignore[arg-type]
        member = tar.next()
        assert member is not None
        reader.seek(member.offset_data)
        with open(tmp_path / "big", "wb") as f:
            reader.copy_to(f.fileno(), member.size)
    assert (tmp_path / "big").read_bytes() == payload
    assert len(reader._buffer) == CHUNK
