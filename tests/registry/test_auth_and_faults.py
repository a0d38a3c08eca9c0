"""Authentication paths and failures: each gives a clear error and leaves no image behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sandkit.errors import (
    AuthenticationError,
    DigestMismatchError,
    ImageNotFoundError,
    RegistryError,
)
from sandkit.images.image import Image
from sandkit.images.registry import login, logout
from sandkit.images.store import Store

from .conftest import assert_clean, make_image, random_bytes
from .server import PASSWORD, USER, Registry, make_registry

pytestmark = pytest.mark.slow


def test_wrong_password(auth_registry: Registry, busybox: Image, other_store: Store) -> None:
    busybox.push(auth_registry.ref("auth/app:1"), auth=(USER, PASSWORD))
    with pytest.raises(AuthenticationError, match=r"(refused|check the user name)"):
        Image.pull(auth_registry.ref("auth/app:1"), store=other_store, auth=(USER, "wrong"))
    assert_clean(other_store)


def test_anonymous_is_refused_with_login_advice(
    auth_registry: Registry, busybox: Image, other_store: Store
) -> None:
    busybox.push(auth_registry.ref("auth/app:1"), auth=(USER, PASSWORD))
    with pytest.raises(AuthenticationError, match="sandkit login"):
        Image.pull(auth_registry.ref("auth/app:1"), store=other_store)
    assert_clean(other_store)


def test_credentials_from_docker_config(
    auth_registry: Registry, busybox: Image, other_store: Store, docker_config: Path
) -> None:
    docker_config.write_text(
        json.dumps(
            {
                "auths": {
                    f"https://{auth_registry.host}": {
                        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    }
                }
            }
        )
    )
    busybox.push(auth_registry.ref("auth/cfg:1"))
    assert Image.pull(auth_registry.ref("auth/cfg:1"), store=other_store).id == busybox.id


def test_login_then_logout(auth_registry: Registry, busybox: Image, docker_config: Path) -> None:
    with pytest.raises(AuthenticationError):
        login(auth_registry.host, USER, "wrong")
    assert not docker_config.exists()
    login(auth_registry.host, USER, PASSWORD)
    assert auth_registry.host in json.loads(docker_config.read_text())["auths"]
    busybox.push(auth_registry.ref("auth/login:1"))
    logout(auth_registry.host)
    with pytest.raises(AuthenticationError, match="not logged in"):
        logout(auth_registry.host)


def test_tokens_are_cached_per_scope(tmp_path: Path, store: Store, other_store: Store) -> None:
    reg = make_registry(tmp_path / "tok", "token")
    try:
        image = make_image(tmp_path, store)
        image.push(reg.ref("tok/app:1"), auth=reg.auth)
        assert [r["scope"] for r in reg.token_server.requests] == [["repository:tok/app:pull,push"]]
        reg.token_server.requests.clear()
        Image.pull(
            reg.ref("tok/app:1"), store=other_store, auth=reg.auth
        )  # manifest + config + 2 layers
        assert [r["scope"] for r in reg.token_server.requests] == [["repository:tok/app:pull"]]
    finally:
        reg.close()


def test_tls_needs_the_ca(registry_tls: Registry, busybox: Image) -> None:
    with pytest.raises(RegistryError, match=r"certificate.*ca_file"):
        busybox.push(registry_tls.ref("tls/app:1"))
    busybox.push(registry_tls.ref("tls/app:1"), ca_file=registry_tls.ca_file)


@pytest.fixture
def registry_tls(tmp_path: Path):
    reg = make_registry(tmp_path / "tls", "tls")
    yield reg
    reg.close()


# --- faults ------------------------------------------------------------------------------------


def test_unknown_tag(plain_registry: Registry, busybox: Image, other_store: Store) -> None:
    busybox.push(plain_registry.ref("team/app:1"))
    with pytest.raises(
        ImageNotFoundError, match=r"team/app:nope was not found.*check the repository name"
    ):
        Image.pull(plain_registry.ref("team/app:nope"), store=other_store)
    assert_clean(other_store)


def test_tampered_blob(plain_registry: Registry, busybox: Image, other_store: Store) -> None:
    busybox.push(plain_registry.ref("team/app:1"))
    top = busybox.store.record(busybox.id).layers[-1].digest
    blob = plain_registry.blob_file(top)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="tampered"):
        Image.pull(plain_registry.ref("team/app:1"), store=other_store)
    assert_clean(other_store)
    assert not other_store.has_blob(top)


def test_registry_stopped_mid_pull(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(24 << 20))
    image.push(plain_registry.ref("team/big:1"))

    def kill_on_first_bytes(event) -> None:
        if event.status == "downloading":
            plain_registry.stop()

    with pytest.raises(RegistryError, match=r"(failed|kept failing).*registry is up"):
        Image.pull(
            plain_registry.ref("team/big:1"), store=other_store, progress=kill_on_first_bytes
        )
    assert_clean(other_store)


def test_truncated_body_is_resumed_with_range(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(4 << 20))
    image.push(plain_registry.ref("team/cut:1"))
    top = store.record(image.id).layers[-1].digest
    proxy = breaking_proxy(plain_registry.host, top, breaks=1)
    events: list = []
    pulled = Image.pull(f"{proxy.host}/team/cut:1", store=other_store, progress=events.append)
    assert pulled.id == image.id
    assert "retrying" in [e.status for e in events]
    assert (
        proxy.ranges[0] == ""
        and proxy.ranges[1].startswith("bytes=")
        and proxy.ranges[1] != "bytes=0-"
    )


def test_truncated_body_every_time(
    plain_registry: Registry, tmp_path: Path, store: Store, other_store: Store, breaking_proxy
) -> None:
    image = make_image(tmp_path, store, extra=random_bytes(1 << 20))
    image.push(plain_registry.ref("team/cut:2"))
    top = store.record(image.id).layers[-1].digest
    proxy = breaking_proxy(plain_registry.host, top, breaks=1000)
    with pytest.raises(RegistryError, match="failed 3 times in a row"):
        Image.pull(f"{proxy.host}/team/cut:2", store=other_store)
    assert_clean(other_store)


def test_unreachable_registry(other_store: Store) -> None:
    from .server import free_port

    with pytest.raises(RegistryError, match=r"cannot talk to registry 127.0.0.1.*running"):
        Image.pull(f"127.0.0.1:{free_port()}/team/app:1", store=other_store)
    assert_clean(other_store)
