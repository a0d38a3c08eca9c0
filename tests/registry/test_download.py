"""The layer download that the apply thread reads (download.py): bytes, resumes, cancellation."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
import trio

from sandkit.errors import DigestMismatchError, RegistryError
from sandkit.images.image import Image
from sandkit.images.registry.client import RegistryClient, scope
from sandkit.images.registry.download import BlobDownload
from sandkit.images.registry.pull import pull
from sandkit.images.store import Store

from .conftest import assert_clean, make_image, random_bytes
from .server import Registry

pytestmark = pytest.mark.slow


def _read_blob(
    host: str,
    digest: str,
    size: int,
    buffer_size: int,
    *,
    again_after_error: bool = False,
) -> tuple[bytes, list[str]]:
    """Read a blob of team/app through a `BlobDownload` in a worker thread, as a pull does.
    With ``again_after_error``, a failed read is followed by one more, as `Store.ingest_layer`
    drains its source after an error to name the blob's digest."""
    events: list[str] = []

    async def main() -> bytes:
        async with RegistryClient(host) as client:
            url = await client.url(f"/v2/team/app/blobs/{digest}")
            blob = BlobDownload(
                client,
                url,
                scopes=frozenset({scope("team/app", "pull")}),
                digest=digest,
                size=size,
                where="team/app",
                report=lambda e: events.append(e.status),
            )

            def drain() -> bytes:
                out, buf = bytearray(), bytearray(buffer_size)
                try:
                    while n := blob.readinto(buf):
                        out += buf[:n]
                except Exception:
                    if again_after_error:
                        blob.readinto(buf)
                    raise
                return bytes(out)

            with blob:
                return await anyio.to_thread.run_sync(drain)

    return trio.run(main), events


@pytest.mark.parametrize("buffer_size", [7, (64 << 10) + 1, 1 << 20])
def test_every_byte_in_order_across_a_resume_at_any_read_size(
    plain_registry: Registry, tmp_path: Path, store: Store, breaking_proxy, buffer_size: int
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(1 << 20))
    image.push(plain_registry.ref("team/app:1"))
    top = store.record(image.id).layers[-1]
    proxy = breaking_proxy(plain_registry.host, top.digest, breaks=1)
    data, events = _read_blob(proxy.host, top.digest, top.size, buffer_size)
    assert data == plain_registry.blob_file(top.digest).read_bytes()
    assert "retrying" in events and len(proxy.ranges) == 2 and proxy.ranges[1].startswith("bytes=")


def test_a_blob_longer_than_its_descriptor_fails_once_and_stays_failed(
    plain_registry: Registry, tmp_path: Path, store: Store, breaking_proxy
) -> None:
    image = make_image(tmp_path, store)
    image.push(plain_registry.ref("team/app:1"))
    top = store.record(image.id).layers[-1]
    proxy = breaking_proxy(plain_registry.host, top.digest, breaks=0)
    with pytest.raises(DigestMismatchError, match=r"longer than the .* bytes its descriptor says"):
        _read_blob(proxy.host, top.digest, top.size - 1, 1 << 20, again_after_error=True)
    assert proxy.ranges == [""]  # one request: reading again neither resumes nor retries


def _a_thread_blocked_reading_a_socket() -> bool:
    """Whether some thread is inside httpcore's socket read (in recv: its frame is on top)."""
    return any(
        frame.f_code.co_name == "read" and frame.f_code.co_filename.endswith("_backends/sync.py")
        for frame in sys._current_frames().values()
    )


@pytest.mark.trio
async def test_cancelling_a_pull_ends_a_stalled_download_at_once(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(4 << 20))
    await trio.to_thread.run_sync(
        image.push, plain_registry.ref("team/app:1")
    )  # (the sync API runs its own loop)
    top = store.record(image.id).layers[-1].digest
    proxy = breaking_proxy(plain_registry.host, top, breaks=1, stall=True)
    statuses: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: pull(
                f"{proxy.host}/team/app:1",
                store=other_store,
                progress=lambda e: statuses.append(e.status),
            )
        )
        await trio.to_thread.run_sync(proxy.stalled.wait)
        with trio.fail_after(10):
            # Polled: no event says that the apply thread is blocked in recv.
            while not _a_thread_blocked_reading_a_socket():  # noqa: ASYNC110
                await trio.sleep(0.005)
        cancelled_at = time.monotonic()
        nursery.cancel_scope.cancel()
    # The read timeout is 60 s: only shutting the socket down ends the read this soon.
    assert time.monotonic() - cancelled_at < 10
    assert_clean(other_store)
    assert "retrying" not in statuses  # the socket was shut on purpose, not broken


def test_progress_is_reported_on_the_callers_thread(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(2 << 20))
    image.push(plain_registry.ref("team/app:1"))
    threads: set[int] = set()
    statuses: list[str] = []

    def progress(event) -> None:  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        statuses.append(event.status)

    Image.pull(plain_registry.ref("team/app:1"), store=other_store, progress=progress)
    assert threads == {threading.get_ident()}
    assert "downloading" in statuses and statuses[-1] == "manifest"


