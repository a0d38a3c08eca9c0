"""A real overlay mount's upper directory becomes a layer that, applied by the store and stacked
again, gives back the same tree; `docker diff`'s list of the same changes (root: mounts)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from treelisting import listing

from sandkit.errors import ImageError
from sandkit.images.changes import Change, diff_upper, write_layer_from_upper
from sandkit.images.layers import apply_tar

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs here needs root")
pytestmark = [pytest.mark.root, needs_root]


@contextlib.contextmanager
def overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> Iterator[Path]:
    """``lowers`` topmost first, as overlayfs takes them."""
    for d in (upper, work, target):
        d.mkdir(exist_ok=True)
    opts = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def make_lower(top: Path) -> Path:
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "keep").write_text("keep\n")
    (top / "etc" / "gone").write_text("gone\n")
    (top / "etc" / "hosts").write_text("127.0.0.1 lower\n")
    (top / "wdir" / "deep").mkdir(parents=True)
    (top / "wdir" / "a").write_text("a\n")
    (top / "wdir" / "deep" / "x").write_text("x\n")
    (top / "data").write_text("data\n")
    (top / "untouched").write_text("same\n")
    return top


def change(merged: Path) -> None:
    """What a container might do to its root."""
    (merged / "etc" / "keep").write_text("changed\n")
    (merged / "etc" / "gone").unlink()
    subprocess.run(["rm", "-r", str(merged / "wdir")], check=True)
    (merged / "wdir").mkdir()
    (merged / "wdir" / "b").write_text("b\n")
    (merged / "new").write_bytes(b"n" * 5000)
    os.chown(merged / "new", 1000, 1001)
    os.chmod(merged / "new", 0o4750)
    os.setxattr(merged / "new", "user.note", b"\xffbinary")
    os.link(merged / "new", merged / "newlink")
    (merged / "newdir" / "sub").mkdir(parents=True)
    os.symlink("/etc/shadow", merged / "newdir" / "escape")
    os.mkfifo(merged / "newdir" / "fifo", 0o640)
    os.chmod(merged / "data", 0o600)
    (merged / os.fsdecode(b"caf\xe9")).write_text("not UTF-8\n")


@pytest.fixture
def changed(tmp_path: Path) -> tuple[Path, Path, list[tuple]]:
    """(lower, upper, the listing of the changed merged tree)."""
    lower = make_lower(tmp_path / "lower")
    upper = tmp_path / "upper"
    with overlay([lower], upper, tmp_path / "work", tmp_path / "merged") as merged:
        change(merged)
        expected = listing(merged, top_mtime=False)
    return lower, upper, expected


def layer_of(upper: Path, **kw) -> tuple[bytes, str, int]:
    buf = io.BytesIO()
    diff_id, size = write_layer_from_upper(upper, buf, **kw)
    return buf.getvalue(), diff_id, size


def test_layer_applied_and_stacked_gives_back_the_same_tree(tmp_path, changed):
    lower, upper, expected = changed
    data, diff_id, size = layer_of(upper)
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest() and size == len(data)
    applied = tmp_path / "applied"
    applied.mkdir()
    apply_tar(io.BytesIO(data), applied)
    fresh = tmp_path / "again"
    fresh.mkdir()
    with overlay([applied, lower], fresh / "u", fresh / "w", fresh / "m") as merged:
        assert listing(merged, top_mtime=False) == expected
        assert os.getxattr(merged / "new", "user.note") == b"\xffbinary"


def test_layer_entries_follow_the_oci_changeset_rules(changed):
    _, upper, _ = changed
    data, _, _ = layer_of(upper)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # directories first, then their contents, names sorted; a whiteout for the deleted file, an
    # opaque marker right after the directory that was deleted and made again
    assert names == [
        "caf\udce9",
        "data",
        "etc",
        "etc/.wh.gone",
        "etc/keep",
        "new",
        "newdir",
        "newdir/escape",
        "newdir/fifo",
        "newdir/sub",
        "newlink",
        "wdir",
        "wdir/.wh..wh..opq",
        "wdir/b",
    ]
    by_name = {m.name: m for m in members}
    assert by_name["etc/.wh.gone"].isreg() and by_name["etc/.wh.gone"].size == 0
    assert by_name["newdir/escape"].issym() and by_name["newdir/escape"].linkname == "/etc/shadow"
    assert by_name["newdir/fifo"].isfifo() and by_name["newdir/fifo"].mode == 0o640
    new = by_name["new"]
    assert (new.uid, new.gid, new.mode, new.size) == (1000, 1001, 0o4750, 5000)
    assert new.uname == "" and new.mtime == int(new.mtime)
    assert by_name["newlink"].islnk() and by_name["newlink"].linkname == "new"
    for m in members:
        assert not any(".overlay." in k for k in m.pax_headers), m.name


def test_same_tree_same_digest(changed):
    _, upper, _ = changed
    assert layer_of(upper)[1] == layer_of(upper)[1]


def test_diff_lists_what_docker_diff_lists(changed):
    lower, upper, _ = changed
    got = diff_upper(upper, lower=[lower])
    assert [str(c) for c in got] == [
        "A /caf\udce9",
        "C /data",
        "C /etc",
        "D /etc/gone",
        "C /etc/keep",
        "A /new",
        "A /newdir",
        "A /newdir/escape",
        "A /newdir/fifo",
        "A /newdir/sub",
        "A /newlink",
        "C /wdir",
        "A /wdir/b",
    ]
    assert Change("/new", "A") in got


def test_paths_sandkit_wrote_are_left_out_with_the_directories_on_their_way(tmp_path):
    lower = make_lower(tmp_path / "lower")
    upper = tmp_path / "upper"
    with overlay([lower], upper, tmp_path / "work", tmp_path / "merged") as merged:
        (merged / "etc" / "hosts").write_text("127.0.0.1 sandkit\n")  # copies /etc up
        (merged / "proc").mkdir()  # a mount point the init made
    ignore = ["/etc/hosts", "/proc"]
    assert diff_upper(upper, lower=[lower], ignore=ignore) == []
    data, _, _ = layer_of(upper, ignore=ignore)
    assert data == bytes(1024)  # an empty layer: the end-of-archive blocks only
    with overlay([lower], upper, tmp_path / "work", tmp_path / "merged") as merged:
        (merged / "etc" / "keep").write_text("now changed\n")
    assert [str(c) for c in diff_upper(upper, lower=[lower], ignore=ignore)] == [
        "C /etc",
        "C /etc/keep",
    ]


def test_owners_are_translated_for_a_rootless_container(changed):
    _, upper, _ = changed
    data, _, _ = layer_of(upper, owner=lambda uid, gid: (uid + 1, gid + 2))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        new = tar.getmember("new")
    assert (new.uid, new.gid) == (1001, 1003)


def test_overlay_redirects_are_refused_not_misrecorded(tmp_path):
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(ImageError, match="redirect_dir"):
        layer_of(upper)


def test_a_symlinked_upper_root_is_not_followed(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(OSError):
        layer_of(tmp_path / "link")


# --- commit: the layer and a config become an image of the store ---------------------------


@pytest.fixture
def base_image(tmp_path, store):
    from sandkit.images import Image

    from .conftest import oci_layout, tar_bytes

    layer = tar_bytes(
        [("etc", "dir", None), ("etc/keep", "file", b"keep\n"), ("etc/gone", "file", b"g\n")]
    )
    config = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]}
    return Image.load(oci_layout(tmp_path / "layout", [layer], config=config), store=store)


def test_commit_makes_an_image_whose_layers_give_the_changed_tree(tmp_path, store, base_image):
    from sandkit.images import Image
    from sandkit.images.commit import commit_upper

    upper = tmp_path / "upper"
    lowers = list(reversed(base_image.layer_dirs))
    with overlay(lowers, upper, tmp_path / "work", tmp_path / "merged") as merged:
        (merged / "etc" / "gone").unlink()
        (merged / "added").write_text("new\n")
        expected = listing(merged, top_mtime=False)
    rec = commit_upper(
        store,
        store.record(base_image.id),
        upper,
        tags=["committed:1"],
        changes=['CMD ["echo", "hi"]', "ENV B=2 A=3", "EXPOSE 8080", "LABEL k=v"],
        message="a message",
        author="someone",
        created_by="sh -c edit",
    )
    image = Image.get("committed:1", store=store)
    assert image.id == rec.id and len(image.layer_dirs) == 2
    assert image.config.cmd == ("echo", "hi")
    assert image.config.env == ("PATH=/bin", "A=3", "B=2")
    assert image.config.exposed_ports == ("8080/tcp",) and image.config.labels == {"k": "v"}
    cfg = json.loads(store.read_blob(rec.id))
    assert cfg["author"] == "someone"
    assert cfg["history"] == [
        # the base had none: a blank entry for its one layer keeps entries and layers paired
        {"created": "2024-01-01T00:00:00Z", "created_by": ""},
        {
            "created": cfg["created"],
            "created_by": "sh -c edit",
            "author": "someone",
            "comment": "a message",
        },
    ]
    man = json.loads(store.read_blob(rec.manifest_digest))
    assert man["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert man["layers"][-1]["digest"] == cfg["rootfs"]["diff_ids"][-1]
    fresh = tmp_path / "again"
    fresh.mkdir()
    with overlay(list(reversed(image.layer_dirs)), fresh / "u", fresh / "w", fresh / "m") as m:
        assert listing(m, top_mtime=False) == expected


def test_a_bad_change_leaves_nothing_in_the_store(tmp_path, store, base_image):
    from sandkit.images.commit import commit_upper

    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("x")
    before = sorted(p.name for p in (store.home / "blobs" / "sha256").iterdir())
    for bad in ("ONBUILD RUN x", "CMD [1, 2]", "EXPOSE 99999", "ENV", "LABEL =x"):
        with pytest.raises(ImageError, match="commit change"):
            commit_upper(store, store.record(base_image.id), upper, changes=[bad])
    assert sorted(p.name for p in (store.home / "blobs" / "sha256").iterdir()) == before
    assert list((store.home / "tmp").iterdir()) == []
    assert len(store.records()) == 1
