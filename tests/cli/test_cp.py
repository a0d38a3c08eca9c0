"""`sandkit cp`: both ways, a tar on stdin and stdout, and the errors of its arguments. (Its
parity with `docker cp` is in test_copy_parity.py.)"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

import pytest
from treelisting import listing, make_tree

from .conftest import sandkit, sandkit_env

pytestmark = pytest.mark.slow


@pytest.fixture
def detached(bb):
    r = sandkit("run", "-d", "--name", "cpbox", bb, "sleep", "600")
    assert r.returncode == 0, r.stderr
    yield "cpbox"
    sandkit("rm", "-f", "cpbox")


def _cp(*argv: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sandkit", "cp", *argv],
        input=input,
        capture_output=True,
        env=sandkit_env(),
        timeout=60,
        check=False,
    )


def test_cp_both_ways_and_tar_streams(detached, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=False)
    assert _cp(str(tree), "cpbox:/tmp/").returncode == 0
    out = _cp("cpbox:tmp/tree", str(tmp_path / "back"))  # relative: from the container's /
    assert out.returncode == 0, out.stderr
    assert listing(tmp_path / "back") == listing(tree)

    streamed = _cp("cpbox:/tmp/tree", "-")
    assert streamed.returncode == 0, streamed.stderr
    with tarfile.open(fileobj=io.BytesIO(streamed.stdout)) as tar:
        names = tar.getnames()
    assert "tree/sub/deeper/data.bin" in names and "tree/private/secret" in names

    assert sandkit("exec", "cpbox", "mkdir", "/tmp/other").returncode == 0
    r = _cp("-", "cpbox:/tmp/other", input=streamed.stdout)
    assert r.returncode == 0, r.stderr
    r = sandkit("exec", "cpbox", "cat", "/tmp/other/tree/hello.txt")
    assert r.stdout == "hello\n"


def test_cp_errors(detached, tmp_path):
    (tmp_path / "f").write_text("x")
    cases = [
        ((str(tmp_path / "f"), str(tmp_path / "g")), "at least one container"),
        (("cpbox:/a", "cpbox:/b"), "between containers"),
        (("cpbox:/no/such", str(tmp_path / "x")), "no such file or directory in the container"),
        ((str(tmp_path / "f"), "cpbox:/no/such/dir/"), "must exist"),
        (("-", "cpbox:/etc/passwd"), "extracted into a directory"),
        ((str(tmp_path / "f"), "nobox:/tmp"), "nobox"),
    ]
    for argv, message in cases:
        r = _cp(*argv, input=b"")
        assert r.returncode == 1, (argv, r.stderr)
        assert message in r.stderr.decode(), (argv, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
