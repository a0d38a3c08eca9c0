"""Registries over the OCI Distribution API: pull, push, login/logout.

    record = await pull("registry.example:5000/team/app:1.2", platform="linux/arm64")
    digest = await push(image_id, "registry.example:5000/team/app:1.3")
    login("registry.example:5000", "user", "secret")      # verified, then saved like docker login

Sync users call `sandkit.Image.pull(...)` / `image.push(...)`. Credentials come from ``auth=``
or the Docker config (see `auth`); TLS is verified (system CAs, ``ca_file=``, or
/etc/docker/certs.d/<host>/*.crt); plain HTTP only for insecure=True or loopback registries.
"""

from __future__ import annotations

from .auth import Credentials, credentials_for
from .client import RetryPolicy
from .events import Progress, ProgressCallback
from .login import login, logout
from .pull import pull, pull_sync
from .push import push, push_sync

__all__ = [
    "Credentials",
    "Progress",
    "ProgressCallback",
    "RetryPolicy",
    "credentials_for",
    "login",
    "logout",
    "pull",
    "pull_sync",
    "push",
    "push_sync",
]
