"""`sandkit login` / `logout`: check credentials against the registry, then keep them where
Docker keeps them (the ``auths`` of the Docker config), so docker and sandkit share logins."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import anyio

from ...errors import AuthenticationError, RegistryError
from .auth import Credentials, normalize_host, remove_credentials, save_credentials
from .client import RegistryClient, error_messages


async def _verify(
    registry: str, creds: Credentials, insecure: bool, ca_file: str | os.PathLike[str] | None
) -> None:
    """GET /v2/ with the credentials, as `docker login` does (token servers are asked for a
    token with no scope: that proves the password without naming a repository)."""
    async with RegistryClient(registry, insecure=insecure, ca_file=ca_file, auth=creds) as client:
        resp = await client.request("GET", "/v2/", scopes=frozenset())
        if resp.status_code != 200:
            raise RegistryError(
                f"login to {registry} failed: HTTP {resp.status_code} ({error_messages(resp)})"
            )


def login(
    server: str,
    username: str,
    password: str,
    *,
    insecure: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Check ``username``/``password`` with ``server`` and save them; returns the config path."""
    registry = normalize_host(server)
    if not username or not password:
        raise AuthenticationError("login needs a user name and a password (or token)")
    creds = Credentials(username, password)
    anyio.run(functools.partial(_verify, registry, creds, insecure, ca_file), backend="trio")
    return save_credentials(registry, creds)


def logout(server: str) -> None:
    """Forget the saved login for ``server``; AuthenticationError if there was none."""
    registry = normalize_host(server)
    if not remove_credentials(registry):
        raise AuthenticationError(f"not logged in to {registry}: nothing to remove")
