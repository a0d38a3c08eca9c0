"""`docker cp` and sandkit's copies side by side, on the same image and the same host trees: the
same members come out (path, type, mode, owner, size, link target, content, mtime, hard links),
and Docker's path rules give the same outcome. Needs root and Debian's docker.io (a private
dockerd of tests/dockerd.py; nothing is pulled); elsewhere skipped."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import dockerd
import pytest
from treelisting import listing, make_tree

import sandkit

from .conftest import sandkit as sandkit_cli

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "sandkit-cp-parity/busybox:1"
STARTED = time.time()


@pytest.fixture(scope="module")
def docker(private_docker) -> dict[str, str]:
    return private_docker


@pytest.fixture(scope="module")
def rootfs(busybox_dir, tmp_path_factory) -> Path:
    """busybox, plus an /area for the path rules: a directory, a file, a symlink to each."""
    root = tmp_path_factory.mktemp("cp-parity") / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    (root / "area" / "dir" / "old").mkdir(parents=True)
    (root / "area" / "file").write_text("old file\n")
    os.symlink("dir", root / "area" / "dirlink")
    os.symlink("/area/file", root / "area" / "filelink")
    return root


@pytest.fixture(scope="module")
def image(docker, rootfs) -> str:
    return dockerd.import_rootfs(docker, rootfs, IMAGE)


@contextlib.contextmanager
def docker_container(docker: dict[str, str], image: str) -> Iterator[str]:
    """A created (not started) container: `docker cp` works on those, and nothing runs."""
    name = f"sk-cp-{os.getpid()}-{time.monotonic_ns()}"
    dockerd.run(docker, "create", "--pull", "never", "--network", "none", "--name", name, image)
    try:
        yield name
    finally:
        dockerd.run(docker, "rm", "-f", name, check=False)


def _docker_cp(docker: dict[str, str], *argv: str) -> bool:
    r = dockerd.run(docker, "cp", *argv, check=False)
    return r.returncode == 0


def _rows(data: bytes, *, recent_as: int = 0) -> list[tuple]:
    """The members of a tar, as comparable rows; mtimes made during the test are not compared
    (the copies were made at different moments), older ones are."""
    rows = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            content = tar.extractfile(m).read() if m.isreg() else b""
            rows.append(
                (
                    m.name.rstrip("/"),
                    m.type,
                    oct(m.mode & 0o7777),  # Docker also puts the type bits there (c_ISDIR)
                    f"{m.uid}:{m.gid}",
                    m.size,
                    m.linkname,
                    hashlib.sha256(content).hexdigest()[:16],
                    recent_as if m.mtime >= STARTED - 5 else int(m.mtime),
                )
            )
    return sorted(rows)


def _normalized(rows: list[tuple]) -> list[tuple]:
    return [(*r[:6], 0 if r[6] >= STARTED - 5 else r[6], r[7]) for r in rows]


# --- a whole tree, in and out ---------------------------------------------------------------


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archive"])
def test_same_tree_in_and_out(docker, image, rootfs, tmp_path, archive):
    tree = make_tree(tmp_path / "tree", owners=True)
    flags = ["-a"] if archive else []
    with docker_container(docker, image) as name:
        assert _docker_cp(docker, *flags, str(tree), f"{name}:/copied")
        docker_inside = dockerd.run(docker, "cp", f"{name}:/copied", "-").stdout
        assert _docker_cp(docker, *flags, f"{name}:/copied", str(tmp_path / "docker-out"))
    with sandkit.Container(sandkit.Image.from_directory(rootfs)) as c:
        c.copy_in(tree, "/copied", archive=archive)
        ours_inside = b"".join(c.get_archive("/copied"))
        c.copy_out("/copied", tmp_path / "sandkit-out", archive=archive)
    assert _rows(ours_inside) == _rows(docker_inside)
    # Docker ignores -a coming out (all is the caller's); sandkit's archive=True keeps the
    # owners there too, on purpose: compared without them.
    theirs = _normalized(listing(tmp_path / "docker-out", owners=not archive))
    assert _normalized(listing(tmp_path / "sandkit-out", owners=not archive)) == theirs


def test_both_refuse_a_link_that_climbs_out_of_the_host_destination(
    docker, image, rootfs, tmp_path
):
    tree = make_tree(tmp_path / "tree", owners=False, escaping=True)
    with docker_container(docker, image) as name:
        assert _docker_cp(docker, str(tree), f"{name}:/copied")
        docker_inside = dockerd.run(docker, "cp", f"{name}:/copied", "-").stdout
        assert not _docker_cp(docker, f"{name}:/copied", str(tmp_path / "docker-out"))
    with sandkit.Container(sandkit.Image.from_directory(rootfs)) as c:
        c.copy_in(tree, "/copied")
        assert _rows(b"".join(c.get_archive("/copied"))) == _rows(docker_inside)
        with pytest.raises(sandkit.CopyError, match="points outside"):
            c.copy_out("/copied", tmp_path / "sandkit-out")
    assert not (tmp_path / "sandkit-out").exists()  # Docker leaves a half-made tree behind


# --- the path rules -------------------------------------------------------------------------

# (source, destination) of `cp`, host to container; the host side is made by _host_side.
IN_CASES = [
    ("file", "/area/dir"),
    ("file", "/area/new"),
    ("file", "/area/new/"),
    ("file", "/area/file"),
    ("file", "/area/missing/x"),
    ("file", "/area/dirlink"),
    ("file", "/area/filelink"),
    ("dir", "/area/dirlink"),
    ("dir", "/area/dir"),
    ("dir", "/area/newdir"),
    ("dir/.", "/area/dir"),
    ("dir/", "/area/newdir"),
    ("dir", "/area/file"),
    ("link-to-dir", "/area/dir"),
]
# container to host; the host destination holds "existing-dir" and "existing-file".
OUT_CASES = [
    ("/area/dir", "existing-dir"),
    ("/area/dir", "new"),
    ("/area/dir/.", "existing-dir"),
    ("/area/dir/", "new"),
    ("/area/file", "existing-file"),
    ("/area/file", "existing-dir"),
    ("/area/file/", "new"),
    ("/area/dir", "existing-file"),
    ("/area/dirlink", "new"),
    ("/area/filelink", "new"),
    ("/area/nothing", "new"),
    ("/area/dir", "new/"),
]


def _host_side(base: Path) -> Path:
    base.mkdir()
    (base / "dir" / "sub").mkdir(parents=True)
    (base / "dir" / "sub" / "f").write_text("f\n")
    (base / "file").write_text("new file\n")
    os.symlink("dir", base / "link-to-dir")
    return base


def _host_dest(base: Path) -> Path:
    base.mkdir()
    (base / "existing-dir").mkdir()
    (base / "existing-file").write_text("was here\n")
    return base


@pytest.mark.parametrize(("src", "dst"), IN_CASES, ids=[f"{s}->{d}" for s, d in IN_CASES])
def test_same_rules_into_the_container(docker, image, rootfs, tmp_path, src, dst):
    host = _host_side(tmp_path / "host")
    with docker_container(docker, image) as name:
        docker_ok = _docker_cp(docker, f"{host}/{src}", f"{name}:{dst}")
        theirs = dockerd.run(docker, "cp", f"{name}:/area", "-").stdout
    with sandkit.Container(sandkit.Image.from_directory(rootfs)) as c:
        try:
            c.copy_in(f"{host}/{src}", dst)
            ours_ok = True
        except sandkit.CopyError:
            ours_ok = False
        ours = b"".join(c.get_archive("/area"))
    assert ours_ok == docker_ok
    assert _rows(ours) == _rows(theirs)


@pytest.mark.parametrize(("src", "dst"), OUT_CASES, ids=[f"{s}->{d}" for s, d in OUT_CASES])
def test_same_rules_out_of_the_container(docker, image, rootfs, tmp_path, src, dst):
    theirs, ours = _host_dest(tmp_path / "docker"), _host_dest(tmp_path / "sandkit")
    with docker_container(docker, image) as name:
        docker_ok = _docker_cp(docker, f"{name}:{src}", str(theirs / dst))
    with sandkit.Container(sandkit.Image.from_directory(rootfs)) as c:
        try:
            c.copy_out(src, ours / dst)
            ours_ok = True
        except sandkit.CopyError:
            ours_ok = False
    assert ours_ok == docker_ok
    assert _normalized(listing(ours, top_mtime=False)) == _normalized(
        listing(theirs, top_mtime=False)
    )


def test_cli_tar_on_stdout_matches_docker(docker, image, rootfs, tmp_path):
    """`sandkit cp CTR:SRC -` writes the tar `docker cp CTR:SRC -` writes (member by member)."""
    with docker_container(docker, image) as name:
        theirs = dockerd.run(docker, "cp", f"{name}:/area", "-").stdout
    started = sandkit_cli("run", "-d", "--name", "cp-parity", str(rootfs), "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        r = subprocess.run(
            [*_cli(), "cp", "cp-parity:/area", "-"], capture_output=True, check=False
        )
        assert r.returncode == 0, r.stderr
    finally:
        sandkit_cli("rm", "-f", "cp-parity")
    assert _rows(r.stdout) == _rows(theirs)


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "sandkit"]
