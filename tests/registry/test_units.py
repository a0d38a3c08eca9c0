"""Pieces that need no registry: references, manifests, challenges, Docker config."""

from __future__ import annotations

import base64
import json

import pytest

from sandkit.errors import AuthenticationError, ImageError, InvalidReferenceError, RegistryError
from sandkit.images.platform import Platform
from sandkit.images.reference import parse
from sandkit.images.registry import auth, manifests
from sandkit.images.registry.client import RegistryClient, insecure_by_default

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("user/app:2", "docker.io/user/app:2"),
        ("registry.example:5000/team/app:1.2", "registry.example:5000/team/app:1.2"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"reg.io/app:1@{D}", f"reg.io/app:1@{D}"),
        ("index.docker.io/library/alpine", "docker.io/library/alpine:latest"),
    ],
)
def test_references_normalise_like_docker(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


@pytest.mark.parametrize(
    "bad", ["", "UPPER/app", "app:", "app@sha256:123", "a//b", "host:port/app", "-app", "app:tag!"]
)
def test_bad_references_are_clear_errors(bad: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid image reference"):
        parse(bad)


# The distribution spec's grammar (tags: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; names: ASCII
# lowercase components) and Docker's reference package (NameTotalLengthMax = 255, counted on the
# normalised name, docker.io/library/... included).
@pytest.mark.parametrize(
    "bad, why",
    [
        ("busybox:l\u00e4test", "only ASCII"),  # Python's \w took any letter
        ("busybox:\u0661\u0662", "only ASCII"),  # Arabic-Indic digits
        ("team/app\n:1", "only ASCII"),  # '$' let a newline end a component
        ("team/app\x1b[2J:1", "only ASCII"),
        ("busybox:" + "t" * 129, "max 128"),
        ("a" * 239, "longer than 255 characters"),  # docker.io/library/ + 239 = 257
        ("reg.example:5000/" + "/".join(["c" * 60] * 4), "longer than 255 characters"),
    ],
)
def test_references_outside_dockers_grammar_and_limits_are_refused(bad: str, why: str) -> None:
    with pytest.raises(InvalidReferenceError, match=f"invalid image reference.*{why}"):
        parse(bad)


@pytest.mark.parametrize(
    "good", ["a" * 237, "busybox:" + "t" * 128, "reg.example:5000/" + "/".join(["c" * 58] * 4)]
)
def test_references_at_dockers_limits_are_accepted(good: str) -> None:
    parse(good)


def _index(*platforms: tuple[str, str, str]) -> manifests.Manifest:
    entries = [
        {
            "mediaType": manifests.OCI_MANIFEST,
            "digest": "sha256:" + f"{i:064x}",
            "size": 1,
            "platform": {"os": o, "architecture": a, **({"variant": v} if v else {})},
        }
        for i, (o, a, v) in enumerate(platforms)
    ]
    raw = json.dumps(
        {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": entries}
    ).encode()
    return manifests.parse(raw, manifests.OCI_INDEX, expected=None, where="x")


def test_platform_selection_skips_attestations_and_matches_variant() -> None:
    idx = _index(
        ("unknown", "unknown", ""),
        ("linux", "arm", "v6"),
        ("linux", "arm", "v7"),
        ("linux", "amd64", ""),
        ("linux", "arm64", "v8"),
    )
    assert manifests.select(idx, Platform.parse("linux/amd64"), "x")["digest"].endswith("3")
    assert manifests.select(idx, Platform.parse("linux/arm/v7"), "x")["digest"].endswith("2")
    assert manifests.select(idx, Platform.parse("linux/arm64"), "x")["digest"].endswith("4")
    with pytest.raises(ImageError, match=r"no image for platform linux/s390x.*available"):
        manifests.select(idx, Platform.parse("linux/s390x"), "x")


def test_schema1_is_refused_with_advice() -> None:
    raw = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(ImageError, match=r"schema 1.*skopeo copy"):
        manifests.parse(
            raw,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            expected=None,
            where="x",
        )


def test_content_type_must_agree_with_media_type() -> None:
    raw = json.dumps(
        {"schemaVersion": 2, "mediaType": manifests.DOCKER_MANIFEST, "config": {}, "layers": []}
    ).encode()
    with pytest.raises(RegistryError, match="Content-Type"):
        manifests.parse(raw, manifests.OCI_MANIFEST, expected=None, where="x")
    # generic content types defer to the body; OCI bodies may omit mediaType altogether
    assert (
        manifests.parse(raw, "application/json", expected=None, where="x").media_type
        == manifests.DOCKER_MANIFEST
    )
    bare = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert manifests.parse(bare, "", expected=None, where="x").is_index


def test_manifest_digest_is_verified() -> None:
    raw = json.dumps(
        {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": []}
    ).encode()
    with pytest.raises(ImageError, match="digest"):
        manifests.parse(raw, manifests.OCI_INDEX, expected=D, where="x")


def test_challenge_parsing_keeps_quoted_commas() -> None:
    (c,) = auth.parse_challenges(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    b, t = auth.parse_challenges('Basic realm="x", Bearer realm="y",error="insufficient_scope"')
    assert (b.scheme, t.scheme, t.params["error"]) == ("basic", "bearer", "insufficient_scope")


def test_docker_config_entries(docker_config) -> None:
    docker_config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                    "reg.example:5000": {"username": "u", "password": "p"},
                    "http://other.example/v2/": {"identitytoken": "refresh"},
                }
            }
        )
    )
    assert auth.credentials_for("docker.io") == auth.Credentials("hub", "pw")
    assert auth.credentials_for("reg.example:5000") == auth.Credentials("u", "p")
    assert auth.credentials_for("other.example").identity_token == "refresh"
    assert auth.credentials_for("nowhere.example") is None
    assert "pw" not in repr(auth.credentials_for("docker.io"))


def test_broken_docker_config_is_a_clear_error(docker_config) -> None:
    docker_config.write_text("{nope")
    with pytest.raises(AuthenticationError, match="cannot read Docker config"):
        auth.credentials_for("docker.io")


def test_save_and_remove_credentials(docker_config) -> None:
    docker_config.write_text(json.dumps({"auths": {}, "psFormat": "keep me"}))
    auth.save_credentials("reg.example", auth.Credentials("u", "p"))
    assert docker_config.stat().st_mode & 0o077 == 0
    assert json.loads(docker_config.read_text())["psFormat"] == "keep me"
    assert auth.credentials_for("reg.example") == auth.Credentials("u", "p")
    assert auth.remove_credentials("https://reg.example") is True
    assert auth.remove_credentials("reg.example") is False


def test_plain_http_only_for_loopback_or_insecure() -> None:
    assert insecure_by_default("127.0.0.1:5000") and insecure_by_default("localhost:5000")
    assert insecure_by_default("[::1]:5000")
    assert not insecure_by_default("registry.example:5000")
    assert not RegistryClient("registry.example:5000").allow_http
    assert RegistryClient("registry.example:5000", insecure=True).allow_http


def test_tls_contexts_are_shared_until_a_ca_file_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from sandkit.images.registry.client import _ssl_context

    from .server import write_tls

    ca = write_tls(tmp_path)[0]
    first = _ssl_context("127.0.0.1:1", ca)
    assert _ssl_context("127.0.0.1:1", ca) is first
    assert _ssl_context("127.0.0.1:1", None) is _ssl_context("127.0.0.1:1", None) is not first
    (tmp_path / "new").mkdir()
    ca.write_bytes(write_tls(tmp_path / "new")[0].read_bytes())
    os.utime(ca, ns=(1, 1))  # a new version even within the clock's resolution
    assert _ssl_context("127.0.0.1:1", ca) is not first
    with pytest.raises(
        RegistryError, match=r"cannot load CA certificate .*missing.pem.*pass a PEM file"
    ):
        _ssl_context("127.0.0.1:1", tmp_path / "missing.pem")


def _helper(tmp_path, monkeypatch, script: str, mode: int = 0o755) -> None:  # type: ignore[no-untyped-def]
    """A `docker-credential-fake` on PATH that runs ``script`` (sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "docker-credential-fake"
    program.write_text(f"#!/bin/sh\n{script}\n")
    program.chmod(mode)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.parametrize(
    "script, mode, message",
    [
        ('echo \'{"Username": "u", "Secret": "s"}\'', 0o644, "cannot be run"),
        ('echo \'["u", "s"]\'', 0o755, "not a JSON object"),
        ("echo '\"u:s\"'", 0o755, "not a JSON object"),
        ("echo 'u:s'", 0o755, "not a JSON object"),
    ],
)
def test_a_credential_helper_that_cannot_run_or_answers_nonsense_is_a_clear_error(  # type: ignore[no-untyped-def]
    docker_config, tmp_path, monkeypatch, script: str, mode: int, message: str
) -> None:
    """The credential helper protocol (docker-credential-helpers): `get` prints a JSON object
    with Username and Secret. Anything else is an AuthenticationError naming the helper."""
    docker_config.write_text(json.dumps({"credsStore": "fake"}))
    _helper(tmp_path, monkeypatch, script, mode)
    with pytest.raises(AuthenticationError, match=f"docker-credential-fake.*{message}"):
        auth.credentials_for("reg.example")


def test_a_credential_helpers_answer_is_used(docker_config, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    docker_config.write_text(json.dumps({"credHelpers": {"reg.example": "fake"}}))
    _helper(tmp_path, monkeypatch, 'cat >/dev/null; echo \'{"Username": "u", "Secret": "s"}\'')
    assert auth.credentials_for("reg.example") == auth.Credentials("u", "s")
