"""A tiny root filesystem for tests and benchmarks, from Debian's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def make_busybox_rootfs(root: Path) -> Path:
    """A tiny root filesystem: Debian's static busybox, its applets, and users root, app, nobody."""
    if not BUSYBOX.exists():
        raise RuntimeError("Debian's busybox-static is needed: apt-get install busybox-static")
    for sub in ("bin", "etc", "tmp", "root", "home/app", "proc", "dev", "sys"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
    if os.geteuid() == 0:
        os.chown(root / "home/app", 1000, 1000)
    return root
