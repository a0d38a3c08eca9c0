"""Pull: resolve a reference to one image manifest, then stream each missing layer once.

Each layer is downloaded by an async task and consumed, as it arrives, by `Store.ingest_layer`
in a worker thread: one pass hashes the compressed bytes, writes the blob, decompresses, hashes
the tar and applies it. Layers go in parallel (as Docker: 3 at a time). A broken download is
resumed with a Range request. The image record is written last, so a failed pull leaves no image
(completed layers stay as verified cache that `image prune` removes if nothing uses them).
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Any

import anyio
import httpx
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from ...errors import DigestMismatchError, ImageError, ImageNotFoundError, RegistryError
from .. import reference
from ..digest import check_digest, verify_bytes
from ..platform import Platform
from ..store import ImageRecord, Store
from . import manifests
from .auth import Credentials
from .client import RegistryClient, TransientError, error_messages, scope
from .errors import SecondaryError, first_error
from .events import Progress, ProgressCallback, silent

MAX_CONFIG = 32 << 20
CONCURRENT_DOWNLOADS = 3  # Docker's default max-concurrent-downloads
HANDOFF_BYTES = 1 << 20  # network chunks are grouped into pieces this big for the apply thread
QUEUE_CHUNKS = 4  # pieces buffered between a download and its apply thread
_REPORT_EVERY = 512 << 10


class _Aborted(SecondaryError):
    """Raised in an apply thread when its download failed; the download's error is the news."""


class _ChunkReader(io.RawIOBase):
    """A blocking file object, for the apply thread, over chunks an async task downloads."""

    def __init__(self, receive: ObjectReceiveStream[bytes]) -> None:
        super().__init__()
        self._receive = receive
        self._chunk = b""
        self._pos = 0
        self.aborted = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        # Straight from the downloaded piece into the reader's buffer: one copy (slicing the
        # piece first and assigning that would be two, a measurable share of a pull's CPU).
        while self._pos >= len(self._chunk):  # (an empty piece must not read as the end)
            try:
                self._chunk, self._pos = anyio.from_thread.run(self._receive.receive), 0
            except anyio.EndOfStream:
                if self.aborted:
                    raise _Aborted("download aborted") from None
                return 0
        n = min(len(buf), len(self._chunk) - self._pos)
        buf[:n] = memoryview(self._chunk)[self._pos : self._pos + n]
        self._pos += n
        return n


