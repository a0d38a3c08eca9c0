"""The local image store: content-addressed blobs, applied layers, image records and tags.

Layout (``$SANDKIT_HOME``; default ``/var/lib/sandkit`` for root, else
``$XDG_DATA_HOME/sandkit``)::

    blobs/sha256/<hex>        manifests, configs and layer blobs exactly as received
    layers/<diff-id hex>/fs   a layer applied once (overlay lower dir); layer.json beside it
    images/<config hex>.json  one record per image (id = config digest, as in Docker)
    refs.json                 full reference ("docker.io/library/busybox:latest") -> image id
    tmp/                      staging; each staging dir is flock'ed by the process using it, and
                              one whose process is gone (killed) is removed at the next open
    locks/, leases/           flock files

Layers are keyed by DiffID, not ChainID: each layer is applied into its own directory with its
whiteouts kept as overlay whiteouts, so the applied tree does not depend on the layers below it
and one directory can serve every image that contains that layer, whatever its base.

Crash safety: everything is built under ``tmp/`` and renamed into place; an image record is
written only after all its blobs and layers exist, so a crash leaves at most unreferenced
content that :meth:`Store.prune` removes. Concurrency: ``locks/store.lock`` serialises record
and tag changes; ``locks/gc.lock`` is held shared by loads/pulls and exclusive by prune, so prune
never deletes a blob a concurrent load is about to reference; ``locks/layer-<hex>.lock`` makes
two processes apply one layer only once.

API for a registry client (pull/push)
-------------------------------------
::

    store = Store.default()
    with store.loading(layers=n):                   # shared gc lock and one disk budget
                                                    # (budget.py) for the whole pull
        store.has_blob(digest) / store.has_layer(diff_id)
        store.write_blob(stream, digest, size)      # hash while copying; verified, then renamed
        store.ingest_layer(stream, digest=..., diff_id=..., size=...)
            # ONE pass over the (compressed) download: written to blobs/, decompressed (gzip/zstd
            # sniffed), hashed and applied to layers/ as it arrives; both digests verified
            # (a second thread reads ahead while a core is idle: readahead.py)
        record = store.register_image(manifest_bytes, config_bytes, tags=["reg/x:1"],
                                      manifest_media_type=...)   # atomic; moves existing tags
    store.image_blobs(record.id)   # [manifest, config, *layers] descriptors, for push
    store.open_blob(digest)        # read a blob (layers are kept compressed as received)

API for the runtime
-------------------
``with store.lease(image_id): ...`` holds a shared flock on ``leases/<hex>.lock`` for as long as
a container uses the image; :meth:`remove_image` takes the lock exclusively without waiting and
raises ImageInUseError if any lease is held (also across processes; released if the holder dies).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from .. import idmap
from ..errors import DigestMismatchError, ImageError, ImageInUseError, ImageNotFoundError
from ..home import private_home, private_subdir, sandkit_home
from . import reference
from .budget import ChargedWriter, DiskBudget, StoreLimits, check_layer_count
from .digest import (
    ByteSource,
    HashingReader,
    check_digest,
    drain,
    hex_of,
    mismatch,
    sha256_bytes,
    verify_bytes,
)
from .fsutil import dir_size, remove_tree, write_json_atomic
from .layers import (
    DECOMPRESSION_ERRORS,
    LAYER_TYPES,
    ApplyReport,
    apply_tar,
    compression_of,
    open_decompressed,
)
from .mapped import apply_tar_mapped
from .readahead import ReadAhead

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}

# What reading a layer blob raises for a bad blob. A name of its own: mypy cannot check a
# starred tuple of unknown length inside an `except (...)`.
_BAD_LAYER_BLOB: tuple[type[BaseException], ...] = (ImageError, *DECOMPRESSION_ERRORS)

# The budget of the pull or load running in this context (its layers' threads inherit it).
_budget: contextvars.ContextVar[DiskBudget | None] = contextvars.ContextVar(
    "sandkit_store_budget", default=None
)


def default_home() -> Path:
    """The store's directory: ``$SANDKIT_HOME``, else ``/var/lib/sandkit`` for root and
    ``$XDG_DATA_HOME/sandkit`` for other users."""
    return sandkit_home()


@attrs.frozen
class LayerRecord:
    """One layer of an image as the store keeps it: its blob's digest, size and media type
    (usually compressed), and ``diff_id``, the digest of the uncompressed tar, which names its
    applied directory."""

    digest: str  # of the blob as stored (usually compressed)
    diff_id: str  # of the uncompressed tar
    size: int  # blob size
    media_type: str


@attrs.frozen
class ImageRecord:
    """What the store knows of one image: ``id`` (its config's digest, as Docker's image id), its
    manifest, its layers bottom first, its creation time and platform, and when it was loaded or
    pulled."""

    id: str  # config digest
    manifest_digest: str
    manifest_media_type: str
    layers: tuple[LayerRecord, ...]
    created: str = ""
    platform: str = ""
    loaded: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object stored in ``images/<hex>.json``."""
        return attrs.asdict(self, recurse=True)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageRecord:
        """The record stored as ``obj`` (what `to_json` made); it consumes ``obj``'s ``layers``."""
        layers = tuple(LayerRecord(**layer) for layer in obj.pop("layers"))
        return cls(layers=layers, **obj)


