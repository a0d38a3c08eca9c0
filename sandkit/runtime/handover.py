"""A container's image and options as JSON, so that a detached container's supervisor (another
process, sandkit/detached/supervisor.py) starts the very container its caller asked for.

``detach=True`` and `sandkit run -d` both write this form into the container's config.json;
the supervisor reads it back. Only what survives JSON is accepted: a value that does not (a
`SeccompProfile` object, an `Image` made from a directory) is refused with the form to use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import attrs

from .. import errors
from ..images.image import Image
from .container import ImageSource, network_name, resolve_image
from .mounts import Mount
from .options import ContainerOptions
from .plan import HOST_IMAGE
from .ports import PortSpec, parse_ports

# Options that say how the container is handed over, not what it is: the supervisor's
# container is an ordinary one.
HANDOVER_OPTIONS = ("detach", "name")


def image_to_text(image: ImageSource) -> str:
    """How the supervisor finds ``image`` again: "host", an absolute directory, or the local
    store's reference (an `Image` by its id)."""
    if isinstance(image, os.PathLike):
        return str(Path(image).absolute())
    if isinstance(image, Image):
        if not image.id:
            raise errors.ContainerError(
                "a detached container needs an image of the local store or a directory: "
                "pass the directory itself (a pathlib.Path), not Image.from_directory()"
            )
        return image.id
    if not isinstance(image, str):  # a recipe (Image.from_(...)): not built yet
        raise errors.ContainerError(
            "a detached container needs a built image: pass recipe.build(tag=...) (or its tag) "
            "instead of the recipe"
        )
    return image


def image_from_text(text: str) -> Image | str:
    """'host', a directory holding a root filesystem (a path: absolute, ./relative, or an
    existing directory), or an image in the local store by reference."""
    if _names_directory(text):
        return resolve_image(Path(text))
    return resolve_image(text)


def absolute_image_text(text: str) -> str:
    """``text`` (as `image_from_text` reads it) with a directory made absolute, for a process
    with another working directory."""
    return str(Path(text).absolute()) if _names_directory(text) else text


def _names_directory(text: str) -> bool:
    return text != HOST_IMAGE and (text.startswith(("/", ".")) or os.path.isdir(text))


def options_to_json(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (`ContainerOptions`, the handover's own left out) as JSON values."""
    data: dict[str, Any] = {k: v for k, v in options.items() if k not in HANDOVER_OPTIONS}
    if "mounts" in data:
        data["mounts"] = [attrs.asdict(Mount.parse(m)) for m in data["mounts"]]
    if "network" in data:
        data["network"] = network_name(data["network"])
    if data.get("ports"):
        data["ports"] = [_port_text(spec) for spec in parse_ports(data["ports"])]
    if isinstance(data.get("seccomp"), os.PathLike):
        data["seccomp"] = str(Path(data["seccomp"]).absolute())
    for key, value in data.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise errors.ContainerError(
                f"{key}={value!r} cannot be handed to a detached container's supervisor: "
                "give it as plain data (str, numbers, lists, dicts)"
            ) from None
    return json.loads(json.dumps(data))  # tuples become lists, as the supervisor reads them


def options_from_json(data: Mapping[str, Any]) -> ContainerOptions:
    """The options `options_to_json` wrote."""
    options = cast(ContainerOptions, dict(data))
    if "mounts" in data:
        options["mounts"] = [Mount(**m) for m in data["mounts"]]
    if rlimits := data.get("rlimits"):
        options["rlimits"] = {k: tuple(v) if isinstance(v, list) else v for k, v in rlimits.items()}
    return options


def _port_text(spec: PortSpec) -> str:
    """``docker run -p``'s form of one published port: HOST_IP:[HOST_PORT]:PORT/PROTO."""
    host_ip = f"[{spec.host_ip}]" if ":" in spec.host_ip else spec.host_ip
    host_port = str(spec.host_port) if spec.host_port else ""
    return f"{host_ip}:{host_port}:{spec.container_port}/{spec.proto}"
