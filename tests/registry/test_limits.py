"""Hostile registries cannot exhaust the host (issue 15, hole 1): every body but a layer's is
read against a limit, and every request and layer download must keep making progress.

Each registry here is a `ScriptedRegistry` on 127.0.0.1; memory is measured in a subprocess:
the growth of its peak RSS (VmHWM, reset just before the pull) over its RSS before the pull."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandkit.errors import DigestMismatchError, RegistryError
from sandkit.images.image import Image
from sandkit.images.registry import bodies
from sandkit.images.registry.bodies import ProgressRule, StalledError
from sandkit.images.store import Store

from .hostile import Blob, ScriptedRegistry, answer, endless, promise_more, serve, silent, trickle

pytestmark = pytest.mark.slow  # starts registry servers

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedRegistry]]:
    made: list[ScriptedRegistry] = []

    def make(routes: Callable[[ScriptedRegistry], dict] | None = None) -> ScriptedRegistry:
        reg = ScriptedRegistry()
        reg.routes.update(routes(reg) if routes else {})
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


# --- sizes: an endless body costs bounded memory ------------------------------------------------

_MEASURE = r"""
import json, sys
import anyio, httpx, trio  # loaded before the baseline: only the pull's own memory counts
from sandkit.images.image import Image
from sandkit.images.store import Store

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

store = Store(sys.argv[2])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the RSS of now
before = kib("VmRSS")
try:
    Image.pull(sys.argv[1], store=store, platform="linux/amd64")
    outcome = "pulled"
