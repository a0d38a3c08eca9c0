"""Small inputs must not fill the disk (issue 15, hole 5).

Bombs with honest digests (gzip of zeros, a GNU sparse file from a tiny blob, many files,
three layers at once) are loaded or pulled into a store on a small tmpfs mounted by the test,
with limits set low; each must be refused before it passes its limit, leaving nothing behind.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from sandkit.errors import ImageError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .conftest import oci_layout, tar_bytes
from .smallfs import small_tmpfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs"),
]

MiB = 1 << 20


def zeros_layer(files: int, size: int, prefix: str = "z") -> bytes:
    return tar_bytes([(f"{prefix}{i}", "file", bytes(size)) for i in range(files)])


def gnu_sparse_layer(name: str, real_size: int) -> bytes:
    """A layer of one old-GNU sparse file that is all hole: 1.5 KB of tar, ``real_size`` of file."""
    header = bytearray(512)

    def put(offset: int, value: bytes) -> None:
        header[offset : offset + len(value)] = value

    put(0, name.encode())
    put(100, b"0000644\0")
    put(108, b"0000000\0")
    put(116, b"0000000\0")
    put(124, b"%011o\0" % 0)  # no data stored: the sparse map holds no data block
    put(136, b"%011o\0" % 1_600_000_000)
    put(156, b"S")
    put(257, b"ustar  \0")
    put(483, b"%011o\0" % real_size)  # the file's real size
    put(148, b" " * 8)
    put(148, b"%06o\0 " % sum(header))
    return bytes(header) + bytes(1024)


def assert_nothing_left(store: Store) -> None:
    assert store.records() == []
    assert list((store.home / "layers").iterdir()) == []
    assert list((store.home / "tmp").iterdir()) == []


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


@pytest.fixture
def small_home(tmp_path: Path):
    with small_tmpfs(tmp_path / "home", "64m") as home:
        yield home


def test_a_gzip_bomb_stops_at_the_image_limit(tmp_path: Path, monkeypatch):
    layer = zeros_layer(1, 32 * MiB)
    layout = oci_layout(tmp_path / "layout", [layer])
    assert sum(f.stat().st_size for f in (layout / "blobs" / "sha256").iterdir()) < 64 << 10
    monkeypatch.setenv("SANDKIT_MAX_IMAGE_SIZE", "8m")
    store = Store(tmp_path / "home")
    with pytest.raises(ImageError, match=r"more than 8\.0 MiB .*SANDKIT_MAX_IMAGE_SIZE"):
        Image.load(layout, store=store)
    assert_nothing_left(store)


def test_the_image_limit_is_a_store_keyword_too(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SANDKIT_MAX_IMAGE_SIZE", "1g")
    layout = oci_layout(tmp_path / "layout", [zeros_layer(1, 32 * MiB)])
    store = Store(tmp_path / "home", max_image_size="8m")
    with pytest.raises(ImageError, match=r"more than 8\.0 MiB"):
        Image.load(layout, store=store)
    assert_nothing_left(store)
    # 0 turns the limit off.
    Image.load(layout, store=Store(tmp_path / "home", max_image_size=0))


def test_many_files_keep_the_free_space_reserve(small_home: Path, tmp_path: Path, monkeypatch):
    layout = oci_layout(tmp_path / "layout", [zeros_layer(6, 8 * MiB)])  # 48 MiB of 64
    monkeypatch.setenv("SANDKIT_MIN_FREE", "32m")
    store = Store(small_home)
    with pytest.raises(ImageError, match=r"not enough space .* keeping 32\.0 MiB free"):
        Image.load(layout, store=store)
    assert_nothing_left(store)
    assert free_bytes(small_home) > 60 * MiB


def test_a_sparse_file_from_a_tiny_blob_is_charged_its_real_size(
    small_home: Path, tmp_path: Path, monkeypatch
):
    layer = gnu_sparse_layer("hole", 48 * MiB)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        info = tar.getmembers()[0]
    assert info.issparse() and info.size == 48 * MiB  # tarfile reads it as Docker's reader does
    layout = oci_layout(tmp_path / "layout", [layer])
    monkeypatch.setenv("SANDKIT_MIN_FREE", "32m")
    store = Store(small_home)
    with pytest.raises(ImageError, match="not enough space"):
        Image.load(layout, store=store)
    assert_nothing_left(store)


def test_more_files_than_inodes_to_spare_are_refused(tmp_path: Path):
    layout = oci_layout(
        tmp_path / "layout", [tar_bytes([(f"f{i}", "file", b"") for i in range(3000)])]
    )
    with small_tmpfs(tmp_path / "home", "64m", inodes=2000) as home:
        store = Store(home)
        with pytest.raises(
            ImageError, match=r"more files than the store's filesystem .* has inodes to spare"
        ):
            Image.load(layout, store=store)
        assert_nothing_left(store)


def test_the_store_size_limit(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SANDKIT_MAX_STORE_SIZE", "6m")
    store = Store(tmp_path / "home")
    Image.load(oci_layout(tmp_path / "a", [zeros_layer(1, 4 * MiB, "a")]), store=store)
    with pytest.raises(ImageError, match=r"past its limit of 6\.0 MiB .*SANDKIT_MAX_STORE_SIZE"):
        Image.load(oci_layout(tmp_path / "b", [zeros_layer(1, 4 * MiB, "b")]), store=store)
    assert len(store.records()) == 1
    assert list((store.home / "tmp").iterdir()) == []


def test_more_layers_than_docker_takes_are_refused_before_any_is_stored(tmp_path: Path):
    layers = [tar_bytes([(f"f{i}", "file", b"x")]) for i in range(126)]
    store = Store(tmp_path / "home")
    with pytest.raises(ImageError, match="126 layers; like Docker, sandkit takes at most 125"):
        Image.load(oci_layout(tmp_path / "layout", layers), store=store)
    assert_nothing_left(store)


def test_125_layers_load(tmp_path: Path):
    layers = [tar_bytes([(f"f{i}", "file", b"x")]) for i in range(125)]
    image = Image.load(oci_layout(tmp_path / "layout", layers), store=Store(tmp_path / "home"))
    assert len(image.layer_dirs) == 125


# --- a pull applies three layers at once -------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path):
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    from registry.server import make_registry

    reg = make_registry(tmp_path / "registry", "http")
    yield reg
    reg.close()


def test_three_layers_pulled_at_once_share_one_budget(
    registry, small_home: Path, tmp_path: Path, monkeypatch
):
    """Each layer fits in what may be used (40 MiB), the three together (48 MiB) do not."""
    layers = [zeros_layer(1, 16 * MiB, prefix) for prefix in "abc"]
    assert all(len(gzip.compress(layer)) < 64 << 10 for layer in layers)
    source = Store(tmp_path / "source")
    ref = registry.ref("bomb/three:1")
    Image.load(oci_layout(tmp_path / "layout", layers), store=source).push(ref)
    monkeypatch.setenv("SANDKIT_MIN_FREE", "24m")
    store = Store(small_home)
    from sandkit.images.budget import DiskBudget

    budgets = []
    monkeypatch.setattr(DiskBudget, "__init__", _recording(DiskBudget.__init__, budgets))
    with pytest.raises(ImageError, match="not enough space"):
        Image.pull(ref, store=store)
    assert len(budgets) == 1  # the layers' threads charged the pull's budget, not their own
    # A layer that was whole before another hit the budget may stay (it is complete, and a pull
    # of the same image would use it, as Docker's does); nothing half-made and no image may.
    assert store.records() == []
    assert list((store.home / "tmp").iterdir()) == []
    kept = list((store.home / "layers").iterdir())
    assert len(kept) < 3 and all((layer / "fs").is_dir() for layer in kept), kept
    assert free_bytes(small_home) > 60 * MiB - 17 * MiB * len(kept)


def _recording(init, budgets: list):
    def record(self, *args, **kwargs):
        budgets.append(self)
        init(self, *args, **kwargs)

    return record