@attrs.frozen
class PruneReport:
    """What a prune removed: the ids of the ``images``, how many ``layers``, ``blobs`` and
    ``staging`` directories, and ``bytes_freed`` in all."""

    images: tuple[str, ...]
    layers: int
    blobs: int
    bytes_freed: int  # layers, blobs and the staging of killed pulls and loads
    staging: int = 0  # staging directories removed (by this prune, or when the store was opened)


class Store:
    """The store at ``home`` (default: $SANDKIT_HOME). ``max_image_size``, ``max_store_size``
    and ``min_free`` (bytes, or sizes like "32g") bound what a pull or load may write; they
    default to their environment variables, then to the defaults in budget.py (README,
    "Images")."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        max_image_size: int | str | None = None,
        max_store_size: int | str | None = None,
        min_free: int | str | None = None,
    ) -> None:
        self.limits = StoreLimits.resolve(max_image_size, max_store_size, min_free)
        self.home = Path(home).absolute() if home is not None else default_home()
        if ":" in str(self.home) or "," in str(self.home):
            raise ImageError(
                f"SANDKIT_HOME {str(self.home)!r} contains ':' or ',', which overlayfs cannot take "
                "in layer paths: choose another directory"
            )
        # Rootless with a subordinate range, layers are applied (and removed) in a user namespace
        # with the containers' mapping; layer.json records which mapping ("idmap").
        self.mapping = idmap.rootless_mapping()
        self.mapping_key = idmap.mapping_key() if self.mapping is None else self.mapping.key
        # Private to its owner, checked at every open (see sandkit/home.py for why).
        private_home(self.home)
        for sub in ("blobs/sha256", "layers", "images", "tmp", "locks", "leases"):
            private_subdir(self.home, sub)
        # A pull or load killed mid-way leaves its staging behind (hundreds of MB): clear it
        # now rather than at the next prune, which reports it then as freed all the same.
        self._swept = self._sweep_tmp()

    @classmethod
    def default(cls) -> Store:
        """The store at the default home (`default_home`), made if missing and checked to be
        private to this user."""
        return cls(default_home())

    # --- locks -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _flock(self, path: Path, op: int) -> Iterator[int]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, op)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _store_lock(self) -> contextlib.AbstractContextManager[int]:
        return self._flock(self.home / "locks" / "store.lock", fcntl.LOCK_EX)

    @contextlib.contextmanager
    def loading(self, layers: int | None = None) -> Iterator[int]:
        """Hold while adding content, from the first blob to register_image (blocks prune).

        What is written meanwhile in this context (and the threads it starts) shares one disk
        budget; ``layers``, the image's layer count when known, is checked against Docker's
        limit before anything is fetched.
        """
        with (
            self._flock(self.home / "locks" / "gc.lock", fcntl.LOCK_SH) as fd,
            self.unpacking(layers),
        ):
            yield fd

    @contextlib.contextmanager
    def unpacking(self, layers: int | None = None) -> Iterator[DiskBudget]:
        """A fresh disk budget for one image's blobs and layers (see budget.py)."""
        if layers is not None:
            check_layer_count(layers, "the image")
        token = _budget.set(self._new_budget())
        try:
            yield _budget.get()  # type: ignore[misc]
        finally:
            _budget.reset(token)

    def budget(self) -> DiskBudget:
        """A fresh disk budget for writing into the store's filesystem under its limits (the
        decompressed copy of a compressed archive being loaded, say)."""
        return self._new_budget()

    def _new_budget(self) -> DiskBudget:
        used = self._usage() if self.limits.max_store_size is not None else 0
        return DiskBudget(self.home, self.limits, used)

    def _current_budget(self) -> DiskBudget:
        """The budget of the pull or load in progress, else one for this write alone."""
        return _budget.get() or self._new_budget()

    def _usage(self) -> int:
        """Bytes the store holds: its blobs, and its layers as their tars' sizes."""
        blobs = sum(entry.stat().st_size for entry in os.scandir(self.home / "blobs" / "sha256"))
        return blobs + sum(
            self.layer_size("sha256:" + entry.name) for entry in os.scandir(self.home / "layers")
        )

    def lease(self, image_id: str) -> contextlib.AbstractContextManager[int]:
        """Mark ``image_id`` as in use until the context exits (see the module docstring)."""
        return self._flock(self.home / "leases" / f"{hex_of(image_id)}.lock", fcntl.LOCK_SH)

    def _in_use(self, image_id: str) -> bool:
        path = self.home / "leases" / f"{hex_of(image_id)}.lock"
        try:
            with self._flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB):
                return False
        except BlockingIOError:
            return True

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private temporary directory inside the store (same filesystem, so rename works),
        deleted on exit; it is flock'ed for as long as it is used, so that a killed process's
        leftovers can be told apart (_sweep_tmp)."""
        path, fd = self._new_staging()
        try:
            yield path
        finally:
            self._remove(path)
            os.close(fd)

    def _new_staging(self) -> tuple[Path, int]:
        while True:
            path = Path(tempfile.mkdtemp(dir=self.home / "tmp"))
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # another process's sweep took it for a leftover before we opened it
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                return path, fd
            # A sweep took it for a leftover between mkdtemp and flock, and removed it.
            os.close(fd)

    def _sweep_tmp(self) -> tuple[int, int]:
        """Remove staging that no live process holds; returns (directories, bytes) freed."""
        count = freed = 0
        for entry in (self.home / "tmp").iterdir():
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile, or not a staging directory
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Removed while locked: a process that made it a moment ago and waits for the
                # lock finds it unlinked and makes another (_new_staging).
                freed += self._size(entry)
                self._remove(entry)
                count += 1
            except BlockingIOError:
                pass  # a live process is using it
            finally:
                os.close(fd)
        return count, freed

    # --- blobs -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob ``digest`` is or would be kept; `ImageError` for a malformed digest."""
        return self.home / "blobs" / "sha256" / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        """True when the blob ``digest`` is in the store."""
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob ``digest``, open for reading in binary; `ImageNotFoundError` when the store
        lacks it."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise ImageNotFoundError(
                f"blob {digest} is not in the image store at {self.home}: load or pull the image again"
            ) from None

    def read_blob(self, digest: str) -> bytes:
        """The whole blob ``digest`` (a manifest or config: layers are better streamed with
        `open_blob`); `ImageNotFoundError` when the store lacks it."""
        with self.open_blob(digest) as f:
            return f.read()

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store small content (manifests, configs) already in memory; returns its digest."""
        actual = sha256_bytes(data)
        if digest is not None and actual != digest:
            raise mismatch("blob", digest, actual)
        if not self.has_blob(actual):
            with self.staging() as tmp:
                (tmp / "blob").write_bytes(data)
                os.replace(tmp / "blob", self.blob_path(actual))
        return actual

    def write_blob(self, stream: ByteSource, digest: str, size: int | None = None) -> Path:
        """Copy ``stream`` into the store, verifying digest and size before it becomes visible."""
        check_digest(digest)
        with self.staging() as tmp, open(tmp / "blob", "wb") as out:
            reader = HashingReader(
                stream, ChargedWriter(out, self._current_budget(), f"blob {digest}")
            )
            reader.drain()
            self._check(reader, digest, size, f"blob {digest}")
            out.flush()
            os.replace(tmp / "blob", self.blob_path(digest))
        return self.blob_path(digest)

    @staticmethod
    def _check(reader: HashingReader, digest: str, size: int | None, what: str) -> None:
        if size is not None and reader.count != size:
            raise DigestMismatchError(
                f"{what} is {reader.count} bytes but {size} were expected: the download or archive "
                "is truncated or corrupt; try again or re-export it"
            )
        if reader.digest != digest:
            raise mismatch(what, digest, reader.digest)

    # --- layers ------------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        """The applied tree of a layer: what a container stacks as an overlay lower dir."""
        return self.home / "layers" / hex_of(diff_id) / "fs"

    def has_layer(self, diff_id: str) -> bool:
        """True when the layer of uncompressed digest ``diff_id`` is applied in the store, with
        the id mapping this process's containers have (else it is applied again)."""
        try:
            info = json.loads((self.home / "layers" / hex_of(diff_id) / "layer.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        # Written before mappings were recorded: by root as the layer says, else as the caller's.
        applied_with = info.get("idmap") or ("host" if os.geteuid() == 0 else "single")
        return bool(applied_with == self.mapping_key)

    def _apply(self, stream: BinaryIO, root: Path, budget: DiskBudget, layer: str) -> ApplyReport:
        if self.mapping is None:
            return apply_tar(stream, root, budget, layer=layer)
        return apply_tar_mapped(stream, root, budget, layer=layer, mapping=self.mapping)

    def _remove(self, path: Path) -> None:
        """remove_tree, inside the id mapping when the caller may not delete its files."""
        idmap.as_owner(lambda: remove_tree(path), self.mapping)

    def _size(self, path: Path) -> int:
        """dir_size, inside the id mapping when the caller may not read its directories."""
        return idmap.as_owner(lambda: dir_size(path), self.mapping)

    def refresh_layers(self, rec: ImageRecord) -> None:
        """Apply again, from their blobs, the layers of ``rec`` that were applied with another id
        mapping (the caller's /etc/subuid entry was added or changed since)."""
        stale = [layer for layer in rec.layers if not self.has_layer(layer.diff_id)]
        if not stale:
            return
        with self.loading(len(rec.layers)):
            for layer in stale:
                with self.open_blob(layer.digest) as blob:
                    self.ingest_layer(
                        blob,
                        digest=layer.digest,
                        diff_id=layer.diff_id,
                        size=layer.size,
                        media_type=layer.media_type,
                    )

    def _stored_layer(
        self, digest: str | None, diff_id: str, media_type: str | None
    ) -> LayerRecord | None:
        """The record of a layer whose blob and applied tree are both in the store already."""
        if digest is None or not (self.has_blob(digest) and self.has_layer(diff_id)):
            return None
        blob = self.blob_path(digest)
        return LayerRecord(
            digest, diff_id, blob.stat().st_size, media_type or LAYER_TYPES[compression_of(blob)]
        )

    def ingest_layer(
        self,
        stream: ByteSource,
        *,
        digest: str | None,
        diff_id: str,
        size: int | None = None,
        media_type: str | None = None,
    ) -> LayerRecord:
        """Store a layer blob and apply it, reading ``stream`` once (see module docstring).

        ``digest=None`` (docker-save archives before v25 name no blob digest) computes it instead
        of checking it; ``media_type=None`` derives it from the compression found. Nothing
        becomes visible unless the digests verify; on any error the staging area is deleted.
        """
        if digest is not None:
            check_digest(digest)
        check_digest(diff_id, "diff_id")
        if (stored := self._stored_layer(digest, diff_id, media_type)) is not None:
            return stored
        lock = self.home / "locks" / f"layer-{hex_of(diff_id)}.lock"
        budget = self._current_budget()
        with self._flock(lock, fcntl.LOCK_EX), self.staging() as tmp:
            # Checked again under the lock: if another process stored the layer while we
            # waited, the stream is not read at all (a pull never even requests the blob).
            if (stored := self._stored_layer(digest, diff_id, media_type)) is not None:
                return stored
            apply = not self.has_layer(diff_id)
            with open(tmp / "blob", "wb") as blob_out:
                raw = HashingReader(
                    stream, ChargedWriter(blob_out, budget, f"layer blob {digest or ''}")
                )
                # The compressed side may run in a thread of its own (readahead.py): the
                # source is drained before its hash is read, and joined before the blob closes.
                with ReadAhead(raw) as source:
                    try:
                        kind, decompressed = open_decompressed(source)  # type: ignore[arg-type]
                        plain = HashingReader(decompressed)
                        if apply:
                            (tmp / "layer" / "fs").mkdir(parents=True)
                            report = self._apply(
                                plain,  # type: ignore[arg-type]
                                tmp / "layer" / "fs",
                                budget,
                                diff_id[:19],
                            )
                        plain.drain()  # tar end padding is part of the DiffID
                    except _BAD_LAYER_BLOB as e:
                        # A tampered blob usually breaks decompression first: say "digest
                        # mismatch" (the real cause) rather than "bad gzip" whenever the
                        # digest proves it.
                        drain(source)
                        if digest is not None and raw.digest != digest:
                            raise mismatch(f"layer blob {digest}", digest, raw.digest) from None
                        if isinstance(e, ImageError):
                            raise
                        raise ImageError(
                            f"layer blob {raw.digest} is not valid gzip/zstd data ({e}); "
                            "the archive is corrupt: re-export or re-download it"
                        ) from None
                    drain(source)
            digest = digest or raw.digest
            self._check(raw, digest, size, f"layer blob {digest}")
            if plain.digest != diff_id:
                raise mismatch(f"uncompressed layer {digest}", diff_id, plain.digest)
            if apply:
                report.warn(diff_id[:19])
                write_json_atomic(
                    tmp / "layer" / "layer.json",
                    {
                        "diff_id": diff_id,
                        "size": plain.count,
                        "applied": time.time(),
                        "idmap": self.mapping_key,
                    },
                )
                target = self.home / "layers" / hex_of(diff_id)
                # a leftover without layer.json is an interrupted apply; one with another
                # "idmap" was applied for other containers' mapping
                self._remove(target)
                os.rename(tmp / "layer", target)
            if not self.has_blob(digest):
                os.replace(tmp / "blob", self.blob_path(digest))
        return LayerRecord(digest, diff_id, raw.count, media_type or LAYER_TYPES[kind])

    def add_layer(self, tar: BinaryIO, diff_id: str) -> LayerRecord:
        """Store a layer tar that sandkit made itself (a commit, a build step), uncompressed as
        written: its blob digest is its ``diff_id`` (verified while it is copied and applied).
        Hold `loading` from here to `create_image`, or a prune may take the layer meanwhile."""
        return self.ingest_layer(tar, digest=diff_id, diff_id=diff_id, media_type=LAYER_TYPES[""])

    def create_image(
        self,
        config: dict[str, Any],
        layers: list[LayerRecord] | tuple[LayerRecord, ...],
        *,
        tags: list[str] | tuple[str, ...] = (),
    ) -> ImageRecord:
        """Record a new image: the OCI image ``config`` (its ``rootfs`` is set from ``layers``,
        bottom first, all already in the store) and an OCI manifest for them; points ``tags``
        at it. The same config and layers always give the same image id and manifest digest."""
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]}}
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_bytes(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {"mediaType": self._oci_layer_type(x), "digest": x.digest, "size": x.size}
                for x in layers
            ],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        return self.register_image(manifest_bytes, config_bytes, tags=tags)

    def _oci_layer_type(self, layer: LayerRecord) -> str:
        """The OCI media type of a stored layer (a Docker-typed one of a pulled image, say)."""
        if layer.media_type in LAYER_TYPES.values():
            return layer.media_type
        return LAYER_TYPES[compression_of(self.blob_path(layer.digest))]

    # --- images and tags ---------------------------------------------------------------------

    def _record_path(self, image_id: str) -> Path:
        return self.home / "images" / f"{hex_of(image_id)}.json"

    def _refs(self) -> dict[str, str]:
        try:
            return json.loads((self.home / "refs.json").read_text())
        except FileNotFoundError:
            return {}

    def register_image(
        self,
        manifest: bytes,
        config: bytes,
        *,
        tags: list[str] | tuple[str, ...] = (),
        manifest_media_type: str | None = None,
    ) -> ImageRecord:
        """Record an image whose layers are all ingested, and point ``tags`` at it (atomic)."""
        try:
            man = json.loads(manifest)
            cfg = json.loads(config)
        except ValueError as e:
            raise ImageError(
                f"image manifest or config is not valid JSON ({e}): the image is corrupt"
            ) from None
        media_type = (
            manifest_media_type
            or man.get("mediaType")
            or "application/vnd.oci.image.manifest.v1+json"
        )
        config_digest = check_digest(man.get("config", {}).get("digest"), "config digest")
        verify_bytes(config, config_digest, "image config")
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        layers_desc = man.get("layers") or []
        check_layer_count(len(layers_desc), "the image")
        if len(diff_ids) != len(layers_desc):
            raise ImageError(
                f"image config lists {len(diff_ids)} layers but the manifest {len(layers_desc)}: "
                "the image is corrupt; rebuild or re-export it"
            )
        layers = []
        for desc, diff_id in zip(layers_desc, diff_ids, strict=True):  # counts checked above
            digest = check_digest(desc.get("digest"), "layer digest")
            if not (self.has_blob(digest) and self.has_layer(diff_id)):
                raise ImageError(f"layer {digest} must be ingested before the image is registered")
            layers.append(
                LayerRecord(
                    digest, diff_id, int(desc.get("size", 0)), str(desc.get("mediaType", ""))
                )
            )
        manifest_digest = self.put_blob(manifest)
        self.put_blob(config, config_digest)
        plat = "/".join(
            p for p in (cfg.get("os"), cfg.get("architecture"), cfg.get("variant")) if p
        )
        record = ImageRecord(
            config_digest,
            manifest_digest,
            media_type,
            tuple(layers),
            str(cfg.get("created") or ""),
            plat,
            time.time(),
        )
        refs = [reference.parse(t) for t in tags]
        with self._store_lock():
            write_json_atomic(self._record_path(config_digest), record.to_json())
            if refs:
                table = self._refs()
                table.update({str(r): config_digest for r in refs})
                write_json_atomic(self.home / "refs.json", table)
        return record

    def record(self, image_id: str) -> ImageRecord:
        """The record of image ``image_id`` (its config digest); `ImageNotFoundError` when the
        store has no such image."""
        try:
            return ImageRecord.from_json(json.loads(self._record_path(image_id).read_text()))
        except FileNotFoundError:
            raise ImageNotFoundError(
                f"image {image_id} is not in the local store {self.home}"
            ) from None

    def records(self) -> list[ImageRecord]:
        """The records of every image in the store, in no particular order (one removed meanwhile
        is left out)."""
        out = []
        for path in sorted((self.home / "images").glob("*.json")):
            try:
                out.append(ImageRecord.from_json(json.loads(path.read_text())))
            except (FileNotFoundError, ValueError):
                continue  # removed (or being replaced) concurrently
        return out

    def tags_of(self, image_id: str) -> list[str]:
        """The full references (``docker.io/library/busybox:latest``) that name image
        ``image_id``, sorted."""
        return sorted(ref for ref, target in self._refs().items() if target == image_id)

    def resolve(self, ref: str) -> ImageRecord:
        """Find a local image by name[:tag], name@digest, full id or unique id prefix."""
        text = ref.removeprefix("sha256:") if ref.startswith("sha256:") and "@" not in ref else None
        if (
            text is None
            and len(ref) >= 4
            and all(c in "0123456789abcdef" for c in ref)
            and len(ref) <= 64
        ):
            text = ref  # docker also accepts a bare id prefix
        if text is not None:
            matches = [r for r in self.records() if hex_of(r.id).startswith(text)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ImageNotFoundError(f"image id prefix {ref!r} is ambiguous: give more digits")
        parsed = reference.parse(ref)
        if parsed.digest:
            for r in self.records():
                if r.manifest_digest == parsed.digest or r.id == parsed.digest:
                    return r
        else:
            image_id = self._refs().get(str(parsed))
            if image_id:
                return self.record(image_id)
        raise ImageNotFoundError(
            f"image {ref!r} is not in the local store ({self.home}): load it with "
            "sandkit.Image.load(path) (`sandkit load -i FILE`) or pull it first"
        )

    def tag(self, image_id: str, ref: str) -> str:
        """Name image ``image_id`` with ``ref`` (``name:tag``; a tag held by another image moves
        to this one). Returns the full reference; `ImageNotFoundError` for an unknown image,
        `ImageError` for a digest reference."""
        parsed = reference.parse(ref)
        if parsed.digest:
            raise ImageError(f"cannot tag with a digest reference {ref!r}: give name:tag")
        self.record(image_id)
        with self._store_lock():
            table = self._refs()
            table[str(parsed)] = image_id
            write_json_atomic(self.home / "refs.json", table)
        return str(parsed)

    def untag(self, ref: str) -> str:
        """Remove the tag ``ref`` (the image stays); returns the id of the image it named,
        `ImageNotFoundError` when there is no such tag."""
        parsed = str(reference.parse(ref))
        with self._store_lock():
            table = self._refs()
            image_id = table.pop(parsed, None)
            if image_id is None:
                raise ImageNotFoundError(f"no local tag {ref!r}: see `sandkit images`")
            write_json_atomic(self.home / "refs.json", table)
        return image_id

    def remove_image(self, image_id: str) -> None:
        """Delete an image record and all its tags (layers and blobs go at the next prune).

        Refused with ImageInUseError while a container holds a lease on it: its layers are
        mounted as the container's root filesystem.
        """
        with self._store_lock():
            self.record(image_id)
            if self._in_use(image_id):
                raise ImageInUseError(
                    f"image {image_id[:19]} is used by a running container: stop the container "
                    "first, then remove the image"
                )
            table = {r: t for r, t in self._refs().items() if t != image_id}
            write_json_atomic(self.home / "refs.json", table)
            self._record_path(image_id).unlink()

    # --- push support and garbage collection -------------------------------------------------

    def image_blobs(self, image_id: str) -> list[dict[str, Any]]:
        """Descriptors of every blob of an image: manifest, config, then layers bottom to top."""
        rec = self.record(image_id)
        man = json.loads(self.read_blob(rec.manifest_digest))
        return [
            {
                "mediaType": rec.manifest_media_type,
                "digest": rec.manifest_digest,
                "size": self.blob_path(rec.manifest_digest).stat().st_size,
            },
            dict(man["config"]),
            *(dict(layer) for layer in man["layers"]),
        ]

    def prune(self) -> PruneReport:
        """Remove untagged images not in use, then layers and blobs no image references."""
        with self._flock(self.home / "locks" / "gc.lock", fcntl.LOCK_EX), self._store_lock():
            swept, freed = self._sweep_tmp()
            swept, freed = swept + self._swept[0], freed + self._swept[1]
            self._swept = (0, 0)  # reported once
            tagged = set(self._refs().values())
            removed = []
            for rec in self.records():
                if rec.id not in tagged and not self._in_use(rec.id):
                    self._record_path(rec.id).unlink()
                    removed.append(rec.id)
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for rec in self.records():
                keep_blobs.update(
                    (rec.id, rec.manifest_digest, *(layer.digest for layer in rec.layers))
                )
                keep_layers.update(layer.diff_id for layer in rec.layers)
            n_layers = n_blobs = 0
            for path in (self.home / "layers").iterdir():
                if "sha256:" + path.name not in keep_layers:
                    freed += self._size(path)
                    self._remove(path)
                    n_layers += 1
            for path in (self.home / "blobs" / "sha256").iterdir():
                if "sha256:" + path.name not in keep_blobs:
                    freed += path.stat().st_size
                    path.unlink()
                    n_blobs += 1
            return PruneReport(tuple(removed), n_layers, n_blobs, freed, swept)

    def layer_size(self, diff_id: str) -> int:
        """The size of layer ``diff_id``'s uncompressed tar, counted when it was applied (0 when
        unknown)."""
        try:
            return int(
                json.loads((self.home / "layers" / hex_of(diff_id) / "layer.json").read_text())[
                    "size"
                ]
            )
        except (FileNotFoundError, KeyError, ValueError):
            return 0
