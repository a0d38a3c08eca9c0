"""The part of an OCI image config that decides how a container runs."""

from __future__ import annotations

import signal
from typing import Any

import attrs


@attrs.frozen
class ImageConfig:
    """What `docker inspect` shows under ``Config``; every field optional, as in the OCI spec."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = attrs.field(factory=dict)
    stop_signal: str = ""
    # Healthcheck as the config has it (Test, Interval...: nanoseconds); checked where it is
    # used (runtime/health.py), so that a malformed one fails the container, not the image.
    healthcheck: dict[str, Any] | None = None

    @classmethod
    def from_oci(cls, config: dict[str, Any] | None) -> ImageConfig:
        """Build from the ``config`` object of an OCI/Docker image config blob."""
        config = config or {}

        def strings(key: str) -> tuple[str, ...] | None:
            value = config.get(key)
            if value is None:
                return None
            if isinstance(value, str):  # some old tools write a bare string
                return (value,)
            return tuple(str(v) for v in value)

        return cls(
            env=strings("Env") or (),
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
            exposed_ports=tuple(sorted((config.get("ExposedPorts") or {}).keys())),
            labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
            stop_signal=str(config.get("StopSignal") or ""),
            healthcheck=_healthcheck(config.get("Healthcheck")),
        )

    def to_oci(self) -> dict[str, Any]:
        """The ``config`` object of an OCI image config with these fields (empty ones left out),
        as `from_oci` reads it."""
        out: dict[str, Any] = {}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            out["Healthcheck"] = dict(self.healthcheck)
        return out


def _healthcheck(value: object) -> dict[str, Any] | None:
    """The Healthcheck object of a config (a non-object is none, as a missing one)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


# --- Docker's rules for turning an image config plus caller overrides into a process ----------


def stop_signal(config: ImageConfig) -> int:
    """The signal that asks the image's program to stop (`docker stop`'s first): its
    StopSignal ("SIGUSR1", "USR1" or a number), else SIGTERM."""
    name = config.stop_signal
    try:
        if name.isdigit():
            return int(name)
        return signal.Signals["SIG" + name.upper().removeprefix("SIG")] if name else signal.SIGTERM
    except KeyError:
        return signal.SIGTERM


_UNSET: Any = object()


def resolve_command(
    config: ImageConfig,
    command: list[str] | tuple[str, ...] | None = None,
    entrypoint: Any = _UNSET,
) -> list[str]:
    """argv per Docker: an overridden entrypoint drops the image's Cmd; a given command replaces
    Cmd; ``entrypoint=[]`` or ``""`` clears the image's entrypoint."""
    if entrypoint is _UNSET:
        ep = list(config.entrypoint or ())
        cmd = list(command) if command is not None else list(config.cmd or ())
    else:
        ep = [entrypoint] if isinstance(entrypoint, str) and entrypoint else list(entrypoint or ())
        cmd = list(command or ())
    argv = ep + cmd
    if not argv:
        from ..errors import ImageError

        raise ImageError("no command: the image has neither Entrypoint nor Cmd; pass a command")
    return argv
