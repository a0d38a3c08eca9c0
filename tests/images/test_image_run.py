"""Images running in containers. Needs the runtime (sandkit.Container); skipped until it exists."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

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
    data = Path(binary).read_bytes()
    entries = [
        ("bin", "dir", None),
        ("bin/busybox", "file", data, {"mode": 0o755}),
        ("etc", "dir", None),
        ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
        ("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n"),
        ("tmp", "dir", None, {"mode": 0o1777}),
    ]
    entries += [
        (f"bin/{a}", "symlink", "busybox")
        for a in ("sh", "ls", "cat", "echo", "id", "env", "pwd", "find")
    ]
    return [tar_bytes(entries)]


@pytest.fixture
def busybox(tmp_path, store):
    return Image.load(
        oci_layout(
            tmp_path / "bb",
            busybox_layers(),
            ref_name="busybox:test",
            config={
                "Env": ["PATH=/bin", "FROM_IMAGE=1"],
                "Cmd": ["sh"],
                "WorkingDir": "/tmp",
                "User": "nobody",
            },
        ),
        store=store,
    )


def test_busybox_runs_shell_commands(busybox):
    with sandkit.Container(busybox) as c:
        r = c.exec(["sh", "-c", "echo hi; echo $FROM_IMAGE; pwd; id -u"])
        assert r.exit_code == 0
        assert r.stdout == b"hi\n1\n/tmp\n65534\n"


def test_whiteouts_and_opaque_dirs_inside_a_container(tmp_path, store):
    layers = busybox_layers() + LAYERS
    image = Image.load(
        oci_layout(tmp_path / "wh", layers, config={"Env": ["PATH=/bin"]}), store=store
    )
    with sandkit.Container(image) as c:
        r = c.exec(
            ["sh", "-c", "cd / && find etc opq d2f f2d wdir data hard added lnk 2>/dev/null | sort"]
        )
        listed = set(r.stdout.decode().split())
    expected = {
        p
        for p in EXPECTED
        if p.split("/")[0] in {"etc", "opq", "d2f", "f2d", "wdir", "data", "hard", "added"}
    }
    expected |= {"etc/passwd", "etc/group"}  # from the busybox base layer
    assert listed == expected


def test_remove_refused_while_container_runs(busybox):
    from sandkit.errors import ImageInUseError

    with sandkit.Container(busybox), pytest.raises(ImageInUseError):
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
    subprocess.run(
        [gcc, "-static", "-O1", "-o", str(tmp_path / "who"), str(tmp_path / "who.c")], check=True
    )
    return (tmp_path / "who").read_bytes()


def _suid_image(tmp_path, store) -> Image:
    """busybox plus /bin/suid (setuid root) and /bin/capped (file caps), both printing what they got."""
    who = _static_who(tmp_path)
    caps = FILE_CAPS.decode("utf-8", "surrogateescape")
    suid = [
        ("bin/suid", "file", who, {"mode": 0o4755}),
        ("bin/capped", "file", who, {"mode": 0o755, "xattrs": {"security.capability": caps}}),
    ]
    return Image.load(
        oci_layout(
            tmp_path / "suid",
            [*busybox_layers(), tar_bytes(suid)],
            config={"Env": ["PATH=/bin"], "User": "nobody"},
        ),
        store=store,
    )


NOTHING_GAINED = ["euid=65534", "CapPrm:", "0" * 16, "CapEff:", "0" * 16]


@pytest.mark.skipif(
    os.geteuid() != 0, reason="a setuid-root file and file capabilities need root to apply"
)
def test_setuid_and_file_caps_from_a_layer_give_no_privilege(tmp_path, store):
    # Layers keep setuid bits and file capabilities (Docker does too); in a container they give
    # nothing because every process runs with no_new_privs. (On the host, only the store's owner
    # can reach the layer directories.)
    image = _suid_image(tmp_path, store)
    applied = {
        p.name: p
        for p in (store.home / "layers").glob("*/fs/bin/*")
        if p.name in ("suid", "capped")
    }
    assert applied["suid"].stat().st_mode & stat.S_ISUID and applied["suid"].stat().st_uid == 0
    assert os.getxattr(applied["capped"], "security.capability") == FILE_CAPS
    with sandkit.Container(image) as c:
        for name in ("suid", "capped"):
            r = c.exec([f"/bin/{name}"])
            assert r.exit_code == 0, r
            assert r.stdout.decode().split() == NOTHING_GAINED, name


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_setuid_in_a_container_root_gives_nothing_to_a_host_user(tmp_path, store):
    # A host user with the uid of a container process can enter its root through /proc/PID/root
    # (same uid, dumpable) and exec its files without no_new_privs. The kernel treats mounts of
    # another mount namespace as nosuid (mnt_may_suid), so the layer's setuid-root file and file
    # capabilities still give nothing there.
    image = _suid_image(tmp_path, store)
    with sandkit.Container(image) as c:
        sleeper = c.spawn(["cat"])  # waits on its stdin
        try:
            pid = _host_pid_of(sleeper.pid)
            for name in ("suid", "capped"):
                r = subprocess.run(
                    [
                        "setpriv",
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                        f"/proc/{pid}/root/bin/{name}",
                    ],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                assert r.returncode == 0, r.stderr  # it did run: the container's root was reachable
                assert r.stdout.decode().split() == NOTHING_GAINED, name
        finally:
            sleeper.kill()


def _host_pid_of(inner_pid: int) -> int:
    """The host pid of the process this test's container calls ``inner_pid`` (NSpid ends with it,
    and its root holds this image's /bin/capped), once it runs."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                status = (proc / "status").read_text()
                nspid = next(
                    line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")
                )
                if (
                    len(nspid) > 1
                    and int(nspid[-1]) == inner_pid
                    and (proc / "root/bin/capped").exists()
                ):
                    return int(proc.name)
            except (OSError, ValueError, StopIteration):
                continue
        time.sleep(0.02)
    raise AssertionError(f"no process with pid {inner_pid} in the container")
