"""Registry fixtures: a real docker-registry per variant on 127.0.0.1, an isolated store and
Docker config per test, images to push, and a proxy that breaks blob downloads on purpose."""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from images.conftest import oci_layout, tar_bytes  # the images engineer's layout builder

from sandkit.images.image import Image
from sandkit.images.registry import client as client_module
from sandkit.images.registry.client import RetryPolicy
from sandkit.images.store import Store

from .hostile import Relay
from .server import Registry, make_registry

if not shutil.which("docker-registry"):
    pytest.skip(
        "docker-registry is not installed (apt-get install docker-registry)",
        allow_module_level=True,
    )


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        client_module, "RETRY", RetryPolicy(attempts=3, base_delay=0.02, max_delay=0.1)
    )


@pytest.fixture(autouse=True)
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never read or write the real ~/.docker/config.json."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d / "config.json"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))
    return Store(tmp_path / "home")


@pytest.fixture
def other_store(tmp_path: Path) -> Store:
    """A second, empty store: "dropped locally" without touching the first."""
    return Store(tmp_path / "home2")


def assert_clean(store: Store) -> None:
    """No image record and no staging leftovers after a failed pull."""
    assert store.records() == []
    assert list((store.home / "tmp").iterdir()) == []


@pytest.fixture(scope="module", params=["http", "tls", "basic", "token"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    reg = make_registry(tmp_path_factory.mktemp(f"registry-{request.param}"), request.param)
    yield reg
    reg.close()


@pytest.fixture(scope="module", params=["basic", "token"])
def auth_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    reg = make_registry(tmp_path_factory.mktemp(f"auth-{request.param}"), request.param)
    yield reg
    reg.close()


@pytest.fixture
def relay() -> Iterator[Callable[..., Relay]]:
    """Make `Relay` servers (each on a port of its own: another origin), closed after the test."""
    made: list[Relay] = []

    def make(target: str | None, **kwargs: Any) -> Relay:
        made.append(Relay(target, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[Registry]:
    """A private plain-HTTP registry, for tests that break it."""
    reg = make_registry(tmp_path / "registry", "http")
    yield reg
    reg.close()


def busybox_layers(extra: bytes = b"") -> list[bytes]:
    data = Path("/bin/busybox").read_bytes()
    base = [
        ("bin", "dir", None),
        ("bin/busybox", "file", data, {"mode": 0o755}),
        ("tmp", "dir", None, {"mode": 0o1777}),
    ]
    base += [(f"bin/{a}", "symlink", "busybox") for a in ("sh", "cat", "echo", "ls")]
    top = [("etc", "dir", None), ("etc/message", "file", b"hello from the registry\n")]
    if extra:
        top.append(("data/blob.bin", "file", extra))
    return [tar_bytes(base), tar_bytes(top)]


def make_image(
    tmp_path: Path, store: Store, name: str = "bb", *, extra: bytes = b"", arch: str = "amd64"
) -> Image:
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed")
    layout = oci_layout(
        tmp_path / f"layout-{name}",
        busybox_layers(extra),
        ref_name=f"local/{name}:1",
        config={"Cmd": ["sh"], "Env": ["PATH=/bin"]},
    )
    if arch != "amd64":
        import json

        # Rewrite the config's architecture and re-link it: a second "platform" of the same image.
        from images.conftest import sha

        index = json.loads((layout / "index.json").read_text())
        blobs = layout / "blobs" / "sha256"
        man = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
        cfg = json.loads((blobs / man["config"]["digest"][7:]).read_bytes())
        cfg["architecture"] = arch
        raw_cfg = json.dumps(cfg).encode()
        (blobs / sha(raw_cfg)[7:]).write_bytes(raw_cfg)
        man["config"].update(digest=sha(raw_cfg), size=len(raw_cfg))
        raw_man = json.dumps(man).encode()
        (blobs / sha(raw_man)[7:]).write_bytes(raw_man)
        index["manifests"][0].update(digest=sha(raw_man), size=len(raw_man))
        (layout / "index.json").write_text(json.dumps(index))
    return Image.load(layout, store=store)


@pytest.fixture
def busybox(tmp_path: Path, store: Store) -> Image:
    return make_image(tmp_path, store)


class BreakingProxy:
    """An HTTP reverse proxy in front of a registry that cuts GETs of one blob short (sending
    the full Content-Length, then closing) for the first ``breaks`` requests. With ``stall``,
    it keeps the connection open after the half instead, sending nothing more until closed.
    ``delay`` holds the first GET of the blob that many seconds before answering it. With
    ``redirect_to`` (a `BlobStorage`), it answers every blob GET with a redirect there instead,
    as Docker Hub and most cloud registries send blob downloads to object storage."""

    def __init__(
        self,
        target: str,
        digest: str,
        breaks: int,
        *,
        stall: bool = False,
        delay: float = 0.0,
        redirect_to: BlobStorage | None = None,
    ) -> None:
        self.breaks = breaks
        self.ranges: list[str] = []
        self.stalled = threading.Event()  # set once a stalled download has had its half
        self._release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                if redirect_to and self.command == "GET" and "/blobs/sha256:" in self.path:
                    self.send_response(307)
                    self.send_header("Location", redirect_to.url_of(self.path.rsplit("/", 1)[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                conn = http.client.HTTPConnection(target, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                cut = self.command == "GET" and digest in self.path and proxy.breaks > 0
                if cut:
                    proxy.breaks -= 1
                if self.command == "GET" and digest in self.path:
                    proxy.ranges.append(self.headers.get("Range", ""))
                    if len(proxy.ranges) == 1:
                        time.sleep(delay)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if cut else data)
                if cut and stall:
                    self.wfile.flush()
                    proxy.stalled.set()
                    proxy._release.wait()
                self.close_connection = True
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _relay

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class BlobStorage:
    """The object storage a registry redirects blob downloads to: serves a registry's blob files
    by digest on a port of its own (another origin), honours Range, and keeps the headers of
    every request it gets."""

    def __init__(self, registry: Registry) -> None:
        self.requests: list[dict[str, str]] = []
        storage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                storage.requests.append(dict(self.headers))
                data = registry.blob_file(self.path.split("?", 1)[0].lstrip("/")).read_bytes()
                start = int(self.headers.get("Range", "bytes=0-")[len("bytes=") :].rstrip("-"))
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url_of(self, digest: str) -> str:
        return f"http://{self.host}/{digest}?X-Amz-Signature=0123abcd"  # a pre-signed URL's shape

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def breaking_proxy() -> Iterator[Any]:
    made: list[BreakingProxy] = []

    def make(
        target: str,
        digest: str,
        breaks: int,
        *,
        stall: bool = False,
        delay: float = 0.0,
        redirect_to: BlobStorage | None = None,
    ) -> BreakingProxy:
        made.append(
            BreakingProxy(target, digest, breaks, stall=stall, delay=delay, redirect_to=redirect_to)
        )
        return made[-1]

    yield make
    for p in made:
        p.close()


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
