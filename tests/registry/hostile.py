"""Small hostile HTTP servers on 127.0.0.1 for the registry tests: a relay in front of a real
registry whose answers a test may rewrite, that records every request it gets. No pytest in here."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs


@attrs.define
class Answer:
    """What a relay sends back: the registry's answer, or one a test made up."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@attrs.frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]


# Given the request as seen, answer it without asking the registry (None: relay it).
Intercept = Callable[[Seen], Answer | None]
# Change the registry's answer to a relayed request.
Edit = Callable[[Seen, Answer], Answer]


class Relay:
    """An HTTP reverse proxy on a port of its own (another origin than ``target``) that records
    each request's method, path and headers in ``seen``. ``intercept`` may answer a request
    itself; ``edit`` may rewrite the registry's answers. With ``keep_host`` the registry sees the
    relay's Host header, so that the URLs it sends back (upload Locations) point at the relay."""

    def __init__(
        self,
        target: str | None,
        *,
        intercept: Intercept | None = None,
        edit: Edit | None = None,
        keep_host: bool = False,
    ) -> None:
        self.seen: list[Seen] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                seen = Seen(self.command, self.path, dict(self.headers))
                relay.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                answer = intercept(seen) if intercept else None
                if answer is None:
                    answer = relay._forward(target, seen, body, keep_host)
                    if edit:
                        answer = edit(seen, answer)
                self.send_response(answer.status)
                for k, v in answer.headers:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def _forward(target: str | None, seen: Seen, body: bytes | None, keep_host: bool) -> Answer:
        if target is None:
            return Answer(404, [])
        dropped = ("connection",) if keep_host else ("host", "connection")
        headers = {k: v for k, v in seen.headers.items() if k.lower() not in dropped}
        conn = http.client.HTTPConnection(target, timeout=30)
        try:
            conn.request(
                seen.method, seen.path, body=body, headers=headers
            )  # (a Host given is kept)
            resp = conn.getresponse()
            return Answer(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def authorized(self) -> list[Seen]:
        """The requests that arrived with an Authorization header."""
        return [s for s in self.seen if any(k.lower() == "authorization" for k in s.headers)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- a scripted registry ------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@attrs.define
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


def tiny_image() -> tuple[Blob, Blob, Blob]:
    """(manifest, config, layer) of a valid one-layer linux/amd64 OCI image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    layer = Blob("application/vnd.oci.image.layer.v1.tar", buf.getvalue())
    config = Blob(
        "application/vnd.oci.image.config.v1+json",
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ).encode(),
    )
    manifest = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ).encode(),
    )
    return manifest, config, layer


# How a path is answered: given the request handler, write a whole response.
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def serve(blob: Blob) -> Route:
    return answer(
        200, blob.data, {"Content-Type": blob.media_type, "Docker-Content-Digest": blob.digest}
    )


def endless(
    status: int = 200, headers: dict[str, str] | None = None, *, cap: int = 512 << 20
) -> Route:
    """A body without end (up to ``cap`` bytes, so that a client that reads it all ends too)."""
    piece = b"A" * (1 << 20)

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()  # no Content-Length: the body lasts until the connection closes
        with contextlib.suppress(OSError):
            for _ in range(cap // len(piece)):
                h.wfile.write(piece)
        h.close_connection = True

    return route


def trickle(
    data: bytes, every: float, headers: dict[str, str] | None = None, *, for_at_most: float = 20.0
) -> Route:
    """``data`` one byte every ``every`` seconds, with an honest Content-Length (the whole of it
    if ``for_at_most`` allows)."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        deadline = time.monotonic() + for_at_most
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                h.wfile.write(data[i : i + 1])
                h.wfile.flush()
                if time.monotonic() > deadline:
                    break
                time.sleep(every)
        h.close_connection = True

    return route


def promise_more(
    blob: Blob,
    extra: int | None,
    release: threading.Event,
    *,
    for_at_most: float = 10.0,
    held: list[str] | None = None,
) -> Route:
    """``blob`` under a Content-Length ``extra`` bytes longer (None: no Content-Length, so the
    body ends when the connection does), then nothing more, the connection held open until
    ``release`` (or ``for_at_most`` seconds; then "timed out" goes to ``held``)."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", blob.media_type)
        if extra is not None:
            h.send_header("Content-Length", str(len(blob.data) + extra))
        h.end_headers()
        h.wfile.write(blob.data)
        h.wfile.flush()
        if not release.wait(for_at_most) and held is not None:
            held.append("timed out")
        h.close_connection = True

    return route


def silent(release: threading.Event, *, for_at_most: float = 5.0) -> Route:
    """Read the request, answer nothing until ``release`` (or ``for_at_most``), then hang up."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(for_at_most)
        h.close_connection = True

    return route


class ScriptedRegistry:
    """A registry on 127.0.0.1 that serves ``tiny_image()`` as ``team/app:1`` (plain HTTP, no
    auth) unless ``routes`` says otherwise for a path; ``requests`` lists the paths asked for."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.manifest, self.config, self.layer = tiny_image()
        self.routes: dict[str, Route] = {
            "/v2/": answer(200, b"{}"),
            "/v2/team/app/manifests/1": serve(self.manifest),
            f"/v2/team/app/manifests/{self.manifest.digest}": serve(self.manifest),
            f"/v2/team/app/blobs/{self.config.digest}": serve(self.config),
            f"/v2/team/app/blobs/{self.layer.digest}": serve(self.layer),
        }
        self.routes.update(routes or {})
        self.requests: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                registry.requests.append(path)
                registry.routes.get(path, answer(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'))(
                    self
                )

            do_HEAD = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ref(self, name: str = "team/app:1") -> str:
        return f"{self.host}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
