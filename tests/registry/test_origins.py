"""Credentials go only to the origin they were issued for: the registry's own scheme, host and
port (issue 15, hole 3). The other origin in each test is a `Relay` on another port of 127.0.0.1
that records the headers it gets."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import pytest

from sandkit.errors import AuthenticationError
from sandkit.images.image import Image
from sandkit.images.store import Store

from .hostile import Answer, Relay, Seen
from .server import Registry

pytestmark = pytest.mark.slow  # starts containers, the CLI or servers


def _moved_to(host: str, location: str) -> str:
    """``location`` (absolute or relative) on ``host`` instead."""
    parts = urllib.parse.urlsplit(location)
    return urllib.parse.urlunsplit(("http", host, parts.path, parts.query, parts.fragment))


def test_push_sends_no_credentials_to_an_upload_location_on_another_origin(
    auth_registry: Registry, busybox: Image, relay: Callable[..., Relay]
) -> None:
    elsewhere = relay(auth_registry.host)  # another origin, relaying to the registry itself

    def uploads_elsewhere(seen: Seen, answer: Answer) -> Answer:
        if seen.method == "POST" and "/blobs/uploads/" in seen.path and answer.status == 202:
            headers = [
                (k, _moved_to(elsewhere.host, v) if k.lower() == "location" else v)
                for k, v in answer.headers
            ]
            return Answer(answer.status, headers, answer.body)
        return answer

    front = relay(auth_registry.host, edit=uploads_elsewhere)
    # Docker fails the same way: its authorizer has no challenge for that host, sends nothing,
    # and the registry behind refuses the anonymous upload.
    with pytest.raises(AuthenticationError, match="only to the registry itself"):
        busybox.push(f"{front.host}/team/app:1", auth=auth_registry.auth)
    assert elsewhere.seen, "the upload never went to the other origin: the test proves nothing"
    assert elsewhere.authorized() == []
    assert front.authorized(), "credentials did reach the registry's own origin"


@pytest.mark.parametrize("what", ["manifest", "config", "layer"])
def test_a_pull_sent_elsewhere_never_answers_that_origins_challenge(
    auth_registry: Registry,
    busybox: Image,
    other_store: Store,
    relay: Callable[..., Relay],
    what: str,
) -> None:
    """A manifest or blob GET redirected to another origin that answers 401 with a Bearer
    challenge of its own: neither the registry's token nor the user's password may follow."""
    busybox.push(auth_registry.ref("team/app:1"), auth=auth_registry.auth)
    record = busybox.store.record(busybox.id)
    path_part = {"manifest": "/manifests/", "config": record.id, "layer": record.layers[-1].digest}[
        what
    ]
    realm = relay(None)  # a token server the attacker runs
    challenge = f'Bearer realm="http://{realm.host}/token",service="evil"'
    elsewhere = relay(None, intercept=lambda seen: Answer(401, [("WWW-Authenticate", challenge)]))

    def redirect(seen: Seen) -> Answer | None:
        if seen.method == "GET" and path_part in seen.path:
            return Answer(307, [("Location", f"http://{elsewhere.host}{seen.path}")])
        return None

    front = relay(auth_registry.host, intercept=redirect)
    with pytest.raises(AuthenticationError, match="only to the registry itself"):
        Image.pull(f"{front.host}/team/app:1", store=other_store, auth=auth_registry.auth)
    assert elsewhere.seen, "the request never went to the other origin: the test proves nothing"
    assert elsewhere.authorized() == []
    assert realm.seen == []


def test_the_token_realm_gets_the_password_and_the_registry_only_tokens(
    tmp_path, store: Store, other_store: Store, relay: Callable[..., Relay]
) -> None:
    """Docker's token handler (distribution's fetchTokenWithBasicAuth) sends the user name and
    password to the realm the registry's challenge names, on whatever host: so does sandkit.
    The registry itself then sees only bearer tokens."""
    from .conftest import make_image
    from .server import USER, make_registry

    reg = make_registry(tmp_path / "tok", "token")
    try:
        image = make_image(tmp_path, store)
        front = relay(reg.host, keep_host=True)  # records what the registry's origin gets
        image.push(f"{front.host}/tok/app:1", auth=reg.auth)
        Image.pull(f"{front.host}/tok/app:1", store=other_store, auth=reg.auth)
        assert reg.token_server.requests and all(
            r["user"] == USER for r in reg.token_server.requests
        )
        sent = {s.headers.get("Authorization", "").split(" ", 1)[0] for s in front.authorized()}
        assert sent == {"Bearer"}
    finally:
        reg.close()
