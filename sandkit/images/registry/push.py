"""Push: upload the blobs a registry lacks, then the manifest under the tag.

Per blob, cheapest first: HEAD (already there), cross-repository mount from another repository
of the same registry that this image was pulled from or pushed to (its tags say which), then an
upload: monolithic (one PUT) or, above ``chunk_size``, chunked (PATCH pieces, then PUT). The
blobs are the stored ones, byte for byte, so digests never change between pull and push.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from ...errors import DigestMismatchError, ImageError, RegistryError
from .. import reference
from ..digest import CHUNK
from ..store import Store
from .auth import Credentials
from .client import RegistryClient, error_messages, scope
from .errors import first_error, printable
from .events import Progress, ProgressCallback, silent

CONCURRENT_UPLOADS = 5  # Docker's default max-concurrent-uploads
DEFAULT_CHUNK_SIZE = 64 << 20  # blobs above this go up in PATCH chunks of this size


class Pusher:
    """One push of a stored image as ``ref``: uploads the blobs the registry lacks (mounting them
    from ``sources``, other repositories of that registry, where it can), then the manifest."""

    def __init__(
        self,
        client: RegistryClient,
        store: Store,
        ref: reference.Reference,
        sources: list[str],
        progress: ProgressCallback,
        chunk_size: int,
    ) -> None:
        self.client = client
        self.store = store
        self.ref = ref
        self.repo = ref.repository
        self.sources = sources
        self.report = progress
        self.chunk_size = chunk_size
        self.scopes = frozenset(
            {scope(self.repo, "pull", "push"), *(scope(s, "pull") for s in sources)}
        )

    def _fail(self, what: str, resp: httpx.Response) -> RegistryError:
        return RegistryError(
            f"{what} for {self.ref.familiar()} failed: HTTP {resp.status_code} ({error_messages(resp)})"
        )

    async def _location(self, resp: httpx.Response) -> str:
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryError(
                f"registry {self.ref.registry} started an upload without a Location header"
            )
        return str(httpx.URL(await self.client.base_url() + "/").join(loc))

    async def blob(self, desc: dict[str, Any], limiter: anyio.CapacityLimiter) -> None:
        """Make blob ``desc`` present in the target repository: nothing if it is there, a
        cross-repository mount if a source has it, else an upload (in ``chunk_size`` pieces when
        larger), at most ``limiter``'s number at once."""
        digest, size = desc["digest"], int(desc["size"])
        async with limiter:
            path = f"/v2/{self.repo}/blobs/{digest}"
            resp = await self.client.request("HEAD", path, scopes=self.scopes)
            if resp.status_code == 200:
                self.report(Progress("exists", digest, size, size))
                return
            location = None
            for source in self.sources:
                resp = await self.client.request(
                    "POST",
                    f"/v2/{self.repo}/blobs/uploads/?mount={digest}&from={source}",
                    scopes=self.scopes,
                )
                if resp.status_code == 201:
                    self.report(Progress("mounted", digest, size, size, detail=source))
                    return
                if resp.status_code == 202:  # mount refused; the registry opened an upload instead
                    location = await self._location(resp)
                    break
            if location is None:
                resp = await self.client.request(
                    "POST", f"/v2/{self.repo}/blobs/uploads/", scopes=self.scopes
                )
                if resp.status_code != 202:
                    raise self._fail(f"starting the upload of {digest}", resp)
                location = await self._location(resp)
            if size > self.chunk_size:
                location = await self._patch_chunks(location, digest, size)
                body = None
            else:
                body = self._reader(digest, 0, size)
            url = httpx.URL(location).copy_merge_params({"digest": digest})
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size if body else 0),
            }
            resp = await self.client.request(
                "PUT", str(url), scopes=self.scopes, headers=headers, body=body or b""
            )
            if resp.status_code != 201:
                if "DIGEST_INVALID" in error_messages(resp):
                    raise DigestMismatchError(
                        f"registry says blob {digest} does not match its digest: the local copy is corrupt; "
                        "remove the image and pull or load it again"
                    )
                raise self._fail(f"uploading {digest}", resp)
            self.report(Progress("complete", digest, size, size))

    def _reader(self, digest: str, start: int, length: int) -> Callable[[], AsyncIterator[bytes]]:
        """A replayable body: each call re-reads the stored blob (so a retry resends it)."""

        async def chunks() -> AsyncIterator[bytes]:
            with self.store.open_blob(digest) as f:
                f.seek(start)
                left = length
                while left:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        raise ImageError(
                            f"stored blob {digest} is shorter than its descriptor: pull or load the image again"
                        )
                    left -= len(data)
                    yield data
                    self.report(Progress("uploading", digest, start + length - left, None))

        return chunks

    async def _patch_chunks(self, location: str, digest: str, size: int) -> str:
        """Chunked upload: PATCH consecutive ranges; each answer gives the next Location."""
        offset = 0
        while offset < size:
            n = min(self.chunk_size, size - offset)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + n - 1}",
                "Content-Length": str(n),
            }
            resp = await self.client.request(
                "PATCH",
                location,
                scopes=self.scopes,
                headers=headers,
                body=self._reader(digest, offset, n),
            )
            if resp.status_code != 202:
                raise self._fail(f"uploading a chunk of {digest}", resp)
            location = await self._location(resp)
            offset += n
        return location

    async def manifest(self, raw: bytes, media_type: str, digest: str) -> None:
        """Upload the manifest ``raw`` under the reference's tag (or digest);
        `DigestMismatchError` when the registry stored it under another digest."""
        target = self.ref.tag or self.ref.digest or "latest"
        if self.ref.digest and self.ref.digest != digest:
            raise ImageError(
                f"cannot push image {digest} as {self.ref.familiar()}: the digest in the reference differs"
            )
        resp = await self.client.request(
            "PUT",
            f"/v2/{self.repo}/manifests/{target}",
            scopes=self.scopes,
            headers={"Content-Type": media_type},
            body=raw,
        )
        if resp.status_code not in (200, 201):
            raise self._fail("uploading the manifest", resp)
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise DigestMismatchError(
                f"registry stored the manifest as {printable(echoed)}, not {digest}: it altered the manifest"
            )
        self.report(Progress("manifest", digest, len(raw), len(raw)))

    async def run(self, image_id: str) -> str:
        """Push image ``image_id``: its blobs, then its manifest; returns the manifest's digest."""
        rec = self.store.record(image_id)
        _manifest, *blobs = self.store.image_blobs(image_id)
        limiter = anyio.CapacityLimiter(CONCURRENT_UPLOADS)
        async with anyio.create_task_group() as tg:
            for desc in blobs:
                tg.start_soon(self.blob, desc, limiter)
        await self.manifest(
            self.store.read_blob(rec.manifest_digest), rec.manifest_media_type, rec.manifest_digest
        )
        return rec.manifest_digest


