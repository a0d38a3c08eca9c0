"""Conformance: every fixture image loads with the right tree; broken ones fail clearly."""

from __future__ import annotations

import pytest

from sandkit.errors import ImageError
from sandkit.images import Image, load_all

from .conftest import tree

GOOD = {
    # fixture -> the tags `docker load` gives it: its manifest.json's RepoTags (none for the
    # OCI layout and for hello-world-v25, whose RepoTags is null)
    "ggcr/v1_tarball_testdata/test_image_1.tar": {"bazel/v1/tarball:test_image_1"},
    "ggcr/v1_tarball_testdata/test_image_2.tar": {"bazel/v1/tarball:test_image_2"},
    "ggcr/v1_tarball_testdata/test_load_manifest.tar": {"bazel/v1/tarball:test_image_1"},
    "ggcr/v1_tarball_testdata/hello-world-v25.tar": set(),
    "ggcr/v1_mutate_testdata/source_image.tar": {"bazel/pkg/v1/mutate:source_image"},
    "ggcr/v1_mutate_testdata/source_image_with_empty_layer_history.tar": {
        "bazel/pkg/v1/mutate:source_image"
    },
    "ggcr/v1_mutate_testdata/whiteout_image.tar": {"bazel/pkg/v1/mutate:whiteout_image"},
    "ggcr/v1_mutate_testdata/overwritten_file.tar": {"bazel/pkg/v1/mutate:overwritten_file"},
    "ggcr/v1_mutate_testdata/whiteout_dir.tar": {"localhost:5000/whiteout:latest"},
    "ggcr/v1_layout_testdata/test_index_one_image": set(),
}
MULTI = [
    "ggcr/v1_tarball_testdata/test_bundle.tar",
    "ggcr/v1_tarball_testdata/test_link.tar",
    "ggcr/v1_layout_testdata/test_index",
    "ggcr/v1_layout_testdata/test_gc_index",
    "regclient/testrepo",
]
BROKEN = {
    "ggcr/v1_tarball_testdata/null_manifest.tar": "lists no images",
    "ggcr/v1_tarball_testdata/no_manifest.tar": "pre-2016 docker save",
    "ggcr/v1_layout_testdata/test_gc_image_unknown_mediatype": "missing",
    "ggcr/v1_layout_testdata/test_index_media_type": "artifact",
    "ggcr/v1_tarball_testdata/content.tar": "neither manifest.json",
    "regclient/layer.tar": "neither manifest.json",
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_single_image_fixtures_load(oci_fixtures, store, name):
    image = Image.load(oci_fixtures / name, store=store)
    assert image.layer_dirs and all(d.is_dir() for d in image.layer_dirs)
    assert set(image.tags) == GOOD[name]
    assert Image.get(image.id, store=store).layer_dirs == image.layer_dirs
    assert not list((store.home / "tmp").iterdir())


@pytest.mark.parametrize("name", MULTI)
def test_multi_image_fixtures_need_a_choice_and_load_all(oci_fixtures, store, name):
    with pytest.raises(ImageError, match="pass ref="):
        Image.load(oci_fixtures / name, store=store)
    assert load_all(oci_fixtures / name, store=store)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_fixtures_fail_clearly(oci_fixtures, store, name):
    with pytest.raises(ImageError, match=BROKEN[name]):
        Image.load(oci_fixtures / name, store=store)
    assert not store.records() and not list((store.home / "tmp").iterdir())


def test_layer_contents_match_the_fixture_sources(oci_fixtures, store):
    # test_image_1's layer holds the fixture file `foo`; whiteout_image's top layer deletes foo.txt
    img = Image.load(oci_fixtures / "ggcr/v1_tarball_testdata/test_image_1.tar", store=store)
    files = tree(img.layer_dirs[0])
    for name in ("foo", "bar"):
        assert files[name] == (oci_fixtures / "ggcr/v1_tarball_testdata" / name).read_text()
    wh = Image.load(oci_fixtures / "ggcr/v1_mutate_testdata/whiteout_image.tar", store=store)
    merged: dict[str, str] = {}
    for layer in wh.layer_dirs:
        for path, kind in tree(layer).items():
            if kind == "dev 0:0":
                merged.pop(path, None)
            else:
                merged[path] = kind
    bar = (oci_fixtures / "ggcr/v1_mutate_testdata/whiteout/bar.txt").read_text()
    assert "foo.txt" not in merged and merged.get("bar.txt") == bar


def test_platform_selection(oci_fixtures, store):
    amd = Image.load(oci_fixtures / "regclient/testrepo", ref="v1", store=store)
    arm = Image.load(
        oci_fixtures / "regclient/testrepo", ref="v1", platform="linux/arm64", store=store
    )
    assert amd.inspect()["platform"] == "linux/amd64" and arm.inspect()["platform"] == "linux/arm64"
    with pytest.raises(ImageError, match="no image for platform linux/s390x"):
        Image.load(
            oci_fixtures / "regclient/testrepo", ref="v1", platform="linux/s390x", store=store
        )
    with pytest.raises(ImageError, match="artifact"):
        Image.load(oci_fixtures / "regclient/testrepo", ref="a1", store=store)


def test_link_archive_reuses_layers(oci_fixtures, store):
    images = load_all(oci_fixtures / "ggcr/v1_tarball_testdata/test_link.tar", store=store)
    by_tag = {i.tags[0]: i for i in images}
    three = by_tag["bazel/v1/tarball:test_image_3"]
    assert by_tag["bazel/v1/tarball:test_image_1"].layer_dirs[0] == three.layer_dirs[0]
