"""Mounts a caller adds to a container: host directories (bind) and fresh tmpfs."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import attrs

from ..errors import MountError


@attrs.frozen
class Mount:
    """One extra mount. Build with `Mount.bind` or `Mount.tmpfs`, or pass a Docker-style string
    ``"SRC:DST[:ro]"`` wherever mounts are accepted."""

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    size: int = 0
    mode: int = 0o1777

    @classmethod
    def bind(cls, source: str | os.PathLike[str], target: str, *, read_only: bool = False) -> Mount:
        """Mount the host path ``source`` at ``target`` in the container (``docker run -v``);
        ``read_only`` makes it read-only."""
        return cls("bind", target, source=os.fspath(source), read_only=read_only)

    @classmethod
    def tmpfs(cls, target: str, *, size: int = 0, mode: int = 0o1777) -> Mount:
        """A fresh, empty tmpfs at ``target`` that lives as long as the container: at most ``size``
        bytes (0: the kernel's default, half of RAM), root directory mode ``mode``."""
        return cls("tmpfs", target, size=size, mode=mode)

    @classmethod
    def parse(cls, spec: str | Mount) -> Mount:
        """``"SRC:DST"``, ``"SRC:DST:ro"`` or ``"SRC:DST:rw"``, as `docker run -v` takes them."""
        if isinstance(spec, Mount):
            return spec
        parts = spec.split(":")
        if len(parts) == 2:
            return cls.bind(parts[0], parts[1])
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return cls.bind(parts[0], parts[1], read_only=parts[2] == "ro")
        raise MountError(
            f"cannot read the mount {spec!r}: write it as SOURCE:TARGET or SOURCE:TARGET:ro "
            "(or pass sandkit.Mount.bind(...) / sandkit.Mount.tmpfs(...))"
        )

    def to_wire(self) -> dict[str, Any]:
        """Check the mount against the host and turn it into a `setup` mounts entry."""
        target = _container_path(self.target)
        if self.type == "tmpfs":
            return {"type": "tmpfs", "dst": target, "size": self.size, "mode": self.mode}
        if self.type != "bind":
            raise MountError(f"unknown mount type {self.type!r}: use 'bind' or 'tmpfs'")
        source = os.path.abspath(self.source)
        if not os.path.exists(source):
            raise MountError(
                f"bind mount source {source!r} does not exist: create it first, or fix the path"
            )
        return {"type": "bind", "src": source, "dst": target, "ro": self.read_only, "rec": True}


def _container_path(path: str) -> str:
    if not path.startswith("/"):
        raise MountError(f"mount target {path!r} must be an absolute path inside the container")
    normal = posixpath.normpath(path)
    if normal == "/":
        raise MountError("a mount cannot replace the container's root directory '/'")
    return normal
