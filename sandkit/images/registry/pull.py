"""Pull: resolve a reference to one image manifest, then stream each missing layer once.

Each layer is read, as it downloads, by `Store.ingest_layer` in a worker thread that fetches it
itself (download.py): one pass hashes the compressed bytes, writes the blob, decompresses, hashes
the tar and applies it. Layers go in parallel (as Docker: 3 at a time). A broken download is
resumed with a Range request. The image record is written last, so a failed pull leaves no image
(completed layers stay as verified cache that `image prune` removes if nothing uses them).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import anyio

from ...errors import ImageError, ImageNotFoundError, RegistryError
from .. import reference
from ..digest import check_digest, verify_bytes
from ..documents import check_config, check_layer_type, image_descriptors
from ..platform import Platform
from ..store import ImageRecord, Store
from . import manifests
from .auth import Credentials
from .bodies import MAX_DOCUMENT, Limit
from .client import RegistryClient, error_messages, scope
from .download import BlobDownload
from .errors import first_error
from .events import Progress, ProgressCallback, silent

MAX_CONFIG = MAX_DOCUMENT  # skopeo's cap on a config (4 MiB)
CONCURRENT_DOWNLOADS = 3  # Docker's default max-concurrent-downloads


class Puller:
    """One pull of ``ref`` from a registry into ``store``: resolves the manifest for the
    platform, then fetches the config and streams each layer into the store, reporting `Progress`
    to ``progress``."""

    def __init__(
        self,
        client: RegistryClient,
        store: Store,
        ref: reference.Reference,
        progress: ProgressCallback,
    ) -> None:
        self.client = client
        self.store = store
        self.ref = ref
        self.report = progress
        self.scopes = frozenset({scope(ref.repository, "pull")})
        self.where = ref.familiar()

    # --- manifests and config ----------------------------------------------------------------

    async def manifest(
        self, target: str, expected: str | None, size: int | None = None
    ) -> manifests.Manifest:
        """The manifest ``target`` (a tag or digest); ``size``: what its index entry says."""
        what = f"the manifest of {self.where}"
        limit = (
            Limit(size, what, exact=True)
            if size is not None
            else Limit(manifests.MAX_MANIFEST, what)
        )
        resp = await self.client.request(
            "GET",
            f"/v2/{self.ref.repository}/manifests/{target}",
            scopes=self.scopes,
            headers={"Accept": manifests.ACCEPT},
            limit=limit,
        )
        if resp.status_code == 404:
            raise ImageNotFoundError(
                f"{self.where} was not found on registry {self.ref.registry} ({error_messages(resp)}): "
                "check the repository name and the tag or digest"
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"fetching the manifest of {self.where} failed: HTTP {resp.status_code} ({error_messages(resp)})"
            )
        header = resp.headers.get("docker-content-digest", "")
        if expected is None and header.startswith("sha256:"):
            expected = check_digest(header, "Docker-Content-Digest header")
        return manifests.parse(
            resp.content, resp.headers.get("content-type", ""), expected=expected, where=self.where
        )

    async def resolve(self, platform: Platform | None) -> manifests.Manifest:
        """The image manifest for ``platform``, through an index if the reference names one."""
        self.report(Progress("resolving", str(self.ref)))
        man = await self.manifest(self.ref.digest or self.ref.tag or "latest", self.ref.digest)
        if man.is_index:
            desc = manifests.select(man, platform, self.where)
            man = await self.manifest(desc["digest"], desc["digest"], desc["size"])
            if man.is_index:
                raise ImageError(
                    f"{self.where}: the index for the chosen platform is another index; "
                    "nested indexes are not supported"
                )
        _, layers = image_descriptors(man.body, self.where)
        for layer in layers:
            check_layer_type(layer, self.where)
        return man

    async def config(self, desc: dict[str, Any]) -> bytes:
        """The image config of descriptor ``desc``, fetched and verified against its digest and
        size (at most MAX_CONFIG, 4 MiB); `RegistryError` when it cannot be fetched."""
        size = desc.get("size")
        if not isinstance(size, int) or not 0 < size <= MAX_CONFIG:
            raise RegistryError(
                f"the config of {self.where} has an invalid size {size!r} in the manifest"
            )
        resp = await self.client.request(
            "GET",
            f"/v2/{self.ref.repository}/blobs/{desc['digest']}",
            scopes=self.scopes,
            limit=Limit(size, f"the config of {self.where}", exact=True),
        )
        if resp.status_code != 200:
            raise RegistryError(
                f"fetching the config {desc['digest']} of {self.where} failed: "
                f"HTTP {resp.status_code} ({error_messages(resp)})"
            )
        return verify_bytes(resp.content, desc["digest"], f"config of {self.where}", size)

    # --- layers ------------------------------------------------------------------------------

    async def layer(
        self, desc: dict[str, Any], diff_id: str, limiter: anyio.CapacityLimiter
    ) -> None:
        """Fetch, verify and apply the layer of descriptor ``desc`` (uncompressed digest
        ``diff_id``) into the store in one pass, at most ``limiter``'s number at once; a layer
        the store has already is skipped. Cancelling the pull ends the download at once."""
        digest = desc["digest"]
        if self.store.has_blob(digest) and self.store.has_layer(diff_id):
            self.report(Progress("exists", digest, desc["size"], desc["size"]))
            return
        self.report(Progress("waiting", digest, 0, desc["size"]))
        async with limiter:
            url = await self.client.url(f"/v2/{self.ref.repository}/blobs/{digest}")
            blob = BlobDownload(
                self.client,
                url,
                scopes=self.scopes,
                digest=digest,
                size=desc["size"],
                where=self.where,
                report=self.report,
            )
            ingest = functools.partial(
                self.store.ingest_layer,
                blob,
                digest=digest,
                diff_id=diff_id,
                size=desc["size"],
                media_type=desc.get("mediaType"),
            )
            done = anyio.Event()
            with blob:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_interrupt_when_cancelled, blob, done)
                    try:
                        await anyio.to_thread.run_sync(ingest)
                    finally:
                        done.set()
        self.report(Progress("complete", digest, desc["size"], desc["size"]))

    async def run(self, platform: Platform | None) -> ImageRecord:
        """Pull the image for ``platform`` (default: the host's) and register it in the store,
        tagged with the reference's tag; returns its record. Nothing half-made stays in the store
        when it fails or is cancelled."""
        man = await self.resolve(platform)
        config = await self.config(man.body["config"])
        diff_ids = check_config(config, self.where)
        layers = man.body["layers"]
        if len(diff_ids) != len(layers):
            raise ImageError(
                f"{self.where}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}: "
                "the image is corrupt"
            )
        with self.store.loading(layers=len(layers)):  # one disk budget for all layers
            limiter = anyio.CapacityLimiter(CONCURRENT_DOWNLOADS)
            async with anyio.create_task_group() as tg:
                for desc, diff_id in zip(layers, diff_ids, strict=True):
                    tg.start_soon(self.layer, desc, diff_id, limiter)
            tags = [str(self.ref)] if self.ref.tag and not self.ref.digest else []
            record = self.store.register_image(
                man.raw, config, tags=tags, manifest_media_type=man.media_type
            )
        self.report(Progress("manifest", man.digest))
        return record


async def _interrupt_when_cancelled(blob: BlobDownload, done: anyio.Event) -> None:
    """Wait beside the thread applying ``blob`` until it is ``done``. If the pull is cancelled
    first, end the download: the thread, which is not abandoned while it writes to the store,
    then stops at once instead of at the end of a read from a stalled registry."""
    try:
        await done.wait()
    except anyio.get_cancelled_exc_class():
        blob.interrupt()
        raise


async def pull(
    ref: str,
    *,
    store: Store | None = None,
    platform: str | Platform | None = None,
    insecure: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    auth: Credentials | tuple[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> ImageRecord:
    """Pull ``ref`` into the store (async; see `sandkit.Image.pull` for the sync API)."""
    parsed = reference.parse(ref)
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    store = store or Store.default()
    try:
        async with RegistryClient(
            parsed.registry, insecure=insecure, ca_file=ca_file, auth=auth
        ) as client:
            return await Puller(client, store, parsed, progress or silent).run(plat)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def pull_sync(ref: str, **kwargs: Any) -> ImageRecord:
    """Run `pull` on a private trio loop in this thread (progress callbacks run here too)."""
    return anyio.run(functools.partial(pull, ref, **kwargs), backend="trio")
