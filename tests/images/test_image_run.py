"""Images running in containers. Needs the runtime (sandkit.Container); skipped until it exists."""

from __future__ import annotations

import shutil

import pytest

from sandkit.images import Image

from .conftest import oci_layout, tar_bytes
from .test_overlay_view import EXPECTED, LAYERS

pytestmark = pytest.mark.slow

sandkit = pytest.importorskip("sandkit")
if not hasattr(sandkit, "Container"):
    pytest.skip("the runtime (sandkit.Container) has not landed yet", allow_module_level=True)


def busybox_layers() -> list[bytes]:
    """A busybox image from Debian's busybox-static: /bin/busybox plus applet symlinks."""
    binary = shutil.which("busybox")
    if not binary:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    data = open(binary, "rb").read()
    entries = [("bin", "dir", None), ("bin/busybox", "file", data, {"mode": 0o755}),
               ("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
               ("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n"), ("tmp", "dir", None, {"mode": 0o1777})]
    entries += [(f"bin/{a}", "symlink", "busybox") for a in ("sh", "ls", "cat", "echo", "id", "env", "pwd", "find")]
    return [tar_bytes(entries)]


@pytest.fixture
def busybox(tmp_path, store):
    return Image.load(oci_layout(tmp_path / "bb", busybox_layers(), ref_name="busybox:test",
                                 config={"Env": ["PATH=/bin", "FROM_IMAGE=1"], "Cmd": ["sh"], "WorkingDir": "/tmp",
                                         "User": "nobody"}), store=store)


def test_busybox_runs_shell_commands(busybox):
    with sandkit.Container(busybox) as c:
        r = c.exec(["sh", "-c", "echo hi; echo $FROM_IMAGE; pwd; id -u"])
        assert r.exit_code == 0
        assert r.stdout == b"hi\n1\n/tmp\n65534\n"


def test_whiteouts_and_opaque_dirs_inside_a_container(tmp_path, store):
    layers = busybox_layers() + LAYERS
    image = Image.load(oci_layout(tmp_path / "wh", layers, config={"Env": ["PATH=/bin"]}), store=store)
    with sandkit.Container(image) as c:
        r = c.exec(["sh", "-c", "cd / && find etc opq d2f f2d wdir data hard added lnk 2>/dev/null | sort"])
        listed = set(r.stdout.decode().split())
    expected = {p for p in EXPECTED if p.split("/")[0] in {"etc", "opq", "d2f", "f2d", "wdir", "data", "hard", "added"}}
    expected |= {"etc/passwd", "etc/group"}  # from the busybox base layer
    assert listed == expected


def test_remove_refused_while_container_runs(busybox):
    from sandkit.errors import ImageInUseError

    with sandkit.Container(busybox):
        with pytest.raises(ImageInUseError):
            busybox.remove()
    busybox.remove()