def mount_sources(store: Store, image_id: str, target: reference.Reference) -> list[str]:
    """Other repositories on the target's registry that hold this image (from its tags)."""
    repos = []
    for tag in store.tags_of(image_id):
        r = reference.parse(tag)
        if (
            r.registry == target.registry
            and r.repository != target.repository
            and r.repository not in repos
        ):
            repos.append(r.repository)
    return repos[:3]  # each failed mount costs a round trip per blob


async def push(
    image_id: str,
    ref: str,
    *,
    store: Store | None = None,
    insecure: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    auth: Credentials | tuple[str, str] | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> str:
    """Push the stored image ``image_id`` as ``ref``; returns the manifest digest."""
    parsed = reference.parse(ref)
    store = store or Store.default()
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    sources = mount_sources(store, image_id, parsed)
    try:
        async with RegistryClient(
            parsed.registry, insecure=insecure, ca_file=ca_file, auth=auth
        ) as client:
            return await Pusher(client, store, parsed, sources, progress or silent, chunk_size).run(
                image_id
            )
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def push_sync(image_id: str, ref: str, **kwargs: Any) -> str:
    """Run `push` on a private trio loop in this thread (progress callbacks run here too); the
    same arguments, the same result."""
    return anyio.run(functools.partial(push, image_id, ref, **kwargs), backend="trio")
