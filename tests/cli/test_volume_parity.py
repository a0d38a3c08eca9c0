"""Docker's named volumes and sandkit's side by side: the same fields from `volume inspect` and
`volume ls`, and the same tree in a fresh volume filled from the same image path (owners, modes,
times, links), including when the volume was not empty. Needs root and Debian's docker.io (a
private dockerd of tests/dockerd.py; nothing is pulled); elsewhere skipped."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import dockerd
import pytest
from treelisting import listing, make_tree

import sandkit

from .conftest import sandkit as sandkit_cli

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.usefixtures("own_home")]

IMAGE = "sandkit-volume-parity/busybox:1"
STARTED = time.time()


def _recent_as_now(rows: list[tuple]) -> list[tuple]:
    """Times of the test's own making (the copies were made at different moments) shown as
    "now"; the image's, older, compared as they are. Docker gives a directory that receives
    entries the time of the copy, and an empty one the image's."""
    return [(*r[:6], "now" if r[6] >= STARTED - 5 else r[6], r[7]) for r in rows]


@pytest.fixture(scope="module")
def docker(private_docker) -> dict[str, str]:
    return private_docker


@pytest.fixture(scope="module")
def rootfs(busybox_dir, tmp_path_factory) -> Path:
    """busybox with a tree at /data and an empty 0700 directory owned by 999:999 at /pgdata."""
    root = tmp_path_factory.mktemp("volume-parity") / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    make_tree(root / "data", owners=True)
    (root / "pgdata").mkdir(mode=0o700)
    os.chown(root / "pgdata", 999, 999)
    return root


@pytest.fixture(scope="module")
def image(docker, rootfs) -> str:
    return dockerd.import_rootfs(docker, rootfs, IMAGE)


def _docker_inspect(docker: dict[str, str], name: str) -> dict:
    (volume,) = json.loads(dockerd.run(docker, "volume", "inspect", name).stdout)
    return volume


def test_inspect_and_ls_show_the_same_fields(docker):
    for tool in ("docker", "sandkit"):
        argv = ["volume", "create", "--label", "team=db", "parity-fields"]
        made = dockerd.run(docker, *argv) if tool == "docker" else sandkit_cli(*argv)
        assert made.returncode == 0
    theirs = _docker_inspect(docker, "parity-fields")
    (ours,) = json.loads(sandkit_cli("volume", "inspect", "parity-fields").stdout)
    assert set(ours) == set(theirs)
    for key in ("Driver", "Labels", "Name", "Options", "Scope"):
        assert ours[key] == theirs[key], key
    assert ours["Mountpoint"].endswith("/volumes/parity-fields/_data")
    assert theirs["Mountpoint"].endswith("/volumes/parity-fields/_data")
    assert len(ours["CreatedAt"]) == len(theirs["CreatedAt"])
    their_ls = dockerd.run(docker, "volume", "ls").stdout.decode().split()
    our_ls = sandkit_cli("volume", "ls").stdout.split()
    assert our_ls == their_ls
    dockerd.run(docker, "volume", "rm", "parity-fields")
    sandkit_cli("volume", "rm", "parity-fields")


# Shell run by a first container before the one whose volume is compared: "" for a fresh volume.
FIRST_USE = {
    "fresh": "",
    "emptied": "rm -rf /{path}/* /{path}/.??*",  # empty again: filled again at the next mount
    "not-empty": "rm -rf /{path}/* && echo mine > /{path}/mine",
}


@pytest.mark.parametrize("first_use", list(FIRST_USE))
@pytest.mark.parametrize("path", ["data", "pgdata"])
def test_a_volume_is_filled_from_the_image_as_docker_fills_it(
    docker, image, rootfs, path, first_use
):
    name = f"parity-{path}-{first_use}"
    script = FIRST_USE[first_use].format(path=path)
    run = ["run", "--rm", "--pull", "never", "--network", "none", "-v", f"{name}:/{path}", image]
    if script:
        dockerd.run(docker, *run, "sh", "-c", script)
    dockerd.run(docker, *run, "true")
    theirs = Path(_docker_inspect(docker, name)["Mountpoint"])
    ours_image = sandkit.Image.from_directory(rootfs)
    with sandkit.Volume(name) as volume:
        if script:
            with sandkit.Container(ours_image, mounts=[f"{name}:/{path}"]) as c:
                c.exec(["sh", "-c", script], check=True)
        with sandkit.Container(ours_image, mounts=[f"{name}:/{path}"]):
            pass
        ours = volume.mountpoint
        assert _recent_as_now(listing(ours)) == _recent_as_now(listing(theirs))
    dockerd.run(docker, "volume", "rm", name)