class Puller:
    def __init__(self, client: RegistryClient, store: Store, ref: reference.Reference, progress: ProgressCallback) -> None:
        self.client = client
        self.store = store
        self.ref = ref
        self.report = progress
        self.scopes = frozenset({scope(ref.repository, "pull")})
        self.where = ref.familiar()

    # --- manifests and config ----------------------------------------------------------------

    async def manifest(self, target: str, expected: str | None) -> manifests.Manifest:
        resp = await self.client.request(
            "GET", f"/v2/{self.ref.repository}/manifests/{target}",
            scopes=self.scopes, headers={"Accept": manifests.ACCEPT},
        )
        if resp.status_code == 404:
            raise ImageNotFoundError(
                f"{self.where} was not found on registry {self.ref.registry} ({error_messages(resp)}): "
                "check the repository name and the tag or digest"
            )
        if resp.status_code != 200:
            raise RegistryError(f"fetching the manifest of {self.where} failed: HTTP {resp.status_code} ({error_messages(resp)})")
        header = resp.headers.get("docker-content-digest", "")
        if expected is None and header.startswith("sha256:"):
            expected = check_digest(header, "Docker-Content-Digest header")
        return manifests.parse(resp.content, resp.headers.get("content-type", ""), expected=expected, where=self.where)

    async def resolve(self, platform: Platform | None) -> manifests.Manifest:
        """The image manifest for ``platform``, through an index if the reference names one."""
        self.report(Progress("resolving", str(self.ref)))
        man = await self.manifest(self.ref.digest or self.ref.tag or "latest", self.ref.digest)
        if man.is_index:
            desc = manifests.select(man, platform, self.where)
            man = await self.manifest(desc["digest"], desc["digest"])
            if man.is_index:
                raise ImageError(f"{self.where}: the index for the chosen platform is another index; nested indexes are not supported")
        manifests.check_image(man, self.where)
        return man

    async def config(self, desc: dict[str, Any]) -> bytes:
        size = desc.get("size")
        if not isinstance(size, int) or not 0 < size <= MAX_CONFIG:
            raise RegistryError(f"the config of {self.where} has an invalid size {size!r} in the manifest")
        resp = await self.client.request("GET", f"/v2/{self.ref.repository}/blobs/{desc['digest']}", scopes=self.scopes)
        if resp.status_code != 200:
            raise RegistryError(
                f"fetching the config {desc['digest']} of {self.where} failed: HTTP {resp.status_code} ({error_messages(resp)})"
            )
        return verify_bytes(resp.content, desc["digest"], f"config of {self.where}", size)

    # --- layers ------------------------------------------------------------------------------

    async def download(self, desc: dict[str, Any], send: ObjectSendStream[bytes]) -> None:
        """Send the blob's bytes in order, resuming after a break with ``Range`` from the first
        byte not yet sent (or skipping what was already sent if the registry ignores Range)."""
        digest, size = desc["digest"], desc["size"]
        path = f"/v2/{self.ref.repository}/blobs/{digest}"
        sent = reported = 0
        failures = 0
        pending: list[bytes] = []  # received, not yet handed to the apply thread
        pending_len = 0
        while True:
            start = sent
            try:
                headers = {"Range": f"bytes={sent}-"} if sent else {}
                async with self.client.stream("GET", path, scopes=self.scopes, headers=headers) as resp:
                    skip = self._resume_offset(resp, sent, digest)
                    async for chunk in resp.aiter_raw():  # raw: never let httpx decode the blob
                        if skip:
                            chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                        if sent + pending_len + len(chunk) > size:
                            raise DigestMismatchError(
                                f"layer {digest} of {self.where} is longer than the {size} bytes its descriptor says: "
                                "the registry sent the wrong content"
                            )
                        if chunk:
                            pending.append(chunk)
                            pending_len += len(chunk)
                        if pending_len >= HANDOFF_BYTES:
                            sent += await self._hand_off(send, pending)
                            pending_len = 0
                        if sent - reported >= _REPORT_EVERY:
                            reported = sent
                            self.report(Progress("downloading", digest, sent, size))
                sent += await self._hand_off(send, pending)
                pending_len = 0
                if sent == size:
                    return
                raise TransientError(f"the body of {digest} ended after {sent} of {size} bytes")
            except (TransientError, httpx.TransportError) as e:
                sent += await self._hand_off(send, pending)  # what arrived intact is kept
                pending_len = 0
                failures = 0 if sent > start else failures + 1  # only attempts without progress count
                if failures >= self.client.retry.attempts:
                    raise RegistryError(
                        f"downloading layer {digest} of {self.where} from {self.ref.registry} failed "
                        f"{failures} times in a row ({e}): check that the registry is up, then pull again"
                    ) from None
                self.report(Progress("retrying", digest, sent, size, detail=str(e)))
                await anyio.sleep(self.client.retry.delay(failures))

    @staticmethod
    async def _hand_off(send: ObjectSendStream[bytes], pending: list[bytes]) -> int:
        """Pass buffered chunks on as one piece: each hand-off to the thread costs a loop round
        trip, so 64 KiB network reads are grouped into ~1 MiB pieces."""
        if not pending:
            return 0
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        await send.send(data)
        return len(data)

    def _resume_offset(self, resp: httpx.Response, sent: int, digest: str) -> int:
        """How many leading bytes of this response to drop (they were already sent)."""
        if resp.status_code == 404:
            raise RegistryError(f"layer {digest} of {self.where} is missing on registry {self.ref.registry} (blob unknown)")
        if sent and resp.status_code == 206:
            got = resp.headers.get("content-range", "")
            if not got.startswith(f"bytes {sent}-"):
                raise RegistryError(f"registry answered a resume of {digest} from byte {sent} with range {got!r}")
            return 0
        if resp.status_code == 200:
            return sent
        raise RegistryError(f"downloading layer {digest} of {self.where} failed: HTTP {resp.status_code} ({error_messages(resp)})")

    async def layer(self, desc: dict[str, Any], diff_id: str, limiter: anyio.CapacityLimiter) -> None:
        digest = desc["digest"]
        if self.store.has_blob(digest) and self.store.has_layer(diff_id):
            self.report(Progress("exists", digest, desc["size"], desc["size"]))
            return
        self.report(Progress("waiting", digest, 0, desc["size"]))
        async with limiter:
            send, receive = anyio.create_memory_object_stream[bytes](QUEUE_CHUNKS)
            reader = _ChunkReader(receive)

            async def fetch() -> None:
                try:
                    with send:
                        await self.download(desc, send)
                except BaseException:
                    reader.aborted = True  # set before `with send` closing wakes the reader
                    raise

            ingest = functools.partial(
                self.store.ingest_layer, reader, digest=digest, diff_id=diff_id,
                size=desc["size"], media_type=desc.get("mediaType"),
            )
            with receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fetch)
                    await anyio.to_thread.run_sync(ingest)
        self.report(Progress("complete", digest, desc["size"], desc["size"]))

    async def run(self, platform: Platform | None) -> ImageRecord:
        man = await self.resolve(platform)
        config = await self.config(man.body["config"])
        try:
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"the config of {self.where} has no rootfs.diff_ids: the image is corrupt") from None
        layers = man.body["layers"]
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise ImageError(f"{self.where}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}: the image is corrupt")
        for d in diff_ids:
            check_digest(d, f"diff_id in the config of {self.where}")
        with self.store.loading():
            limiter = anyio.CapacityLimiter(CONCURRENT_DOWNLOADS)
            async with anyio.create_task_group() as tg:
                for desc, diff_id in zip(layers, diff_ids):
                    tg.start_soon(self.layer, desc, diff_id, limiter)
            tags = [str(self.ref)] if self.ref.tag and not self.ref.digest else []
            record = self.store.register_image(man.raw, config, tags=tags, manifest_media_type=man.media_type)
        self.report(Progress("manifest", man.digest))
        return record


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
        async with RegistryClient(parsed.registry, insecure=insecure, ca_file=ca_file, auth=auth) as client:
            return await Puller(client, store, parsed, progress or silent).run(plat)
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def pull_sync(ref: str, **kwargs: Any) -> ImageRecord:
    """Run `pull` on a private trio loop in this thread (progress callbacks run here too)."""
    return anyio.run(functools.partial(pull, ref, **kwargs), backend="trio")
