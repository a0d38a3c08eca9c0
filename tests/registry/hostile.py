"""Small hostile HTTP servers on 127.0.0.1 for the registry tests: a relay in front of a real
registry whose answers a test may rewrite, that records every request it gets. No pytest in here."""

from __future__ import annotations

import http.client
import http.server
import threading
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
    itself; ``edit`` may rewrite the registry's answers."""

    def __init__(self, target: str | None, *, intercept: Intercept | None = None, edit: Edit | None = None) -> None:
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
                    answer = relay._forward(target, seen, body)
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
    def _forward(target: str | None, seen: Seen, body: bytes | None) -> Answer:
        if target is None:
            return Answer(404, [])
        headers = {k: v for k, v in seen.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection(target, timeout=30)
        try:
            conn.request(seen.method, seen.path, body=body, headers=headers)
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
