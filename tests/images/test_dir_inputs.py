"""Directory inputs of `Image.load` stay inside their directory (issue 15, hole 4).

A docker-save or OCI layout directory is the attacker's: its files may be symlinks to host
files, FIFOs or links to devices. Each must be refused with an ImageError naming the file, and
nothing may be stored; links that stay inside the directory (Docker's reused layers) still load.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import pytest

from sandkit.errors import ImageError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .conftest import oci_layout, sha, tar_bytes
from .smallfs import small_tmpfs

LAYER = tar_bytes([("hello", "file", b"hello from the layer\n")])


def docker_save_dir(path: Path, layer: bytes = LAYER) -> Path:
    """A classic `docker save` directory: manifest.json, <id>.json config, <id>/layer.tar."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    path.mkdir()
    (path / config_name).write_bytes(config)
    (path / "l1").mkdir()
    (path / "l1" / "layer.tar").write_bytes(layer)
    manifest = [{"Config": config_name, "RepoTags": ["test/dir:1"], "Layers": ["l1/layer.tar"]}]
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _config_name(archive: Path) -> str:
    return json.loads((archive / "manifest.json").read_text())[0]["Config"]


def assert_nothing_stored(store: Store) -> None:
    assert store.records() == []
    assert list((store.home / "blobs" / "sha256").iterdir()) == []
    assert list((store.home / "layers").iterdir()) == []
    assert list((store.home / "tmp").iterdir()) == []


def test_a_docker_save_directory_loads(store: Store, tmp_path: Path):
    image = Image.load(docker_save_dir(tmp_path / "save"), store=store)
    assert (image.layer_dirs[0] / "hello").read_bytes() == b"hello from the layer\n"


def test_a_symlink_that_stays_inside_is_followed(store: Store, tmp_path: Path):
    """Docker's classic format links a reused layer to the first copy, relatively."""
    archive = docker_save_dir(tmp_path / "save")
    (archive / "l2").mkdir()
    os.rename(archive / "l1" / "layer.tar", archive / "l2" / "layer.tar")
    os.symlink("../l2/layer.tar", archive / "l1" / "layer.tar")
    image = Image.load(archive, store=store)
    assert (image.layer_dirs[0] / "hello").exists()


def test_a_config_symlinked_to_a_root_only_host_file_is_refused(store: Store, tmp_path: Path):
    archive = docker_save_dir(tmp_path / "save")
    # The host's secret is a valid config for this very image: following the link would load.
    secret = tmp_path / "host-secret.json"
    os.rename(archive / _config_name(archive), secret)
    os.chmod(secret, 0o600)
    os.symlink(secret, archive / _config_name(archive))
    with pytest.raises(ImageError, match="symlink that leads outside the directory") as err:
        Image.load(archive, store=store)
    assert _config_name(archive) in str(err.value)
    assert_nothing_stored(store)


def test_a_blob_symlinked_to_a_host_file_is_not_a_hash_oracle(store: Store, tmp_path: Path):
    """Today the digest-mismatch message would print the digest of whatever host file the
    blob links to: a way to test guesses of a file one cannot read."""
    layout = oci_layout(tmp_path / "layout", [LAYER])
    host_file = tmp_path / "host-file"
    host_file.write_bytes(b"the host's private content\n")
    blob = next(
        p
        for p in (layout / "blobs" / "sha256").iterdir()
        if p.read_bytes() == gzip.compress(LAYER, mtime=0)
    )
    blob.unlink()
    os.symlink(host_file, blob)
    with pytest.raises(ImageError, match="symlink that leads outside") as err:
        Image.load(layout, store=store)
    assert hashlib.sha256(host_file.read_bytes()).hexdigest() not in str(err.value)
    assert_nothing_stored(store)


def test_a_layer_linked_to_dev_zero_is_refused(tmp_path: Path):
    # On a small filesystem of its own: without the fix, the load copies /dev/zero until full.
    with small_tmpfs(tmp_path / "home", "16m") as home:
        store = Store(home)
        archive = docker_save_dir(tmp_path / "save")
        (archive / "l1" / "layer.tar").unlink()
        os.symlink("/dev/zero", archive / "l1" / "layer.tar")
        with pytest.raises(
            ImageError, match=re.escape("'l1/layer.tar' is a symlink that leads outside")
        ):
            Image.load(archive, store=store)
        assert_nothing_stored(store)


def test_a_fifo_does_not_hang_the_load(store: Store, tmp_path: Path):
    archive = docker_save_dir(tmp_path / "save")
    fifo = archive / "l1" / "layer.tar"
    fifo.unlink()
    os.mkfifo(fifo)
    # A deadline, not a synchronisation: should the load block on the FIFO, a writer opens
    # and closes it after 10 s so that the test ends (and fails) instead of hanging.
    unblocked = threading.Event()

    def unblock() -> None:
        unblocked.set()
        os.close(os.open(fifo, os.O_WRONLY))

    timer = threading.Timer(10, unblock)
    timer.start()
    try:
        with pytest.raises(ImageError, match=re.escape("'l1/layer.tar' is not a regular file")):
            Image.load(archive, store=store)
    finally:
        timer.cancel()
    assert not unblocked.is_set()
    assert_nothing_stored(store)


def test_a_manifest_that_is_a_directory_is_refused(store: Store, tmp_path: Path):
    archive = docker_save_dir(tmp_path / "save")
    (archive / _config_name(archive)).unlink()
    (archive / _config_name(archive)).mkdir()
    with pytest.raises(ImageError, match="is not a regular file"):
        Image.load(archive, store=store)
    assert_nothing_stored(store)


def test_without_openat2_no_symlink_is_followed(store: Store, tmp_path: Path, monkeypatch):
    """Before Linux 5.6 (or when seccomp hides openat2) every symlink is refused instead."""
    import errno

    from sandkit.images import fsutil

    def no_openat2(*args: object) -> int:
        raise OSError(errno.ENOSYS, "openat2")

    monkeypatch.setattr(fsutil, "_openat2_beneath", no_openat2)
    archive = docker_save_dir(tmp_path / "save")
    secret = tmp_path / "host-secret.json"
    os.rename(archive / _config_name(archive), secret)
    os.symlink(secret, archive / _config_name(archive))
    with pytest.raises(ImageError, match="symlink"):
        Image.load(archive, store=store)
    assert_nothing_stored(store)
