"""The JSON documents of a hostile archive or OCI layout (manifest.json, index.json, nested
indexes, manifests, configs) with deep nesting or fields of the wrong type: each load is a clear
ImageError that stores nothing, never a RecursionError, AttributeError or TypeError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandkit.errors import ImageError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .conftest import oci_layout, sha, tar_bytes
from .test_dir_inputs import assert_nothing_stored, docker_save_dir

LAYER = tar_bytes([("hello", "file", b"hi\n")])
DEEP = b"[" * 200_000 + b"]" * 200_000


def _rewrite_manifest_json(save: Path, change) -> None:
    entries = json.loads((save / "manifest.json").read_text())
    (save / "manifest.json").write_text(json.dumps(change(entries)))


def _put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    (layout / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    return {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha(data),
        "size": len(data),
    }


def _index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_text())


def _set_index(layout: Path, index: dict[str, Any]) -> None:
    (layout / "index.json").write_text(json.dumps(index))


def _image_manifest(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    desc = _index(layout)["manifests"][0]
    return desc, json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())


def _replace_manifest(layout: Path, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest).encode()
    index = _index(layout)
    index["manifests"][0] |= {"digest": sha(data), "size": len(data)}
    (layout / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    _set_index(layout, index)


def _replace_config(layout: Path, config: bytes) -> None:
    _, manifest = _image_manifest(layout)
    (layout / "blobs" / "sha256" / sha(config)[7:]).write_bytes(config)
    manifest["config"] |= {"digest": sha(config), "size": len(config)}
    _replace_manifest(layout, manifest)


def _nested_index_with(layout: Path, entry_change) -> None:
    """index.json -> an index blob whose one entry (the image) is changed by entry_change."""
    desc, _ = _image_manifest(layout)
    nested = json.dumps({"schemaVersion": 2, "manifests": [entry_change(dict(desc))]}).encode()
    index = _index(layout)
    index["manifests"] = [_put_blob(layout, nested) | {"annotations": desc.get("annotations", {})}]
    _set_index(layout, index)


def _config_path(save: Path) -> Path:
    """The config file of the one image in a docker-save directory."""
    return save / json.loads((save / "manifest.json").read_text())[0]["Config"]


DOCKER_CASES = {
    "manifest.json nested 200,000 deep": lambda save: (save / "manifest.json").write_bytes(DEEP),
    "RepoTags not a list": lambda save: _rewrite_manifest_json(
        save, lambda e: [e[0] | {"RepoTags": 5}]
    ),
    "a RepoTag not a string": lambda save: _rewrite_manifest_json(
        save, lambda e: [e[0] | {"RepoTags": [["x"]]}]
    ),
    "Layers not a list of names": lambda save: _rewrite_manifest_json(
        save, lambda e: [e[0] | {"Layers": [7]}]
    ),
    "config nested 200,000 deep": lambda save: _config_path(save).write_bytes(DEEP),
    "config Env not a list": lambda save: _config_path(save).write_text(
        json.dumps({"config": {"Env": 5}, "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]}})
    ),
    "config diff_ids not strings": lambda save: _config_path(save).write_text(
        json.dumps({"rootfs": {"type": "layers", "diff_ids": [{"a": 1}]}})
    ),
}


@pytest.mark.parametrize("case", sorted(DOCKER_CASES))
def test_a_hostile_docker_save_document_is_a_clear_error(store: Store, tmp_path: Path, case: str):
    save = docker_save_dir(tmp_path / "save", LAYER)
    DOCKER_CASES[case](save)
    with pytest.raises(ImageError) as err:
        Image.load(save, store=store)
    assert "corrupt" in str(err.value) or "deep" in str(err.value), err.value
    assert_nothing_stored(store)


OCI_CASES = {
    "index.json nested 200,000 deep": lambda lay: (lay / "index.json").write_bytes(DEEP),
    "index manifests not a list": lambda lay: _set_index(
        lay, {"schemaVersion": 2, "manifests": "x"}
    ),
    "an index entry not an object": lambda lay: _set_index(
        lay, {"schemaVersion": 2, "manifests": [7]}
    ),
    "an index entry's digest not a string": lambda lay: _set_index(
        lay, {"schemaVersion": 2, "manifests": [{"digest": 5, "size": 1}]}
    ),
    "annotations not an object": lambda lay: _set_index(
        lay, _index(lay) | {"manifests": [_index(lay)["manifests"][0] | {"annotations": "x"}]}
    ),
    "nested index: platform a string": lambda lay: _nested_index_with(
        lay, lambda d: d | {"platform": "linux/amd64"}
    ),
    "nested index: size a string": lambda lay: _nested_index_with(
        lay, lambda d: d | {"size": "12"}
    ),
    "manifest nested 200,000 deep": lambda lay: _replace_manifest_raw(lay, DEEP),
    "manifest layers not objects": lambda lay: _replace_manifest(
        lay, _image_manifest(lay)[1] | {"layers": ["x"]}
    ),
    "manifest config not an object": lambda lay: _replace_manifest(
        lay, _image_manifest(lay)[1] | {"config": "x"}
    ),
    "config nested 200,000 deep": lambda lay: _replace_config(lay, DEEP),
    "config Cmd a number": lambda lay: _replace_config(
        lay,
        json.dumps(
            {"config": {"Cmd": 5}, "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]}}
        ).encode(),
    ),
}


def _replace_manifest_raw(layout: Path, data: bytes) -> None:
    index = _index(layout)
    index["manifests"][0] |= {"digest": sha(data), "size": len(data)}
    (layout / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    _set_index(layout, index)


@pytest.mark.parametrize("case", sorted(OCI_CASES))
def test_a_hostile_oci_layout_document_is_a_clear_error(store: Store, tmp_path: Path, case: str):
    layout = oci_layout(tmp_path / "layout", [LAYER])
    OCI_CASES[case](layout)
    with pytest.raises(ImageError) as err:
        Image.load(layout, store=store)
    assert "corrupt" in str(err.value) or "deep" in str(err.value), err.value
    assert_nothing_stored(store)


def test_an_encrypted_layer_in_a_layout_is_refused_by_its_type(store: Store, tmp_path: Path):
    """ocicrypt's layer type (image-spec's "+encrypted" suffix): the blob is ciphertext, so the
    fix is a key, not the re-export that a "corrupt tar" error would suggest."""
    layout = oci_layout(tmp_path / "layout", [LAYER])
    ciphertext = bytes(range(256)) * 4
    (layout / "blobs" / "sha256" / sha(ciphertext)[7:]).write_bytes(ciphertext)
    _, manifest = _image_manifest(layout)
    manifest["layers"][0] = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
        "digest": sha(ciphertext),
        "size": len(ciphertext),
    }
    _replace_manifest(layout, manifest)
    with pytest.raises(ImageError, match="encrypted layers need a decryption key"):
        Image.load(layout, store=store)
    assert_nothing_stored(store)
