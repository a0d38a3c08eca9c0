"""Push, drop, pull, run, in all four registry variants; reuse of blobs; skopeo interop."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

import sandkit
from sandkit.images.image import Image
from sandkit.images.registry import manifests
from sandkit.images.store import Store

from .conftest import make_image
from .server import Registry

pytestmark = pytest.mark.slow


def statuses(events: list) -> list[str]:
    return [e.status for e in events]


def test_round_trip_push_drop_pull_run(
    registry: Registry, busybox: Image, other_store: Store
) -> None:
    ref = registry.ref(f"team/app:{registry.variant}")
    pushed = busybox.push(ref, **registry.client_kwargs())
    assert pushed == busybox.digest
    events: list = []
    pulled = Image.pull(ref, store=other_store, progress=events.append, **registry.client_kwargs())
    assert (pulled.digest, pulled.id) == (busybox.digest, busybox.id)
    assert [layer.digest for layer in other_store.record(pulled.id).layers] == [
        layer.digest for layer in busybox.store.record(busybox.id).layers
    ]
    assert statuses(events).count("complete") == 2 and statuses(events)[-1] == "manifest"
    assert Image.get(ref, store=other_store).id == pulled.id  # tagged under the full reference
    with sandkit.Container(pulled) as c:
        assert c.exec(["sh", "-c", "cat /etc/message"]).stdout == b"hello from the registry\n"


def test_second_push_and_pull_reuse_everything(registry: Registry, busybox: Image) -> None:
    ref = registry.ref("team/reuse:1")
    busybox.push(ref, **registry.client_kwargs())
    events: list = []
    busybox.push(ref, progress=events.append, **registry.client_kwargs())
    assert statuses(events) == ["exists"] * 3 + ["manifest"]
    events.clear()
    Image.pull(ref, store=busybox.store, progress=events.append, **registry.client_kwargs())
    assert statuses(events).count("exists") == 2 and "downloading" not in statuses(events)


def test_pulled_image_pushes_by_cross_repository_mount(
    plain_registry: Registry, busybox: Image, other_store: Store
) -> None:
    busybox.push(plain_registry.ref("team/source:1"))
    pulled = Image.pull(plain_registry.ref("team/source:1"), store=other_store)
    events: list = []
    pulled.push(plain_registry.ref("other/copy:1"), progress=events.append)
    assert statuses(events).count("mounted") == 3
    assert {e.detail for e in events if e.status == "mounted"} == {"team/source"}


def test_chunked_upload(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store
) -> None:
    image = make_image(tmp_path, store, extra=bytes(range(256)) * 4000)
    ref = plain_registry.ref("team/chunked:1")
    assert image.push(ref, chunk_size=64 << 10) == image.digest
    assert Image.pull(ref, store=other_store).id == image.id


def test_multi_platform_index(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store
) -> None:
    amd = make_image(tmp_path, store, "amd")
    arm = make_image(tmp_path, store, "arm", arch="arm64")
    entries = []
    for img, arch in ((amd, "amd64"), (arm, "arm64")):
        img.push(plain_registry.ref(f"multi/app:{arch}"))
        raw = store.read_blob(img.digest)
        entries.append(
            {
                "mediaType": manifests.OCI_MANIFEST,
                "digest": img.digest,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    # An attestation entry first: BuildKit's unknown/unknown must never be chosen.
    entries.insert(0, dict(entries[0], platform={"os": "unknown", "architecture": "unknown"}))
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": entries}
    ).encode()
    r = httpx.put(
        f"http://{plain_registry.host}/v2/multi/app/manifests/1",
        content=index,
        headers={"Content-Type": manifests.OCI_INDEX},
    )
    assert r.status_code == 201, r.text
    ref = plain_registry.ref("multi/app:1")
    assert Image.pull(ref, store=other_store, platform="linux/arm64").id == arm.id
    assert Image.pull(ref, store=other_store, platform="linux/amd64").id == amd.id
    with pytest.raises(sandkit.ImageError, match="no image for platform linux/s390x"):
        Image.pull(ref, store=other_store, platform="linux/s390x")


def test_fixture_image_from_go_containerregistry(
    plain_registry: Registry, store: Store, other_store: Store, oci_fixtures: Path
) -> None:
    image = Image.load(oci_fixtures / "ggcr/v1_layout_testdata/test_index_one_image", store=store)
    ref = plain_registry.ref("fixtures/ggcr:1")
    assert image.push(ref) == image.digest
    assert Image.pull(ref, store=other_store).digest == image.digest


skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=120, check=True
    )


@skopeo
def test_skopeo_reads_what_sandkit_pushed(
    plain_registry: Registry, busybox: Image, tmp_path: Path
) -> None:
    ref = plain_registry.ref("interop/pushed:1")
    busybox.push(ref)
    info = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert info["Digest"] == busybox.digest
    assert len(info["Layers"]) == 2
    _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'copy'}:1")
    index = json.loads((tmp_path / "copy/index.json").read_text())
    assert index["manifests"][0]["digest"] == busybox.digest


@skopeo
def test_sandkit_pulls_what_skopeo_pushed(
    plain_registry: Registry, busybox: Image, tmp_path: Path, other_store: Store
) -> None:
    busybox.save(tmp_path / "bb.tar", format="docker")
    ref = plain_registry.ref("interop/skopeo:1")
    _skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"docker-archive:{tmp_path / 'bb.tar'}",
        f"docker://{ref}",
    )
    pulled = Image.pull(ref, store=other_store)
    assert (
        pulled.id == busybox.id
    )  # same config, so the same image, even though skopeo re-wrapped it
    with sandkit.Container(pulled) as c:
        assert c.exec(["echo", "ok"]).stdout == b"ok\n"
