"""Turn an image and a container's options into the `setup` message for its init."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..images.image import Image
from ..ipc import Setup
from .mounts import Mount

# The built-in "host" image: the host's programs and libraries, read-only, and a small, safe part
# of /etc (no secrets such as shadow, ssh keys or sudoers), over a fresh writable layer.
HOST_IMAGE = "host"
_HOST_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_HOST_ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "os-release",
    "debian_version",
    "mime.types",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "profile",
    "bash.bashrc",
    "shells",
    "inputrc",
    "protocols",
    "services",
    "environment",
    "magic",
    "magic.mime",
    "python3",
    "python3.11",
    "terminfo",
)
_HOST_WRITABLE_DIRS = (
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("run", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
)


def setup_message(
    image: Image | str,
    *,
    scratch: Path,
    hostname: str,
    mounts: Iterable[Mount],
    read_only: bool,
    rootless: bool,
    masked: tuple[str, ...] = (),
    readonly_paths: tuple[str, ...] = (),
    scratch_size: int = 0,
    scratch_inodes: int = 0,
    loopback: bool = True,
    lifetime: float | None = None,
    workdir: str | None = None,
    caps: int | None = None,
    seccomp: bytes | None = None,
) -> Setup:
    """The `Setup` message that builds a container from ``image`` (``"host"`` or an `Image`): its
    root filesystem, the caller's ``mounts`` after the image's, the masked and read-only paths,
    the writable layer's size, and the capabilities and seccomp program the init applies to
    itself."""
    if image == HOST_IMAGE:
        rootfs: dict[str, Any] = {"kind": "tmpfs", "readonly": read_only}
        base_mounts = _host_image_mounts()
    else:
        assert isinstance(image, Image)
        rootfs = _layered_rootfs(image, read_only=read_only, rootless=rootless)
        base_mounts = []
    return Setup(
        scratch=str(scratch),
        rootfs=rootfs,
        hostname=hostname,
        mounts=tuple(base_mounts + [m.to_wire() for m in mounts] + _workdir(workdir)),
        masked=masked,
        readonly=readonly_paths,
        rootless=rootless,
        scratch_size=scratch_size,
        scratch_inodes=scratch_inodes,
        loopback=loopback,
        lifetime_ms=round(lifetime * 1000) if lifetime else 0,
        caps=caps,
        seccomp=seccomp,
    )


def _workdir(path: str | None) -> list[dict[str, Any]]:
    # Docker creates the container's working directory when the image lacks it.
    return [{"type": "dir", "dst": path, "mode": 0o755}] if path and path != "/" else []


def _layered_rootfs(image: Image, *, read_only: bool, rootless: bool) -> dict[str, Any]:
    # overlayfs wants the topmost layer first
    lower = [str(d) for d in reversed(image.layer_dirs)]
    return {"kind": "overlay", "lower": lower, "readonly": read_only, "userxattr": rootless}


def _host_image_mounts() -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for name in _HOST_SYSTEM_DIRS:
        host_path = "/" + name
        if os.path.islink(host_path):
            mounts.append({"type": "symlink", "dst": host_path, "target": os.readlink(host_path)})
        elif os.path.isdir(host_path):
            mounts.append(
                {"type": "bind", "src": host_path, "dst": host_path, "ro": True, "rec": True}
            )
    for name, mode in _HOST_WRITABLE_DIRS:
        mounts.append({"type": "dir", "dst": "/" + name, "mode": mode})
    mounts.append({"type": "dir", "dst": "/etc", "mode": 0o755})
    for name in _HOST_ETC_ENTRIES:
        host_path = "/etc/" + name
        if os.path.exists(host_path):
            mounts.append(
                {"type": "bind", "src": host_path, "dst": host_path, "ro": True, "rec": True}
            )
    return mounts
