"""Applied layers stacked by overlayfs give the tree the OCI changeset rules say (root mounts)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

from sandkit.images import Image, LayerWarning
from sandkit.images.layers import apply_tar

from .conftest import oci_layout, tar_bytes, tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs here needs root")

LAYERS = [
    tar_bytes(
        [
            ("etc", "dir", None),
            ("etc/keep", "file", b"k"),
            ("etc/gone", "file", b"g"),
            ("opq", "dir", None),
            ("opq/old1", "file", b"1"),
            ("opq/sub", "dir", None),
            ("opq/sub/x", "file", b"x"),
            ("d2f", "dir", None),
            ("d2f/inner", "file", b"i"),
            ("f2d", "file", b"was a file"),
            ("lnk", "symlink", "etc/keep"),
            ("data", "file", b"shared", {"mode": 0o640, "uid": 1000, "gid": 1000}),
            ("hard", "hardlink", "data"),
            ("wdir", "dir", None),
            ("wdir/a", "file", b"a"),
        ]
    ),
    tar_bytes(
        [
            ("etc/.wh.gone", "file", b""),
            ("opq/.wh..wh..opq", "file", b""),
            ("opq/new", "file", b"n"),
            ("d2f", "file", b"now a file"),
            ("f2d", "dir", None),
            ("f2d/child", "file", b"c"),
            (".wh.wdir", "file", b""),
            ("wdir", "dir", None),
            ("wdir/b", "file", b"b"),
        ]
    ),
    tar_bytes(
        [
            ("etc/gone", "file", b"back again"),
            ("etc/.wh.keep", "file", b""),
            ("opq/.wh.new", "file", b""),
            (".wh.lnk", "file", b""),
            ("added", "file", b"3"),
        ]
    ),
]

EXPECTED = {
    "etc": "dir",
    "etc/gone": "back again",
    "opq": "dir",
    "d2f": "now a file",
    "f2d": "dir",
    "f2d/child": "c",
    "data": "shared",
    "hard": "shared",
    "wdir": "dir",
    "wdir/b": "b",
    "added": "3",
}


def mount_overlay(layer_dirs: list[Path], target: Path, *extra: str) -> None:
    lower = ":".join(str(d) for d in reversed(layer_dirs))  # overlayfs lists the top layer first
    opts = ",".join([f"lowerdir={lower}", *extra])
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
        check=True,
        capture_output=True,
    )


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_three_layers_merge_like_the_spec(tmp_path, store, compress):
    image = Image.load(oci_layout(tmp_path / "layout", LAYERS, compress=compress), store=store)
    assert len(image.layer_dirs) == 3
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(list(image.layer_dirs), merged)
    try:
        assert tree(merged) == EXPECTED
        st = os.stat(merged / "data")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
        assert os.stat(merged / "data").st_ino == os.stat(merged / "hard").st_ino
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.root
@needs_root
def test_fixture_whiteout_image_merges(tmp_path, store, oci_fixtures):
    image = Image.load(oci_fixtures / "ggcr/v1_mutate_testdata/whiteout_dir.tar", store=store)
    merged = tmp_path / "merged"
    merged.mkdir()
    mount_overlay(list(image.layer_dirs), merged)
    try:
        got = tree(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    # the source tree of the fixture, minus what `.wh.a` deleted before `a/` was re-added
    assert got.get("b/bar") == "" and "a" in got
    assert "a/foo" not in got or "a/baz" not in got


def _rootless_child(base: Path) -> None:
    """Runs in a forked child as an unprivileged uid: apply a layer, record the outcome."""
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    root = base / "layer"
    root.mkdir()
    layer = tar_bytes(
        [
            ("dev", "dir", None),
            ("dev/null", "chr", (1, 3), {"mode": 0o666}),
            ("home", "dir", None, {"uid": 1000, "gid": 1000}),
            ("home/f", "file", b"x", {"uid": 1000, "gid": 1000}),
            (".wh.gone", "file", b""),
            ("o", "dir", None),
            ("o/.wh..wh..opq", "file", b""),
            ("ro", "dir", None, {"mode": 0o555}),
            ("ro/inside", "file", b"i"),
        ]
    )
    import io

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_tar(io.BytesIO(layer), root).warn("test")
    (base / "result.json").write_text(
        json.dumps(
            {
                "warnings": [
                    str(w.message) for w in caught if issubclass(w.category, LayerWarning)
                ],
            }
        )
    )


@pytest.mark.root
@needs_root
def test_rootless_apply_is_visible_not_silent():
    base = Path(tempfile.mkdtemp(prefix="sandkit-rootless-"))
    try:
        os.chown(base, 65534, 65534)
        os.chmod(base, 0o755)
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                _rootless_child(base)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        root = base / "layer"
        result = json.loads((base / "result.json").read_text())
        placeholder = os.lstat(root / "dev/null")
        assert stat.S_ISREG(placeholder.st_mode) and stat.S_IMODE(placeholder.st_mode) == 0
        assert any("device node" in w and "/dev/null" in w for w in result["warnings"])
        assert any("belong to other users" in w for w in result["warnings"])
        wh = os.lstat(root / "gone")  # unprivileged whiteouts are allowed since Linux 5.8
        assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
        assert os.getxattr(root / "o", "user.overlay.opaque") == b"y"
        assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
        assert (root / "ro/inside").read_bytes() == b"i"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)
