"""Hostile registries found by a second attack on the fixes of issue 15 (see test_limits.py)."""

from __future__ import annotations

import contextlib
import http.server
import time
from collections.abc import Callable, Iterator

import pytest

from sandkit.images.image import Image
from sandkit.images.registry import bodies
from sandkit.images.registry.bodies import ProgressRule, StalledError
from sandkit.images.store import Store

from .hostile import Blob, ScriptedRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedRegistry]]:
    made: list[ScriptedRegistry] = []

    def make(routes: Callable[[ScriptedRegistry], dict]) -> ScriptedRegistry:
        reg = ScriptedRegistry()
        reg.routes.update(routes(reg))
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.close()


@pytest.fixture
def short_progress(monkeypatch: pytest.MonkeyPatch) -> ProgressRule:
    rule = ProgressRule(period=0.5, min_bytes=1024)
    monkeypatch.setattr(bodies, "PROGRESS", rule)
    return rule


def trickled_headers(blob: Blob, every: float, left: list[str], *, for_at_most: float = 8.0):
    """A status line, then a header one byte every ``every`` seconds (never long enough for a read
    to time out, nor for the client's header-size limit) for ``for_at_most`` seconds, then an
    honest answer. "left early" goes to ``left`` if the client hung up while it trickled."""

    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        deadline = time.monotonic() + for_at_most
        try:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            h.wfile.flush()
            while time.monotonic() < deadline:
                h.wfile.write(b"a")
                h.wfile.flush()
                time.sleep(every)
        except OSError:
            left.append("left early")
            return
        with contextlib.suppress(OSError):
            h.wfile.write(
                f"\r\nContent-Type: {blob.media_type}\r\nContent-Length: {len(blob.data)}\r\n"
                f"Docker-Content-Digest: {blob.digest}\r\n\r\n".encode()
            )
            h.wfile.write(blob.data)
        h.close_connection = True

    return route


@pytest.mark.xfail(strict=True, reason="HOLE: the progress rule starts only with the body; headers may trickle")
def test_trickled_response_headers_fail_within_the_progress_period(scripted, store: Store, short_progress) -> None:
    left: list[str] = []
    reg = scripted(lambda reg: {"/v2/team/app/manifests/1": trickled_headers(reg.manifest, 0.05, left)})
    with pytest.raises(StalledError):
        Image.pull(reg.ref(), store=store)
    assert store.records() == []
    # The rule's period is 0.5 s, the registry trickles for 8 s: the client must not wait it out.
    assert left == ["left early"], "the pull waited for the trickled headers to end"
