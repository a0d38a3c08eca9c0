"""Turn an image and a container's options into the `setup` message for its init."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import errors
from ..images.image import Image
from ..ipc import File, Interface, Setup
from .mounts import Mount

# The whole setup message travels in one packet of at most 64 KiB (ipc.MAX_PACKET), with the
# mounts and the seccomp program: files written into the container at set-up (its /etc/hosts,
# /etc/resolv.conf, a few hundred bytes each) get half of it at most.
MAX_SETUP_FILES_BYTES = 32 * 1024

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
    net: Interface | None = None,
    files: Sequence[File] = (),
    files_to_come: Iterable[str] = (),
) -> Setup:
    """The `Setup` message that builds a container from ``image`` (``"host"`` or an `Image`): its
    root filesystem, the caller's ``mounts`` after the image's, the masked and read-only paths,
    the writable layer's size, the capabilities and seccomp program the init applies to
    itself, the interface ``net`` it configures (which needs ``loopback``: a network namespace
    of the container's own) and the ``files`` it writes into the root (replacing the image's,
    and with the host image the host's copy of that /etc entry). ``files_to_come`` names files
    that will be added to the message later (a network's /etc/hosts, known only once the
    container has an address): the host image does not bind the host's copy of those either."""
    _check_files(files)
    if net is not None and not loopback:
        raise errors.ContainerStartError(
            f"interface {net.iface} needs a network namespace of the container's own: "
            "it cannot be configured on the host's network"
        )
    if image == HOST_IMAGE:
        rootfs: dict[str, Any] = {"kind": "tmpfs", "readonly": read_only}
        base_mounts = _host_image_mounts(skip={f.path for f in files} | set(files_to_come))
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
        net=net,
        files=tuple(files),
    )


def _check_files(files: Sequence[File]) -> None:
    for file in files:
        if not file.path.startswith("/") or posixpath.normpath(file.path) != file.path:
            raise errors.ContainerStartError(
                f"a file for the container needs an absolute, normalised path, not {file.path!r}"
            )
    size = sum(len(f.data) for f in files)
    if size > MAX_SETUP_FILES_BYTES:
        raise errors.ContainerStartError(
            f"the files written into the container at set-up hold {size} bytes, over the limit "
            f"of {MAX_SETUP_FILES_BYTES} (sandkit.runtime.plan.MAX_SETUP_FILES_BYTES): they "
            "travel in the one set-up packet; bind-mount larger files instead"
        )


def _workdir(path: str | None) -> list[dict[str, Any]]:
    # Docker creates the container's working directory when the image lacks it.
    return [{"type": "dir", "dst": path, "mode": 0o755}] if path and path != "/" else []


def _layered_rootfs(image: Image, *, read_only: bool, rootless: bool) -> dict[str, Any]:
    # overlayfs wants the topmost layer first
    lower = [str(d) for d in reversed(image.layer_dirs)]
    return {"kind": "overlay", "lower": lower, "readonly": read_only, "userxattr": rootless}


def _host_image_mounts(skip: set[str]) -> list[dict[str, Any]]:
    """The host image's mounts; an /etc entry in ``skip`` is left out (the container gets a file
    of its own there instead of the host's)."""
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
        if host_path not in skip and os.path.exists(host_path):
            mounts.append(
                {"type": "bind", "src": host_path, "dst": host_path, "ro": True, "rec": True}
            )
    return mounts
