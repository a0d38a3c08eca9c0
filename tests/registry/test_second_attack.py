"""Hostile registries found by a second attack on the fixes of issue 15 (see test_limits.py)."""

from __future__ import annotations

import contextlib
import http.server
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandkit.images.image import Image
from sandkit.images.registry.bodies import StalledError
from sandkit.images.store import Store

from .hostile import Blob, ScriptedRegistry, endless, serve
from .test_limits import _pull_in_subprocess, scripted, short_progress  # noqa: F401 - fixtures


def trickled_headers(blob: Blob, every: float, left: list[str], *, for_at_most: float = 4.0):
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


TRICKLED = {
    # the manifest is read by the async client, a layer by the sync one (in a thread)
    "manifest": lambda reg, left: {
        "/v2/team/app/manifests/1": trickled_headers(reg.manifest, 0.05, left)
    },
    "layer": lambda reg, left: {
        f"/v2/team/app/blobs/{reg.layer.digest}": trickled_headers(reg.layer, 0.05, left)
    },
}


@pytest.mark.parametrize("case", TRICKLED)
def test_trickled_response_headers_fail_within_the_progress_period(
    case: str, scripted, store: Store, short_progress
) -> None:
    left: list[str] = []
    reg = scripted(lambda reg: TRICKLED[case](reg, left))
    with pytest.raises(StalledError):
        Image.pull(reg.ref(), store=store)
    assert store.records() == []
    # The rule's period is 0.5 s, the registry trickles for 4 s: the client must not wait it out.
    # It hangs up; the registry notices at its next write or two (polled: no fixed sleep). A
    # connection left open would have had its trickle end, and the honest answer sent, by then.
    deadline = time.monotonic() + 5.0
    while not left and time.monotonic() < deadline:
        time.sleep(0.01)
    assert left == ["left early"], "the pull waited for the trickled headers to end"


# --- the body of a redirect ---------------------------------------------------------------------


def _redirected(
    path: str, blob: Callable[[ScriptedRegistry], Blob]
) -> Callable[[ScriptedRegistry], dict]:
    """``path`` answered by a redirect with an endless body (1 GiB) to where ``blob`` is served."""

    def routes(reg: ScriptedRegistry) -> dict:
        moved = {"Location": f"http://{reg.host}/moved", "Content-Type": "text/plain"}
        return {path.format(reg=reg): endless(302, moved, cap=1 << 30), "/moved": serve(blob(reg))}

    return routes


REDIRECTS = {
    # the manifest is read by the async client, a layer by the sync one (in a thread)
    "manifest": _redirected("/v2/team/app/manifests/1", lambda reg: reg.manifest),
    "layer": _redirected("/v2/team/app/blobs/{reg.layer.digest}", lambda reg: reg.layer),
}


@pytest.mark.parametrize("case", REDIRECTS)
def test_an_endless_redirect_body_costs_bounded_memory(case: str, scripted, tmp_path: Path) -> None:
    # Blobs are often redirected to object storage, so redirects are followed; the body of the
    # redirect itself is never used, and must not be read without a bound.
    reg = scripted(REDIRECTS[case])
    outcome, growth_kib = _pull_in_subprocess(reg.ref(), tmp_path)
    assert growth_kib < 48 << 10, f"peak RSS grew by {growth_kib} KiB ({outcome})"
    assert outcome == "pulled"
