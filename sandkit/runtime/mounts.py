"""Mounts a caller adds to a container: host directories (bind), named volumes and fresh tmpfs."""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable
from typing import Any

import attrs

from ..errors import MountError
from . import volumes


@attrs.frozen
class Mount:
    """One extra mount. Build with `Mount.bind`, `Mount.volume` or `Mount.tmpfs`, or pass a
    Docker-style string ``"SRC:DST[:ro]"`` wherever mounts are accepted: a SRC that is a volume
    name (letters, digits, '_', '.', '-', no '/') mounts that volume, anything else a host path."""

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
    def volume(cls, name: str, target: str, *, read_only: bool = False) -> Mount:
        """Mount the named volume ``name`` at ``target`` (``docker run -v name:/path``), made if
        missing; a fresh one is first filled with what the image has at ``target``."""
        try:
            volumes.check_name(name)
        except ValueError as exc:
            raise MountError(str(exc)) from None
        return cls("volume", target, source=name, read_only=read_only)

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
        if len(parts) in (2, 3) and (len(parts) == 2 or parts[2] in ("ro", "rw")):
            make = cls.volume if volumes.is_volume_name(parts[0]) else cls.bind
            return make(parts[0], parts[1], read_only=parts[2:] == ["ro"])
        raise MountError(
            f"cannot read the mount {spec!r}: write it as SOURCE:TARGET or SOURCE:TARGET:ro, "
            "SOURCE a host path or a volume name (or pass sandkit.Mount.bind(...) / "
            "sandkit.Mount.volume(...) / sandkit.Mount.tmpfs(...))"
        )

    def to_wire(self) -> dict[str, Any]:
        """Check the mount against the host and turn it into a `setup` mounts entry."""
        target = _container_path(self.target)
        if self.type == "tmpfs":
            return {"type": "tmpfs", "dst": target, "size": self.size, "mode": self.mode}
        if self.type == "volume":
            return self._volume_wire(target)
        if self.type != "bind":
            raise MountError(f"unknown mount type {self.type!r}: use 'bind', 'volume' or 'tmpfs'")
        source = os.path.abspath(self.source)
        if not os.path.exists(source):
            raise MountError(
                f"bind mount source {source!r} does not exist: create it first, or fix the path"
            )
        return {"type": "bind", "src": source, "dst": target, "ro": self.read_only, "rec": True}

    def _volume_wire(self, target: str) -> dict[str, Any]:
        # The container holds the volume's lease already (it was made then if missing).
        record = volumes.get_volume(self.source)
        return {
            "type": "bind",
            "src": os.fspath(record.mountpoint),
            "dst": target,
            "ro": self.read_only,
            "rec": False,
            # Whatever a container leaves in a volume must not gain privileges in the next one.
            "nosuid": True,
            # Docker's rule: an empty volume is first filled with the image's tree at target,
            # by one container at a time (a flock on this file, which containers cannot reach).
            "copyup": True,
            "lock": os.fspath(record.fill_lock),
        }


def lease_volumes(mounts: Iterable[str | Mount]) -> contextlib.ExitStack | None:
    """Holds every named volume among ``mounts`` in use (made if missing) until the returned
    stack is closed; None when there is none."""
    names = [m.source for m in map(Mount.parse, mounts) if m.type == "volume"]
    if not names:
        return None
    stack = contextlib.ExitStack()
    try:
        for name in names:
            stack.enter_context(volumes.lease_volume(name))
    except BaseException:
        stack.close()
        raise
    return stack


def _container_path(path: str) -> str:
    if not path.startswith("/"):
        raise MountError(f"mount target {path!r} must be an absolute path inside the container")
    normal = posixpath.normpath(path)
    if normal == "/":
        raise MountError("a mount cannot replace the container's root directory '/'")
    return normal
