"""What a hostile registry sends becomes a clear sandkit error, never a traceback (issue 15,
"Also"): JSON nested too deep for Python's parser, fields of the wrong type in manifests,
indexes and configs, and control characters in the messages it wants printed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandkit.errors import AuthenticationError, ImageError, ImageNotFoundError, RegistryError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .hostile import Blob, ScriptedRegistry, answer, serve

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DEEP = b"[" * 200_000 + b"]" * 200_000  # 400 KB: well under every size limit


@pytest.fixture
def reg() -> Iterator[ScriptedRegistry]:
    r = ScriptedRegistry()
    yield r
    r.close()


def _pull(reg: ScriptedRegistry, store: Store) -> Image:
    return Image.pull(reg.ref(), store=store, platform="linux/amd64")


def _serve_image(
    reg: ScriptedRegistry, *, manifest: dict[str, Any] | None = None, config: bytes | None = None
) -> None:
    """Serve team/app:1 with this manifest (default: the valid one) and config (relinked)."""
    body = json.loads(reg.manifest.data) if manifest is None else manifest
    if config is not None:
        blob = Blob(OCI_CONFIG, config)
        reg.routes[f"/v2/team/app/blobs/{blob.digest}"] = serve(blob)
        body["config"] = blob.descriptor()
    reg.routes["/v2/team/app/manifests/1"] = serve(Blob(OCI_MANIFEST, json.dumps(body).encode()))


def _config_with(**changes: Any) -> bytes:
    def build(reg: ScriptedRegistry) -> bytes:
        cfg = json.loads(reg.config.data)
        for path, value in changes.items():
            target = cfg
            *parents, leaf = path.split("__")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
        return json.dumps(cfg).encode()

    return build  # type: ignore[return-value]


# --- JSON too deep to parse --------------------------------------------------------------------


def test_a_deeply_nested_manifest(reg: ScriptedRegistry, store: Store) -> None:
    reg.routes["/v2/team/app/manifests/1"] = serve(Blob(OCI_MANIFEST, DEEP))
    with pytest.raises(ImageError, match="nests its JSON too deeply"):
        _pull(reg, store)


def test_a_deeply_nested_config(reg: ScriptedRegistry, store: Store) -> None:
    _serve_image(reg, config=DEEP)
    with pytest.raises(ImageError, match=r"config of .* nests its JSON too deeply"):
        _pull(reg, store)
    assert store.records() == []


def test_a_deeply_nested_error_body(reg: ScriptedRegistry, store: Store) -> None:
    reg.routes["/v2/team/app/manifests/1"] = answer(404, DEEP[:30000] + DEEP[-30000:])
    with pytest.raises(ImageNotFoundError, match="was not found"):
        _pull(reg, store)


def test_a_deeply_nested_token_response(reg: ScriptedRegistry, store: Store) -> None:
    challenge = {"WWW-Authenticate": f'Bearer realm="http://{reg.host}/token"'}
    reg.routes.update(
        {
            "/v2/": answer(401, b"", challenge),
            "/v2/team/app/manifests/1": answer(401, b"", challenge),
            "/token": answer(200, DEEP),
        }
    )
    with pytest.raises(RegistryError, match="sent no token"):
        _pull(reg, store)


# --- wrong types -------------------------------------------------------------------------------


def _index_with(**entry_changes: Any) -> Callable[[ScriptedRegistry], Blob]:
    def build(reg: ScriptedRegistry) -> Blob:
        entry = (
            reg.manifest.descriptor(platform={"os": "linux", "architecture": "amd64"})
            | entry_changes
        )
        return Blob(
            OCI_INDEX,
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode(),
        )

    return build


@pytest.mark.parametrize(
    "change, message",
    [
        ({"platform": "linux/amd64"}, "platform that is not an object of strings"),
        (
            {"platform": {"os": "linux", "architecture": ["amd64"]}},
            "platform that is not an object of strings",
        ),
        ({"size": "338"}, "invalid size '338'"),
        ({"size": 100 << 30}, "invalid size"),
        ({"mediaType": {"a": 1}}, "mediaType that is not a string"),
    ],
)
def test_an_index_entry_of_the_wrong_types(
    reg: ScriptedRegistry, store: Store, change: dict, message: str
) -> None:
    reg.routes["/v2/team/app/manifests/1"] = serve(_index_with(**change)(reg))
    with pytest.raises(ImageError, match=message):
        _pull(reg, store)


@pytest.mark.parametrize(
    "layer_change, message",
    [
        (
            {"mediaType": ["application/vnd.oci.image.layer.v1.tar"]},
            "mediaType that is not a string",
        ),
        ({"size": True}, "invalid size True"),
        ({"annotations": ["a"]}, "annotations that are not an object of strings"),
        (
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"},
            "encrypted layers need a decryption key",
        ),
    ],
)
def test_a_layer_descriptor_of_the_wrong_types(
    reg: ScriptedRegistry, store: Store, layer_change: dict, message: str
) -> None:
    manifest = json.loads(reg.manifest.data)
    manifest["layers"][0].update(layer_change)
    _serve_image(reg, manifest=manifest)
    with pytest.raises(ImageError, match=message):
        _pull(reg, store)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"rootfs__diff_ids": 5}, "rootfs.diff_ids"),
        ({"architecture": ["amd64"]}, "architecture"),
        ({"config": "sh"}, "config"),
        ({"config__Env": 5}, "config.Env"),
        ({"config__Cmd": [1, 2]}, "config.Cmd"),
        ({"config__Labels": ["a=b"]}, "config.Labels"),
        ({"config__Labels": {"a": 1}}, "config.Labels"),
        ({"config__ExposedPorts": ["80/tcp"]}, "config.ExposedPorts"),
        ({"config__User": 0}, "config.User"),
    ],
)
def test_a_config_of_the_wrong_types(
    reg: ScriptedRegistry, store: Store, changes: dict, field: str
) -> None:
    _serve_image(reg, config=_config_with(**changes)(reg))
    with pytest.raises(ImageError, match=f"config of .*{field}"):
        image = _pull(reg, store)
        image.config  # noqa: B018 - where the old code met the wrong type
    assert store.records() == []


# --- control characters -------------------------------------------------------------------------

HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07\u202eevil\r\n"


def _assert_escaped(message: str) -> None:
    assert not any(c in message for c in "\x1b\x07\u202e\r\n"), repr(message)
    assert "\\x1b" in message


def test_control_characters_in_an_error_body_are_escaped(
    reg: ScriptedRegistry, store: Store
) -> None:
    errors = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": HOSTILE_TEXT}]}
    reg.routes["/v2/team/app/manifests/1"] = answer(404, json.dumps(errors).encode())
    with pytest.raises(ImageNotFoundError) as caught:
        _pull(reg, store)
    _assert_escaped(str(caught.value))


def test_control_characters_in_a_plain_error_body_are_escaped(
    reg: ScriptedRegistry, store: Store
) -> None:
    reg.routes["/v2/team/app/manifests/1"] = answer(500, HOSTILE_TEXT.encode())
    with pytest.raises(RegistryError) as caught:
        _pull(reg, store)
    _assert_escaped(str(caught.value))


def test_control_characters_in_a_challenge_are_escaped(reg: ScriptedRegistry, store: Store) -> None:
    # (http.server sends header values as latin-1: the escape sequences arrive as they are)
    challenge = {"WWW-Authenticate": "Negotiate \x1b[2J\x1b]0;pwned\x07"}
    reg.routes.update(
        {
            "/v2/": answer(401, b"", challenge),
            "/v2/team/app/manifests/1": answer(401, b"", challenge),
        }
    )
    with pytest.raises(AuthenticationError, match="of a kind sandkit does not speak") as caught:
        _pull(reg, store)
    assert "\x1b" not in str(caught.value) and "\\x1b" in str(caught.value)
