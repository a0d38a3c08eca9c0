"""Images running in containers. Needs the runtime (sandkit.Container); skipped until it exists."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess

import pytest

from sandkit.images import Image

from .conftest import oci_layout, tar_bytes
from .test_overlay_view import EXPECTED, LAYERS

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


WHO_C = rb"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	printf("euid=%d", (int)geteuid());
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "CapPrm:", 7))
			printf(" %.*s", (int)strcspn(line, "\n"), line);
	printf("\n");
	return 0;
}
"""
# security.capability, VFS_CAP_REVISION_2 with the effective flag: CAP_DAC_OVERRIDE and CAP_SETUID
FILE_CAPS = struct.pack("<5I", 0x02000001, (1 << 1) | (1 << 7), 0, 0, 0)


def _static_who(tmp_path) -> bytes:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the helper: apt-get install gcc libc6-dev")
    (tmp_path / "who.c").write_bytes(WHO_C)
    subprocess.run([gcc, "-static", "-O1", "-o", str(tmp_path / "who"), str(tmp_path / "who.c")], check=True)
    return (tmp_path / "who").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="a setuid-root file and file capabilities need root to apply")
def test_setuid_and_file_caps_from_a_layer_give_no_privilege(tmp_path, store):
    # Layers keep setuid bits and file capabilities (Docker does too); in a container they give
    # nothing because every process runs with no_new_privs. (On the host, only the store's owner
    # can reach the layer directories.)
    who = _static_who(tmp_path)
    caps = FILE_CAPS.decode("utf-8", "surrogateescape")
    suid = [("bin/suid", "file", who, {"mode": 0o4755}),
            ("bin/capped", "file", who, {"mode": 0o755, "xattrs": {"security.capability": caps}})]
    image = Image.load(oci_layout(tmp_path / "suid", busybox_layers() + [tar_bytes(suid)],
                                  config={"Env": ["PATH=/bin"], "User": "nobody"}), store=store)
    applied = {p.name: p for p in (store.home / "layers").glob("*/fs/bin/*") if p.name in ("suid", "capped")}
    assert applied["suid"].stat().st_mode & stat.S_ISUID and applied["suid"].stat().st_uid == 0
    assert os.getxattr(applied["capped"], "security.capability") == FILE_CAPS
    with sandkit.Container(image) as c:
        for name in ("suid", "capped"):
            r = c.exec([f"/bin/{name}"])
            assert r.exit_code == 0, r
            assert r.stdout.decode().split() == ["euid=65534", "CapPrm:", "0" * 16, "CapEff:", "0" * 16], name
