"""The hostile-tar corpus: every layer is refused or contained, and the canary never changes."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from sandkit.errors import ImageError, UnsafeLayerError
from sandkit.images.layers import apply_tar

from .conftest import tar_bytes
from .hostile_tar import END, header, member, padded, pax


def apply(tmp_path: Path, entries: list, name: str | None = None) -> Path:
    root = tmp_path / (name or f"layer{len(list(tmp_path.glob('layer*')))}")
    root.mkdir()
    apply_tar(io.BytesIO(tar_bytes(entries)), root)
    return root


def outside_the_layers(tmp_path: Path) -> dict[str, tuple[int, int]]:
    """Everything under tmp_path but the layer directories: name -> (size, mtime)."""
    found = {}
    for path in tmp_path.rglob("*"):  # (does not follow symlinks into other directories)
        relative = path.relative_to(tmp_path)
        if not relative.parts[0].startswith("layer"):
            info = path.lstat()
            found[str(relative)] = (info.st_size, info.st_mtime_ns)
    return found


def refused(tmp_path: Path, entries: list, exc: type[Exception] = UnsafeLayerError) -> None:
    before = outside_the_layers(tmp_path)
    with pytest.raises(exc) as info:
        apply(tmp_path, entries)
    assert "layer" in str(info.value)  # a message that says what was wrong
    # nothing escaped: beside the layer directories, nothing was made, removed or changed
    assert outside_the_layers(tmp_path) == before


def test_dotdot_names_refused(tmp_path, canary):
    refused(tmp_path, [("../canary/file", "file", b"pwned")])
    refused(tmp_path, [("a/../../canary/file", "file", b"pwned")])
    # next to the canary, not in it; and refused for an entry after it, had it been let through
    refused(tmp_path, [("../escaped", "file", b"pwned"), ("/absolute", "file", b"")])


def test_absolute_names_refused(tmp_path, canary):
    refused(tmp_path, [(str(canary / "file"), "file", b"pwned")])
    refused(tmp_path, [("/", "symlink", str(canary))])


def test_symlink_then_write_through_it_same_layer(tmp_path, canary):
    refused(tmp_path, [("evil", "symlink", str(canary)), ("evil/file", "file", b"pwned")])
    refused(tmp_path, [("evil", "symlink", "../canary"), ("evil/new", "file", b"pwned")])


def test_symlink_then_write_through_it_across_layers(tmp_path, canary):
    # Each layer is applied into its own directory: the upper layer's `evil/` is a real directory
    # there, so nothing can follow the lower layer's symlink.
    lower = apply(tmp_path, [("evil", "symlink", str(canary))], "lower")
    upper = apply(tmp_path, [("evil/file", "file", b"pwned")], "upper")
    assert (lower / "evil").is_symlink()
    assert (upper / "evil").is_dir() and not (upper / "evil").is_symlink()
    assert (upper / "evil" / "file").read_bytes() == b"pwned"


def test_hardlink_to_outside_refused(tmp_path, canary):
    refused(tmp_path, [("link", "hardlink", "../canary/file")])
    refused(tmp_path, [("link", "hardlink", str(canary / "file"))])


def test_hardlink_to_symlink_links_the_symlink_itself(tmp_path, canary):
    root = apply(tmp_path, [("s", "symlink", str(canary / "file")), ("h", "hardlink", "s")])
    assert (root / "h").is_symlink() and os.readlink(root / "h") == str(canary / "file")
    # writing through a hardlink entry that points at a symlink must not reach the target
    refused(tmp_path, [("s", "symlink", str(canary)), ("h", "hardlink", "s/file")], ImageError)


def test_hardlink_through_symlinked_dir_refused(tmp_path, canary):
    refused(tmp_path, [("d", "symlink", str(canary)), ("x", "hardlink", "d/file")])


def test_symlink_named_dot_or_root_refused(tmp_path, canary):
    refused(tmp_path, [(".", "symlink", str(canary))])
    refused(tmp_path, [("./", "symlink", str(canary))])
    refused(tmp_path, [("/", "symlink", str(canary))])


def test_whiteout_of_dotdot_or_dot_refused(tmp_path, canary):
    refused(tmp_path, [(".wh..", "file", b"")])
    refused(tmp_path, [("sub/.wh..", "file", b"")])
    refused(tmp_path, [("../.wh.file", "file", b"")])


def test_whiteout_through_symlink_refused(tmp_path, canary):
    refused(tmp_path, [("evil", "symlink", str(canary)), ("evil/.wh.file", "file", b"")])
    refused(tmp_path, [("evil", "symlink", str(canary)), ("evil/.wh..wh..opq", "file", b"")])


def test_directory_over_symlink_replaces_it(tmp_path, canary):
    root = apply(
        tmp_path, [("d", "symlink", str(canary)), ("d", "dir", None), ("d/file", "file", b"inside")]
    )
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert (root / "d" / "file").read_bytes() == b"inside"


def test_file_over_directory_and_back(tmp_path):
    root = apply(
        tmp_path,
        [
            ("x", "dir", None),
            ("x/y", "file", b"1"),
            ("x", "file", b"now a file"),
            ("z", "file", b"f"),
            ("z", "dir", None),
        ],
    )
    assert (root / "x").read_bytes() == b"now a file"
    assert (root / "z").is_dir()


def test_absurd_size_refused(tmp_path, canary):
    data = bytearray(tar_bytes([("big", "file", b"x" * 10)]))
    # patch the size field (octal, 12 bytes at offset 124 of the header after the pax header)
    hdr = data.find(b"big\0")
    data[hdr + 124 : hdr + 136] = b"77777777777\0"  # 8 GiB - 1
    with pytest.raises(ImageError):
        apply_tar(io.BytesIO(bytes(data)), (tmp_path / "l").mkdir() or tmp_path / "l")


def test_absurd_names_refused(tmp_path, canary):
    refused(tmp_path, [("a" * 300, "file", b"")])
    refused(tmp_path, [("/".join(["d" * 200] * 30), "file", b"")])


def test_truncated_tar_is_an_image_error(tmp_path):
    data = tar_bytes([("f", "file", b"x" * 5000)])[:1200]
    with pytest.raises(ImageError, match="truncated or corrupt"):
        apply_tar(io.BytesIO(data), (tmp_path / "l").mkdir() or tmp_path / "l")


def test_overlay_xattrs_from_layer_are_never_applied(tmp_path):
    root = apply(tmp_path, [("d", "dir", None, {"xattrs": {"trusted.overlay.redirect": "/etc"}})])
    assert "trusted.overlay.redirect" not in os.listxattr(root / "d")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="devices need root")
def test_devices_as_root(tmp_path):
    root = apply(tmp_path, [("null", "chr", (1, 3), {"mode": 0o666}), ("fifo", "fifo", None)])
    st = os.lstat(root / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)


# --- hand-built headers tarfile would never write -----------------------------------------------


def apply_raw(tmp_path: Path, tar: bytes) -> Path:
    root = tmp_path / f"layer{len(list(tmp_path.glob('layer*')))}"
    root.mkdir()
    apply_tar(io.BytesIO(tar + END), root)
    return root


def refused_raw(tmp_path: Path, tar: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        apply_raw(tmp_path, tar)


def test_symlink_loop_then_write_through_it_refused(tmp_path, canary):
    refused(tmp_path, [("a", "symlink", "b"), ("b", "symlink", "a"), ("a/x", "file", b"pwned")])
    refused(tmp_path, [("self", "symlink", "self"), ("self/x", "file", b"pwned")])


def test_entry_replacing_its_own_parent_with_a_symlink(tmp_path, canary):
    # d/ is replaced by a symlink to the canary after a file was written in it: the next entry
    # under d/ must not follow the new symlink
    refused(
        tmp_path,
        [
            ("d", "dir", None),
            ("d/f", "file", b"1"),
            ("d", "symlink", str(canary)),
            ("d/g", "file", b"pwned"),
        ],
    )
    refused(
        tmp_path,
        [
            ("d", "dir", None),
            ("d/f", "file", b"1"),
            ("d", "symlink", "../canary"),
            ("d/f", "hardlink", "d/f"),
        ],
        ImageError,
    )


def test_hard_links_to_a_directory_or_to_themselves_refused(tmp_path, canary):
    refused(tmp_path, [("d", "dir", None), ("h", "hardlink", "d")])
    refused(tmp_path, [("f", "file", b"1"), ("f", "hardlink", "f")], ImageError)
    refused(
        tmp_path, [("d", "dir", None), ("d/f", "file", b"1"), ("d", "hardlink", "d/f")], ImageError
    )


def test_duplicate_names_in_odd_orders_end_as_the_last_entry_says(tmp_path):
    root = apply(
        tmp_path,
        [
            ("a", "file", b"1"),
            ("a", "dir", None),
            ("a/b", "file", b"2"),
            ("a", "symlink", "x"),
            ("a", "dir", None, {"mode": 0o700}),
            ("a", "dir", None, {"mode": 0o750}),
            ("c/d/e", "file", b"3"),
            ("c", "file", b"4"),
            ("c", "dir", None),
        ],
    )
    assert (root / "a").is_dir() and os.listdir(root / "a") == []
    assert stat.S_IMODE(os.lstat(root / "a").st_mode) == 0o750
    assert (root / "c").is_dir() and os.listdir(root / "c") == []


def test_nul_bytes_in_names_and_targets_refused(tmp_path, canary):
    refused_raw(tmp_path, pax({"path": "a\0b"}) + member("x", b"pwned"), "NUL")
    refused_raw(tmp_path, pax({"linkpath": "/etc\0passwd"}) + member("s", typeflag=b"2"), "NUL")


def test_absurd_owners_sizes_and_device_numbers_refused(tmp_path):
    refused_raw(tmp_path, pax({"uid": "99999999999"}) + member("f", b"x"), "owner 99999999999:0")
    refused_raw(tmp_path, pax({"gid": "4294967295"}) + member("f", b"x"), "owner 0:4294967295")
    negative = b"\xff" * 12  # base-256 -1
    refused_raw(tmp_path, header("f", b"0", raw={124: negative}), "size -1")
    huge = b"\x80" + (1 << 40).to_bytes(7, "big")
    refused_raw(tmp_path, header("null", b"3", raw={329: huge}), "device number")


def test_absurd_mtimes_become_the_epoch_as_docker_does(tmp_path):
    # Docker (pkg/system Chtimes) sets times before 1970 or past the kernel's range to the epoch.
    root = apply_raw(
        tmp_path,
        pax({"mtime": "1e400"})
        + member("inf", b"x")
        + pax({"mtime": "nan"})
        + member("nan", b"x")
        + pax({"mtime": "-5"})
        + member("before", b"x")
        + header("huge", b"5", raw={136: b"\x80" + (1 << 80).to_bytes(11, "big")})
        + pax({"mtime": "1700000000.5"})
        + member("fine", b"x"),
    )
    assert [os.lstat(root / n).st_mtime_ns for n in ("inf", "nan", "before", "huge")] == [
        0,
        0,
        0,
        0,
    ]
    assert os.lstat(root / "fine").st_mtime_ns == 1_700_000_000_500_000_000


def test_malformed_sparse_maps_are_image_errors(tmp_path):
    # GNU sparse 1.0: the map is in the data; one that ends early or holds no numbers
    for data in (b"5\n1\n", b"x\ny\n", b"99999999999999999999\n"):
        sparse = pax(
            {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.name": "s",
                "GNU.sparse.realsize": "10",
            }
        )
        refused_raw(tmp_path, sparse + member("s", padded(data)), "layer")
    # pieces out of order or past the file's size
    for pieces in ("0,5,0,5", "8,5"):
        sparse = pax({"GNU.sparse.map": pieces, "GNU.sparse.size": "10", "GNU.sparse.name": "s"})
        refused_raw(tmp_path, sparse + member("s", b"x" * 10), "pieces")


def test_pax_global_headers_are_ignored_as_docker_does(tmp_path):
    # tarfile applied a global header to every later member: a global "path" renamed them all,
    # so the last one silently replaced the others.
    root = apply_raw(
        tmp_path, pax({"path": "evil", "uid": "1234"}, b"g") + member("a", b"1") + member("b", b"2")
    )
    assert sorted(os.listdir(root)) == ["a", "b"]
    assert os.lstat(root / "a").st_uid == os.getuid()
