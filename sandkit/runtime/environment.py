"""The environment of a process in a container, merged the way Docker merges it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def merge(
    *,
    image_env: Iterable[str],
    container_env: Mapping[str, str] | None,
    exec_env: Mapping[str, str] | None,
    hostname: str,
    tty: bool,
) -> tuple[str, ...]:
    """Later sources win: defaults, then the image's Env, the container's env, the exec's env.

    HOME is left to the init, which takes it from the container's /etc/passwd for the user the
    process runs as, unless one of the sources sets it.
    """
    merged: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        merged["TERM"] = "xterm"
    for entry in image_env:
        key, _, value = entry.partition("=")
        merged[key] = value
    for source in (container_env, exec_env):
        for key, value in (source or {}).items():
            if not key or "=" in key or "\0" in key or "\0" in str(value):
                from ..errors import ContainerError

                raise ContainerError(
                    f"bad environment variable {key!r}: names must be non-empty and contain "
                    "neither '=' nor NUL, and values no NUL"
                )
            merged[key] = str(value)
    return tuple(f"{k}={v}" for k, v in merged.items())
