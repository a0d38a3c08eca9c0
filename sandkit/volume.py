"""Named volumes in the public API: `Volume`.

    with sandkit.Volume("pgdata") as data:
        with sandkit.Container(image, mounts=[f"{data.name}:/var/lib/postgresql/data"]) as db:
            ...
        # the data is still there for the next container

A volume is a directory in sandkit's home that containers mount by name and that outlives
them; a fresh one is filled from the image at its first mount, as Docker fills one. Its
operations are a few small file operations (removal walks the tree), so there is no async twin:
call them from a worker thread (`anyio.to_thread.run_sync`) when a volume may hold much.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from ._owned import OwnedResource
from .errors import LimitsError, VolumeError, VolumeInUseError, VolumeSpecError
from .runtime import volumes
from .runtime.volumes import VolumeRecord
from .sizes import parse_size

__all__ = ["Volume"]


def _bytes(size: int | str | None) -> int:
    try:
        return 0 if size is None else parse_size(size)
    except LimitsError as exc:
        raise VolumeSpecError(f"volume size: {exc}") from None


class Volume(OwnedResource[VolumeRecord]):
    """A named volume: ``Volume(name=None, labels=None, size=None, tmpfs=False)``.

    Entering the ``with`` block (or `create`) makes the volume unless it exists; leaving it
    removes the volume again (`remove`) if the block made it, which must come after the
    containers using it have stopped. ``name=None`` picks a unique name. `Volume.get` returns a
    volume that exists already, which the ``with`` block then does not remove. Mount it with
    ``mounts=[f"{volume.name}:/path"]`` or ``sandkit.Mount.volume(volume.name, "/path")``; a
    mount of a volume that does not exist makes it (Docker's rule).

    ``size`` (bytes or "512m"; root only) limits it: it is then an ext4 filesystem image of its
    own, sparse on the host. ``tmpfs=True`` (root only) keeps it in memory instead (``size``
    bytes, default half of RAM): its content lasts while containers use it, as Docker's
    ``--opt type=tmpfs``. A rootless user gets VolumeSpecError for either: rootless volumes are
    directories without a size limit.
    """

    _kind = "volume"
    _in_use = VolumeInUseError

    def __init__(
        self,
        name: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        size: int | str | None = None,
        tmpfs: bool = False,
    ) -> None:
        """Describes the volume (checked now); nothing is made until `create` (or ``with``)."""
        if name is not None:
            volumes.check_name(name)
        self._wanted_name = name
        self._labels = dict(labels or {})
        self._options = volumes.backing_options(size=_bytes(size), tmpfs=tmpfs)
        self._record: VolumeRecord | None = None
        self._owned = False

    @classmethod
    def _of(cls, record: VolumeRecord) -> Volume:
        volume = cls.__new__(cls)
        volume._record = record
        volume._owned = False
        return volume

    @classmethod
    def get(cls, name: str) -> Volume:
        """The existing volume of that name (VolumeNotFoundError if none)."""
        return cls._of(volumes.get_volume(name))

    @classmethod
    def all(cls) -> list[Volume]:
        """Every volume, by name."""
        return [cls._of(record) for record in volumes.list_volumes()]

    @classmethod
    def prune(cls, *, all: bool = False) -> list[tuple[str, int]]:
        """Removes the volumes no container uses: only anonymous ones (Docker's label, which
        sandkit never sets itself) unless ``all``, as Docker >= 23 does. Returns each removed
        volume's name and the bytes it held."""
        volumes.sweep_leftovers()
        removed = []
        for record in volumes.list_volumes():
            if not (all or record.anonymous) or volumes.in_use(record):
                continue
            size = volumes.volume_size(record)
            try:
                volumes.remove_volume(record.name)
            except VolumeError:
                continue  # taken meanwhile, or removed by someone else
            removed.append((record.name, size))
        return removed

    def create(self) -> Self:
        """Makes the volume unless it exists (then it is used as it is) and returns it."""
        if self._record is None:
            self._record, self._owned = volumes.create_volume(
                self._wanted_name, labels=self._labels, options=self._options
            )
        return self

    def remove(self) -> None:
        """Deletes the volume and its content; VolumeInUseError while a container uses it."""
        volumes.remove_volume(self._created().name)
        self._owned = False

    @property
    def mountpoint(self) -> Path:
        """The host directory that holds the volume's content (Docker's ``Mountpoint``). What is
        in it was written by containers: do not follow its symlinks or run its programs."""
        return self._created().mountpoint

    @property
    def labels(self) -> dict[str, str]:
        """The volume's labels."""
        return dict(self._created().labels)

    @property
    def options(self) -> dict[str, str]:
        """Docker's local-driver options of the volume: {} for a plain directory."""
        return dict(self._created().options)

    @property
    def size(self) -> int:
        """The volume's size limit in bytes; 0 for none."""
        return self._created().size

    @property
    def created(self) -> str:
        """When the volume was made (RFC 3339)."""
        return self._created().created

    @property
    def in_use(self) -> bool:
        """True while a container (in any process) has the volume mounted."""
        return volumes.in_use(self._created())

    def __repr__(self) -> str:
        state = str(self._record.mountpoint) if self._record else "not created"
        return f"<sandkit.Volume {self.name!r} {state}>"
