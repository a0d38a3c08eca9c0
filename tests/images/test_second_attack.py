"""Disk budget holes found by a second attack on the fixes of issue 15 (see test_disk_budget.py):
what a layer entry takes on disk beyond its data, which the budget must charge too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandkit.errors import ImageError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .conftest import oci_layout, tar_bytes

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="as the budget tests"),
]

ENTRIES = 4000  # each takes a 4 KiB block of its own: 16 MiB in all, against an 8 MiB limit


def _used_bytes(root: Path) -> int:
    """What the files under ``root`` take on disk (blocks, xattr blocks included)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _load_under_8m(tmp_path: Path, monkeypatch, layer: bytes) -> str:
    layout = oci_layout(tmp_path / "layout", [layer])
    monkeypatch.setenv("SANDKIT_MAX_IMAGE_SIZE", "8m")
    store = Store(tmp_path / "home")
    try:
        Image.load(layout, store=store)
    except ImageError as e:
        return f"refused: {e}"
    return f"loaded, {_used_bytes(store.home / 'layers') >> 20} MiB on disk"


def test_long_symlink_targets_are_charged_their_block(tmp_path: Path, monkeypatch):
    # A symlink target longer than fits in the inode (60 bytes on ext4) takes a data block.
    layer = tar_bytes([(f"l{i}", "symlink", "t" * 3000) for i in range(ENTRIES)])
    outcome = _load_under_8m(tmp_path, monkeypatch, layer)
    assert outcome.startswith("refused") and "8.0 MiB" in outcome, outcome


def test_xattrs_are_charged_their_block(tmp_path: Path, monkeypatch):
    # xattrs that do not fit in the inode take a block of their own (ext4; more on xfs, btrfs).
    layer = tar_bytes(
        [(f"x{i}", "file", b"", {"xattrs": {"user.pad": "v" * 3000}}) for i in range(ENTRIES)]
    )
    outcome = _load_under_8m(tmp_path, monkeypatch, layer)
    assert outcome.startswith("refused") and "8.0 MiB" in outcome, outcome
