"""`sandkit diff`, `commit`, `export` and `history` on a detached container, as a user runs them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from images.conftest import oci_layout
from images.test_image_run import busybox_layers

from .conftest import sandkit, sandkit_env

pytestmark = pytest.mark.slow

CHANGES = "echo new > /tmp/new && rm /etc/group"


@pytest.fixture
def changed(tmp_path):
    """A detached container of a stored busybox image, changed by CHANGES."""
    layout = oci_layout(
        tmp_path / "bb", busybox_layers(), ref_name="layers:base", config={"Env": ["PATH=/bin"]}
    )
    assert sandkit("load", "-i", str(layout)).returncode == 0
    r = sandkit("run", "-d", "--name", "layered", "layers:base", "busybox", "sleep", "600")
    assert r.returncode == 0, r.stderr
    try:
        assert sandkit("exec", "layered", "sh", "-c", CHANGES).returncode == 0
        yield "layered"
    finally:
        sandkit("rm", "-f", "layered")
        sandkit("rmi", "-f", "layers:base", "layers:committed")


def test_diff_commit_history_of_a_detached_container(changed):
    diff = sandkit("diff", changed)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == ["C /etc", "D /etc/group", "C /tmp", "A /tmp/new"]

    commit = sandkit(
        "commit", "-c", 'CMD ["cat", "/tmp/new"]', "-m", "by hand", changed, "layers:committed"
    )
    assert commit.returncode == 0, commit.stderr
    image_id = commit.stdout.strip()
    assert image_id.startswith("sha256:")

    ran = sandkit("run", "--rm", "layers:committed")
    assert ran.returncode == 0 and ran.stdout == "new\n", ran.stderr

    history = sandkit("history", "layers:committed")
    assert history.returncode == 0, history.stderr
    header, newest, *older = history.stdout.splitlines()
    assert header.split()[:2] == ["IMAGE", "CREATED"]
    assert newest.startswith(image_id[7:19]) and "sleep 600" in newest and "by hand" in newest
    assert older and all(line.startswith("<missing>") for line in older)


def test_export_to_a_file_and_to_stdout(changed, tmp_path):
    out = tmp_path / "fs.tar"
    r = sandkit("export", "-o", str(out), changed)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert tar.extractfile("tmp/new").read() == b"new\n"  # type: ignore[union-attr]
    assert "etc/group" not in names and "bin/busybox" in names
    streamed = subprocess.run(
        [sys.executable, "-m", "sandkit", "export", changed],
        capture_output=True,
        env=sandkit_env(),
        timeout=60,
        check=False,
    )
    assert streamed.returncode == 0, streamed.stderr
    with tarfile.open(fileobj=io.BytesIO(streamed.stdout)) as tar:
        assert sorted(tar.getnames()) == sorted(names)


def test_diff_of_an_unknown_container_says_so():
    r = sandkit("diff", "no-such-container")
    assert r.returncode == 1 and "no-such-container" in r.stderr


def test_create_start_stop_start_keeps_the_files_and_rm_deletes_them(bb):
    created = sandkit("create", "--name", "kept", bb, "sleep", "600")
    assert created.returncode == 0, created.stderr
    container_id = created.stdout.strip()
    layer = Path(os.environ["SANDKIT_HOME"]) / "containers" / container_id
    try:
        assert sandkit("exec", "kept", "true").returncode != 0  # created, not running yet
        assert sandkit("start", "kept").stdout == "kept\n"
        assert sandkit("exec", "kept", "sh", "-c", "echo kept > /root-file").returncode == 0
        assert sandkit("stop", "-t", "0", "kept").returncode == 0
        assert (layer / "upper" / "root-file").read_text() == "kept\n"
        started = sandkit("start", "kept")
        assert started.returncode == 0, started.stderr
        assert sandkit("exec", "kept", "cat", "/root-file").stdout == "kept\n"
        assert sandkit("diff", "kept").stdout.splitlines() == ["A /root-file"]
    finally:
        removed = sandkit("rm", "-f", "kept")
    assert removed.returncode == 0, removed.stderr
    assert not layer.exists()


def test_a_run_d_container_does_not_start_again_without_its_files(bb):
    assert sandkit("run", "-d", "--name", "gone", bb, "sleep", "600").returncode == 0
    try:
        assert sandkit("stop", "-t", "0", "gone").returncode == 0
        again = sandkit("start", "gone")
        assert again.returncode == 1 and "sandkit create" in again.stderr
    finally:
        sandkit("rm", "-f", "gone")


def test_a_created_container_shows_as_created(bb):
    assert sandkit("create", "--name", "fresh", bb, "sleep", "600").returncode == 0
    try:
        listed = sandkit("ps", "-a", "--format", "json").stdout.splitlines()
        assert any('"fresh"' in line and "Created" in line for line in listed), listed
    finally:
        sandkit("rm", "fresh")