except Exception as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"outcome": outcome, "growth_kib": kib("VmHWM") - before}))
"""


def _pull_in_subprocess(ref: str, tmp_path: Path) -> tuple[str, int]:
    """Pull ``ref`` in a fresh interpreter: (what happened, growth of its peak RSS in KiB)."""
    env = {
        **os.environ,
        "SANDKIT_HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, ref, str(tmp_path / "home")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["outcome"], result["growth_kib"]


def _index_of(reg: ScriptedRegistry) -> Blob:
    entry = reg.manifest.descriptor(platform={"os": "linux", "architecture": "amd64"})
    return Blob(
        OCI_INDEX,
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode(),
    )


def _token_auth(reg: ScriptedRegistry) -> dict:
    challenge = {"WWW-Authenticate": f'Bearer realm="http://{reg.host}/token",service="hostile"'}
    return {
        "/v2/": answer(401, b"{}", challenge),
        "/v2/team/app/manifests/1": answer(401, b"{}", challenge),
        "/token": endless(200, {"Content-Type": "application/json"}),
    }


ENDLESS_BODIES: dict[str, tuple[Callable[[ScriptedRegistry], dict], str]] = {
    # what is endless: (routes, what the pull must end with)
    "ping": (lambda reg: {"/v2/": endless(200)}, "pulled"),
    "ping-401": (lambda reg: {"/v2/": endless(401, {"WWW-Authenticate": "Basic"})}, "pulled"),
    "manifest": (
        lambda reg: {"/v2/team/app/manifests/1": endless(200, {"Content-Type": OCI_MANIFEST})},
        "RegistryError: the manifest of .* is longer than the 4194304 bytes allowed",
    ),
    "manifest-announced-100GB": (
        lambda reg: {"/v2/team/app/manifests/1": endless(200, {"Content-Length": str(100 << 30)})},
        r"RegistryError: the manifest of .* announces 107374182400 bytes \(Content-Length\), more than the 4194304",
    ),
    "manifest-in-index": (
        lambda reg: {
            "/v2/team/app/manifests/1": serve(_index_of(reg)),
            f"/v2/team/app/manifests/{reg.manifest.digest}": endless(
                200, {"Content-Type": OCI_MANIFEST}
            ),
        },
        "RegistryError: the manifest of .* is longer than the .* bytes its descriptor gives",
    ),
    "config": (
        lambda reg: {f"/v2/team/app/blobs/{reg.config.digest}": endless(200)},
        "RegistryError: the config of .* is longer than the .* bytes its descriptor gives",
    ),
    "token": (
        _token_auth,
        "RegistryError: the token response of .* is longer than the 1048576 bytes allowed",
    ),
    "error-body": (
        lambda reg: {"/v2/team/app/manifests/1": endless(404)},
        "ImageNotFoundError: .* was not found",
    ),
}


@pytest.mark.parametrize("case", ENDLESS_BODIES)
def test_an_endless_body_costs_bounded_memory(case: str, scripted, tmp_path: Path) -> None:
    routes, expected = ENDLESS_BODIES[case]
    reg = scripted(routes)
    outcome, growth_kib = _pull_in_subprocess(reg.ref(), tmp_path)
    assert growth_kib < 48 << 10, f"peak RSS grew by {growth_kib} KiB ({outcome})"
    assert re.match(expected, outcome), outcome


# --- time: too little progress fails the pull -------------------------------------------------


def test_a_trickled_manifest_fails_within_the_progress_period(
    scripted, store: Store, short_progress
) -> None:
    reg = scripted(
        lambda reg: {
            "/v2/team/app/manifests/1": trickle(
                reg.manifest.data, 0.05, {"Content-Type": OCI_MANIFEST}
            )
        }
    )
    with pytest.raises(
        StalledError, match=r"GET /v2/team/app/manifests/1 .* made too little progress.*0\.5 s"
    ):
        Image.pull(reg.ref(), store=store)
    assert store.records() == []


def test_a_trickled_token_response_fails_within_the_progress_period(
    scripted, store: Store, short_progress
) -> None:
    def routes(reg: ScriptedRegistry) -> dict:
        challenge = {
            "WWW-Authenticate": f'Bearer realm="http://{reg.host}/token",service="hostile"'
        }
        token = json.dumps({"token": "t" * 400}).encode()
        return {
            "/v2/": answer(401, b"{}", challenge),
            "/v2/team/app/manifests/1": answer(401, b"{}", challenge),
            "/token": trickle(token, 0.05, {"Content-Type": "application/json"}),
        }

    reg = scripted(routes)
    with pytest.raises(
        StalledError, match=r"the token request to http://.*/token made too little progress"
    ):
        Image.pull(reg.ref(), store=store)


def test_a_trickled_layer_fails_within_the_progress_period(
    scripted, store: Store, short_progress
) -> None:
    reg = scripted(
        lambda reg: {
            f"/v2/team/app/blobs/{reg.layer.digest}": trickle(reg.layer.data, 0.01, for_at_most=5)
        }
    )
    with pytest.raises(
        StalledError, match=r"the download of layer sha256:\w+ of .* made too little progress"
    ):
        Image.pull(reg.ref(), store=store)
    assert store.records() == []


def test_a_registry_that_never_answers_fails_within_the_progress_period(
    scripted, store: Store, short_progress
) -> None:
    release = threading.Event()
    reg = scripted(lambda reg: {"/v2/team/app/manifests/1": silent(release)})
    try:
        with pytest.raises(StalledError, match=r"made too little progress: 0 bytes.*last error"):
            Image.pull(reg.ref(), store=store)
        assert reg.requests.count("/v2/team/app/manifests/1") == 1  # no retry after a stall
    finally:
        release.set()


@pytest.mark.parametrize("what", ["config", "layer"])
def test_a_body_announced_longer_than_its_descriptor_is_refused_at_once(
    scripted, store: Store, short_progress, what: str
) -> None:
    """A Content-Length longer than the descriptor's size (the body then stops, the connection
    held open): refused on the headers, without waiting for bytes that never come."""
    release, held = threading.Event(), []
    reg = scripted(lambda reg: {})
    blob = reg.config if what == "config" else reg.layer
    reg.routes[f"/v2/team/app/blobs/{blob.digest}"] = promise_more(blob, 100, release, held=held)
    try:
        with pytest.raises((RegistryError, DigestMismatchError), match=r"(longer|more) than"):
            Image.pull(reg.ref(), store=store)
        assert held == [], "the pull waited for the registry to hang up"
        assert reg.requests.count(f"/v2/team/app/blobs/{blob.digest}") == 1
    finally:
        release.set()
    assert store.records() == []


@pytest.mark.parametrize("what", ["config", "layer"])
def test_a_body_without_length_that_never_ends_is_read_to_its_descriptors_size(
    scripted, store: Store, short_progress, what: str
) -> None:
    """No Content-Length, the whole blob, then the connection held open: the descriptor says
    how much there is, so the pull takes that and goes on without waiting for the end."""
    release, held = threading.Event(), []
    reg = scripted(lambda reg: {})
    blob = reg.config if what == "config" else reg.layer
    reg.routes[f"/v2/team/app/blobs/{blob.digest}"] = promise_more(blob, None, release, held=held)
    try:
        assert Image.pull(reg.ref(), store=store).id == reg.config.digest
        assert held == [], "the pull waited for the registry to hang up"
    finally:
        release.set()
