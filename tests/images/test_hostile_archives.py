"""Hostile image archives (`docker save` tars, plain or compressed): links in loops, huge
headers, and orders that made a compressed archive be inflated once per member."""

from __future__ import annotations

import gzip
import json
import os
import re

import pytest

from sandkit.errors import ImageError
from sandkit.images import Image

from .conftest import python_child, sha, tar_bytes
from .hostile_tar import END, header, member


def docker_archive(
    layers: list[bytes],
    *,
    first: list[tuple[str, bytes]] = (),
    reverse: bool = False,
    links: dict[str, str] | None = None,
    listed: list[str] | None = None,
) -> bytes:
    """A classic `docker save` tar: ``first`` members, then the layers (last first if
    ``reverse``), symlink members ``links`` (name -> target), the config and manifest.json,
    which lists ``listed`` as the layers (by default the layers themselves)."""
    names = [f"l{i}/layer.tar" for i in range(len(layers))]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
        }
    ).encode()
    order = list(zip(names, layers, strict=True))
    members = list(first) + (order[::-1] if reverse else order)
    out = b"".join(member(n, d) for n, d in members)
    out += b"".join(
        member(name, typeflag=b"2", linkname=target) for name, target in (links or {}).items()
    )
    manifest = json.dumps(
        [{"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": listed or names}]
    )
    return out + member("config.json", config) + member("manifest.json", manifest.encode()) + END


def test_a_symlink_loop_in_an_archive_is_an_image_error(tmp_path, store):
    # tarfile followed in-archive links recursively: a loop was a RecursionError traceback.
    layer = tar_bytes([("f", "file", b"x")])
    archive = tmp_path / "loop.tar"
    loop = {"a/layer.tar": "../b/layer.tar", "b/layer.tar": "../a/layer.tar"}
    archive.write_bytes(docker_archive([layer], links=loop, listed=["a/layer.tar"]))
    with pytest.raises(ImageError, match="loop of links"):
        Image.load(archive, store=store)
    assert os.listdir(store.home / "tmp") == [] and os.listdir(store.home / "layers") == []


def test_links_in_an_archive_are_still_followed(tmp_path, store):
    # docker save writes a layer once and links the others to it
    layer = tar_bytes([("f", "file", b"x")])
    archive = tmp_path / "linked.tar"
    archive.write_bytes(
        docker_archive([layer], links={"z/layer.tar": "../l0/layer.tar"}, listed=["z/layer.tar"])
    )
    assert Image.load(archive, store=store).inspect()


def test_a_link_out_of_the_archive_is_an_image_error(tmp_path, store):
    layer = tar_bytes([("f", "file", b"x")])
    archive = tmp_path / "out.tar"
    archive.write_bytes(
        docker_archive(
            [layer], links={"a/layer.tar": "../../../etc/passwd"}, listed=["a/layer.tar"]
        )
    )
    with pytest.raises(ImageError, match="not in the archive"):
        Image.load(archive, store=store)


def test_a_compressed_archive_is_read_once(tmp_path):
    # Layers stored in the reverse of the manifest's order, behind 24 MiB that do not compress:
    # each layer read went back in the gzip stream, which inflated it again from its start.
    # Counted in a child process: the bytes it reads (/proc/self/io rchar), not a time.
    layers = [tar_bytes([(f"f{i}", "file", b"%d" % i)]) for i in range(20)]
    junk = os.urandom(24 << 20)
    archive = tmp_path / "image.tar.gz"
    archive.write_bytes(
        gzip.compress(docker_archive(layers, first=[("junk", junk)], reverse=True), compresslevel=1)
    )
    code = f"""
import os, sys
from sandkit.images import Image
from sandkit.images.store import Store
def rchar():
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])
before = rchar()
Image.load({str(archive)!r}, store=Store({str(tmp_path / "home")!r}))
print(rchar() - before)
"""
    (read,) = map(int, python_child(code, timeout=600))
    assert read < 2 * archive.stat().st_size, (read, archive.stat().st_size)


def test_a_2_gib_pax_header_in_an_archive_is_refused_without_reading_it(tmp_path):
    # A sparse file on disk: the header claims 2 GiB of PAX records, all holes. tarfile read
    # them whole into memory while listing the archive.
    archive = tmp_path / "huge-pax.tar"
    with open(archive, "wb") as f:
        f.write(header("PaxHeader", b"x", 2 << 30))
        f.truncate(512 + (2 << 30))
        f.seek(0, os.SEEK_END)
        f.write(member("manifest.json", b"[]") + END)
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
from sandkit.errors import ImageError
from sandkit.images import Image
from sandkit.images.store import Store
try:
    Image.load({str(archive)!r}, store=Store({str(tmp_path / "home")!r}))
except ImageError as e:
    print("refused:", e)
print([int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""
    outcome, peak = python_child(code)
    assert outcome.startswith(f"refused: {archive}:") and "1048576-byte limit" in outcome
    assert int(peak) < 160 << 20


def test_a_damaged_compressed_archive_is_an_image_error(tmp_path, store):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(gzip.compress(docker_archive([tar_bytes([("f", "file", b"x")])]))[:-20])
    with pytest.raises(ImageError, match="damaged compressed archive"):
        Image.load(archive, store=store)
    assert os.listdir(store.home / "tmp") == []


def test_a_compressed_archive_that_inflates_past_the_image_limit_is_refused(tmp_path, monkeypatch):
    """The decompressed copy of a .tar.gz is written to the store's tmp/: a small archive of
    zeros must not fill the disk through it. It is charged like everything a load writes."""
    from sandkit.images.store import Store

    monkeypatch.setenv("SANDKIT_MAX_IMAGE_SIZE", "8m")
    store = Store(tmp_path / "home")
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ImageError, match=re.escape("more than 8.0 MiB")):
        Image.load(bomb, store=store)
    assert list((store.home / "tmp").iterdir()) == []
