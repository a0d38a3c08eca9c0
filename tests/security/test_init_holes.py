"""Holes in the container init found by attacking it from outside the project (issue 14), kept as
regression tests, root and rootless:

- an image whose /proc is a symlink leading the init's set-up back onto the host;
- a container process that stops the exec child before its execve, freezing PID 1;
- a rootless spare whose first exec carries its own seccomp profile, never getting the
  container's;
- a double-forked, setsid process outliving its exec's timeout.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pytest
from test_attacks import MODES, _open_to_others, in_mode

import sandkit
from sandkit.runtime import prespawn
from sandkit.runtime.home import scratch_mountpoint, sandkit_home

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="covers root and rootless mode, the latter as a user it creates")


@pytest.fixture(autouse=True)
def _sandkit_loaded(warmed_up):
    """The C module and the init memfd are loaded as root first (see test_attacks.py)."""


def _poll(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


# --- 1. an image whose /proc leads back onto the host ----------------------------------------


def _proc_symlink_image(base: Path, target: str) -> sandkit.Image:
    """A busybox image whose /proc is an absolute symlink that, seen from the init's mount
    namespace before pivot_root, points back into the container root under another name, where
    sys/kernel/hostname is a symlink to ``target`` on the host."""
    from conftest import make_busybox_rootfs

    root = make_busybox_rootfs(base / "rootfs")
    (root / "proc").rmdir()
    container_root = scratch_mountpoint(sandkit_home()) / "root"
    os.symlink(f"{container_root}/p", root / "proc")
    # Resolved inside the root, the symlink names a directory the image also ships, which is
    # where proc is mounted; followed from the host's root, it names the image's own p/.
    (root / str(container_root / "p").lstrip("/")).mkdir(parents=True)
    (root / "p/sys/kernel").mkdir(parents=True)
    os.symlink(target, root / "p/sys/kernel/hostname")
    return sandkit.Image.from_directory(root)


def _spare_renamed_through_proc_symlink(target: str) -> list[str]:
    """Start from the hostile image three times with spares on: the later containers take a
    spare set up without a name, and rename it."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sandkit-procsym-"))
    names = []
    try:
        image = _proc_symlink_image(base, target)
        os.environ["SANDKIT_PRESPAWN"] = "1"
        for name in ("first-box", "second-box", "third-box"):
            try:
                with sandkit.Container(image, hostname=name) as c:
                    names.append(c.exec(["hostname"]).stdout.decode())
            except sandkit.SandkitError as exc:
                names.append(f"refused: {exc}")
                continue
            _poll(prespawn.spares, 10, "a spare container")
    finally:
        os.environ["SANDKIT_PRESPAWN"] = "0"
        prespawn.drain()
        shutil.rmtree(base, ignore_errors=True)
    return names


@pytest.mark.parametrize("mode", MODES)
def test_image_proc_symlink_cannot_reach_host_files(mode, as_unprivileged, tmp_path):
    canary = tmp_path / "canary"
    canary.write_bytes(b"host file, untouched\n")
    os.chmod(canary, 0o666)  # writable by the rootless user too: a real target either way
    _open_to_others(tmp_path)
    outcome = in_mode(mode, as_unprivileged, _spare_renamed_through_proc_symlink, str(canary))
    assert canary.read_bytes() == b"host file, untouched\n", f"the init wrote a host file: {outcome}"
    # Docker's runtime mounts proc only on a real directory too; the user learns why.
    for started in outcome:
        assert started.startswith("refused:") and "/proc is a symlink" in started, outcome
