"""Store behaviour: tags, digests, leases, prune, atomicity, concurrency, archive interop."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess

import pytest

import sandkit.images
from sandkit.errors import (
    DigestMismatchError,
    ImageInUseError,
    ImageNotFoundError,
    InvalidReferenceError,
)
from sandkit.images import Image
from sandkit.images.reference import parse

from .conftest import ingest, oci_layout, tar_bytes

LAYER = tar_bytes([("bin", "dir", None), ("bin/hello", "file", b"hi", {"mode": 0o755})])


def test_reference_normalisation():
    assert str(parse("busybox")) == "docker.io/library/busybox:latest"
    assert str(parse("localhost:5000/x")) == "localhost:5000/x:latest"
    assert parse("ghcr.io/a/b:1").familiar() == "ghcr.io/a/b:1"
    assert parse("user/app:v2").familiar() == "user/app:v2"
    for bad in ("UPPER", "a::b", "x@sha256:12", "", " busybox"):
        with pytest.raises(InvalidReferenceError):
            parse(bad)


def test_tag_get_list_remove(tmp_path, store):
    img = Image.load(oci_layout(tmp_path / "l", [LAYER]), store=store)
    assert img.tags == ("example.com/test/img:1",)
    img.tag("mine")
    assert Image.get("mine:latest", store=store).id == img.id
    assert Image.get("docker.io/library/mine", store=store).id == img.id
    assert Image.get(img.id[7:19], store=store).id == img.id
    assert Image.get(f"example.com/test/img@{img.digest}", store=store).id == img.id
    assert [i.id for i in sandkit.images.list(store=store)] == [img.id]
    info = img.inspect()
    assert info["size"] > 0 and info["layers"][0]["diff_id"].startswith("sha256:")
    img.remove()
    with pytest.raises(ImageNotFoundError, match="load it with"):
        Image.get("mine", store=store)


def test_sandkit_home_moves_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "elsewhere"))
    img = Image.load(oci_layout(tmp_path / "l", [LAYER]))
    assert str(img.layer_dirs[0]).startswith(str(tmp_path / "elsewhere"))


def test_remove_refused_while_leased(tmp_path, store):
    img = Image.load(oci_layout(tmp_path / "l", [LAYER]), store=store)
    with img.lease():
        with pytest.raises(ImageInUseError, match="stop the container"):
            img.remove()
        # and from another process too (flock is per open file description)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply(_try_remove, (str(store.home), img.id)) == "in use"
    img.remove()


def _try_remove(home: str, image_id: str) -> str:
    from sandkit.images.store import Store

    try:
        Store(home).remove_image(image_id)
    except ImageInUseError:
        return "in use"
    return "removed"


def test_prune_removes_unreferenced_content(tmp_path, store):
    a = Image.load(
        oci_layout(tmp_path / "a", [LAYER, tar_bytes([("x", "file", b"x")])]), store=store
    )
    b = Image.load(oci_layout(tmp_path / "b", [LAYER], ref_name="example.com/b:1"), store=store)
    assert a.layer_dirs[0] == b.layer_dirs[0]  # shared, applied once
    a.remove()
    report = sandkit.images.prune(store=store)
    assert report.layers == 1 and report.blobs >= 3
    assert b.layer_dirs[0].is_dir() and Image.get("example.com/b:1", store=store)


def test_digest_mismatch_leaves_nothing(tmp_path, store):
    with pytest.raises(DigestMismatchError, match="tampered"):
        Image.load(oci_layout(tmp_path / "l", [LAYER], corrupt_layer=True), store=store)
    assert not store.records() and not list((store.home / "layers").iterdir())
    assert not list((store.home / "tmp").iterdir())
    assert not list((store.home / "blobs/sha256").iterdir())


def test_diff_id_mismatch_is_refused(tmp_path, store):
    layout = oci_layout(tmp_path / "l", [LAYER])
    index = json.loads((layout / "index.json").read_text())
    man_path = layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]
    man = json.loads(man_path.read_bytes())
    cfg_path = layout / "blobs/sha256" / man["config"]["digest"][7:]
    cfg = json.loads(cfg_path.read_bytes())
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    # re-address everything so only the diff_id lie remains
    from .conftest import sha

    new_cfg = json.dumps(cfg).encode()
    (layout / "blobs/sha256" / sha(new_cfg)[7:]).write_bytes(new_cfg)
    man["config"].update(digest=sha(new_cfg), size=len(new_cfg))
    new_man = json.dumps(man).encode()
    (layout / "blobs/sha256" / sha(new_man)[7:]).write_bytes(new_man)
    index["manifests"][0].update(digest=sha(new_man), size=len(new_man))
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(DigestMismatchError):
        Image.load(layout, store=store)
    assert not list((store.home / "layers").iterdir())


def _load_in_child(home: str, layout: str) -> str:
    from sandkit.images.store import Store

    return Image.load(layout, store=Store(home)).id


def test_two_processes_load_the_same_image(tmp_path, store):
    layout = oci_layout(tmp_path / "l", [LAYER, tar_bytes([("y", "file", b"y" * 100000)])])
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        ids = pool.starmap(_load_in_child, [(str(store.home), str(layout))] * 4)
    assert len(set(ids)) == 1 and len(store.records()) == 1
    assert len(list((store.home / "layers").iterdir())) == 2


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed")
@pytest.mark.parametrize("fmt,transport", [("docker", "docker-archive"), ("oci", "oci-archive")])
def test_saved_archives_are_read_by_skopeo_and_reload(tmp_path, store, fmt, transport):
    img = Image.load(
        oci_layout(tmp_path / "l", [LAYER], compress="zstd" if fmt == "oci" else "gzip"),
        store=store,
    )
    out = tmp_path / f"img.{fmt}.tar"
    img.save(out, format=fmt)
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"{transport}:{out}"], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["Layers"] and info["Os"] == "linux"
    # skopeo rewrites it as an OCI layout (re-serialising the config when it converts from
    # docker-archive, so the id may change); loading it back gives the same layers
    subprocess.run(
        ["skopeo", "copy", "-q", f"{transport}:{out}", f"oci:{tmp_path / 'copy'}:x"], check=True
    )
    again = Image.load(tmp_path / "copy", store=store)
    assert again.layer_dirs == img.layer_dirs
    assert again.config == img.config
    assert not list(tmp_path.glob(".*.partial"))


def test_a_layer_of_several_gzip_members_applies_whole(store):
    """gzip allows concatenated members (pigz, appending tools); all of them are the layer."""
    import gzip

    tar = tar_bytes([("a", "file", b"first half " * 5000), ("b", "file", b"second half " * 5000)])
    half = len(tar) // 2
    rec = ingest(store, gzip.compress(tar[:half]) + gzip.compress(tar[half:]), tar)
    fs = store.layer_dir(rec.diff_id)
    assert (fs / "a").read_bytes() == b"first half " * 5000
    assert (fs / "b").read_bytes() == b"second half " * 5000


@pytest.mark.parametrize("damage", ["truncated", "bad crc"])
def test_a_damaged_gzip_layer_is_a_clear_error_and_leaves_nothing(store, damage):
    import gzip

    from sandkit.errors import ImageError

    tar = tar_bytes([("a", "file", b"x" * 100_000)])
    blob = gzip.compress(tar)
    blob = blob[: len(blob) // 2] if damage == "truncated" else blob[:-8] + b"\0\0\0\0" + blob[-4:]
    # The digest is the damaged blob's own: only the gzip stream itself can tell.
    with pytest.raises(ImageError, match=r"not valid gzip|truncated or corrupt"):
        ingest(store, blob, tar)
    assert not list((store.home / "layers").iterdir())
    assert not list((store.home / "tmp").iterdir())
    assert not list((store.home / "blobs/sha256").iterdir())