def test_pull_runs_under_asyncio_too(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(2 << 20))
    image.push(plain_registry.ref("team/app:1"))
    statuses: list[str] = []

    async def main() -> str:
        record = await pull(
            plain_registry.ref("team/app:1"),
            store=other_store,
            progress=lambda e: statuses.append(e.status),
        )
        return record.id

    assert anyio.run(main, backend="asyncio") == image.id
    assert "downloading" in statuses


def test_a_download_refused_with_401_gets_a_token_from_the_loop_and_goes_on(
    tmp_path: Path, store: Store, other_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandkit.images.registry.auth import Authenticator

    from .server import make_registry

    reg = make_registry(tmp_path / "tok", "token")
    try:
        image = make_image(tmp_path, store)
        image.push(reg.ref("tok/app:1"), auth=reg.auth)
        # Once the layers are due, offer a token the registry refuses (as one revoked early):
        # each download thread must get a 401, ask the loop for a good token, and retry.
        layers_due = threading.Event()
        refused: list[str | None] = []
        header_for, on_unauthorized = Authenticator.header_for, Authenticator.on_unauthorized

        async def stale_once_layers_are_due(self, http, scopes):  # type: ignore[no-untyped-def]
            header = await header_for(self, http, scopes)
            return "Bearer stale" if layers_due.is_set() else header

        async def recording(self, http, response, scopes, sent):  # type: ignore[no-untyped-def]
            refused.append(sent)
            return await on_unauthorized(self, http, response, scopes, sent)

        monkeypatch.setattr(Authenticator, "header_for", stale_once_layers_are_due)
        monkeypatch.setattr(Authenticator, "on_unauthorized", recording)
        pulled = Image.pull(
            reg.ref("tok/app:1"),
            store=other_store,
            auth=reg.auth,
            progress=lambda e: layers_due.set() if e.status == "waiting" else None,
        )
        assert pulled.id == image.id
        # (None: the first request, sent before the registry's challenge was known)
        assert refused == [None] + ["Bearer stale"] * len(store.record(image.id).layers)
    finally:
        reg.close()


def test_two_pulls_of_one_image_into_one_store_fetch_each_layer_once(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    """As parallel test workers sharing a store do: the pull that waits for a layer's lock
    finds the layer stored when it gets it, and never requests the blob."""
    from concurrent.futures import ThreadPoolExecutor

    image = make_image(tmp_path, store, extra=random_bytes(2 << 20))
    image.push(plain_registry.ref("team/app:1"))
    top = store.record(image.id).layers[-1].digest
    # The first request for the layer is held long enough for the other pull to queue up behind
    # the layer's lock.
    proxy = breaking_proxy(plain_registry.host, top, breaks=0, delay=1.0)
    with ThreadPoolExecutor(2) as pool:
        ids = list(
            pool.map(
                lambda _: Image.pull(f"{proxy.host}/team/app:1", store=other_store).id, range(2)
            )
        )
    assert ids == [image.id, image.id]
    assert len(proxy.ranges) == 1


def test_blobs_redirected_to_object_storage_are_fetched_there_without_the_registry_token(
    tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    from .conftest import BlobStorage
    from .server import make_registry

    reg = make_registry(tmp_path / "tok", "token")
    storage = BlobStorage(reg)
    try:
        image = make_image(tmp_path, store, extra=random_bytes(1 << 20))
        image.push(reg.ref("tok/app:1"), auth=reg.auth)
        proxy = breaking_proxy(reg.host, "-", breaks=0, redirect_to=storage)
        pulled = Image.pull(f"{proxy.host}/tok/app:1", store=other_store, auth=reg.auth)
        assert pulled.id == image.id
        # The config (fetched by the loop) and each layer (by its thread) came from storage,
        # and the registry's bearer token never left for that other origin.
        assert len(storage.requests) == 1 + len(store.record(image.id).layers)
        assert not [r for r in storage.requests if "Authorization" in r]
    finally:
        storage.close()
        reg.close()


class _RedirectLoop:
    """Object storage gone wrong: every blob URL redirects to itself."""

    def __init__(self) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url_of(self, digest: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{digest}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_redirect_loop_is_a_registry_error_that_leaves_nothing(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    loop = _RedirectLoop()
    try:
        image = make_image(tmp_path, store)
        image.push(plain_registry.ref("team/app:1"))
        proxy = breaking_proxy(plain_registry.host, "-", breaks=0, redirect_to=loop)
        with pytest.raises(
            RegistryError, match=r"redirected GET /v2/team/app/blobs/sha256:\w+ more than 20 times"
        ):
            Image.pull(f"{proxy.host}/team/app:1", store=other_store)  # (the config meets it first)
        assert_clean(other_store)
        layer = store.record(image.id).layers[0]  # and a layer's download, in its thread
        with pytest.raises(RegistryError, match="a redirect loop"):
            _read_blob(proxy.host, layer.digest, layer.size, 1 << 20)
    finally:
        loop.close()
