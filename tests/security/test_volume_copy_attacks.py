"""Attacks on named volumes and on copies, from inside a container (root in it, Docker's default
capabilities) and from what it leaves behind: planted links and special files, names made to
escape, sparse files that would fill the host's disk, a tree swapped while it is copied out,
two containers filling one volume at once, a mount target the image makes a symlink."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

import sandkit

pytestmark = pytest.mark.slow

_SPARSE = 1 << 30  # apparent size of the planted sparse file


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """A home of the test's own: its volumes are all there is."""
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))


def _sh(c: sandkit.Container, script: str) -> str:
    return c.exec(["sh", "-c", script], check=True).stdout.decode()


# --- copy_out: host disk ------------------------------------------------------------------------


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_huge_sparse_file_copied_out_stays_sparse_on_the_host(busybox, tmp_path):
    """A file of 1 GiB of holes costs the container nothing; copied out byte for byte it would
    cost the host 1 GiB of disk (1 TiB as easily: the host's disk fills). The holes stay holes,
    the data between them is copied."""
    with sandkit.Container(busybox) as c:
        _sh(
            c,
            f"truncate -s {_SPARSE} /big && echo head | dd of=/big conv=notrunc 2>/dev/null && "
            f"echo tail | dd of=/big bs=1 seek={_SPARSE - 5} conv=notrunc 2>/dev/null",
        )
        c.copy_out("/big", tmp_path / "big")
    out = tmp_path / "big"
    assert out.stat().st_size == _SPARSE
    assert _allocated(out) < 1 << 20
    with open(out, "rb") as f:
        assert f.read(5) == b"head\n"
        f.seek(_SPARSE - 5)
        assert f.read() == b"tail\n"
