"""The OCI documents of an image (index, manifest, config) checked for the types their specs
give their fields, wherever they come from (a registry, an archive, a layout): a hostile or
broken document is a clear ImageError, never a traceback further on."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from ..errors import ImageError
from .digest import check_digest


def load_json(raw: bytes, what: str) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON. Nesting too deep for Python's
    parser (200,000 brackets fit in a 4 MiB manifest) is refused with an ImageError."""
    try:
        return json.loads(raw)
    except ValueError:
        return None
    except RecursionError:
        raise ImageError(
            f"{what} nests its JSON too deeply to be read: a hostile or broken image"
        ) from None


# The types of the descriptor fields sandkit reads (OCI image-spec descriptor.md).
_PLATFORM_FIELDS = ("os", "architecture", "variant", "os.version")


def check_descriptor(desc: dict[str, Any], what: str, *, max_size: int | None = None) -> None:
    """A descriptor whose fields have the types the OCI spec gives them: never a traceback later."""
    check_digest(desc.get("digest"), f"digest of {what}")
    size = desc.get("size")
    if not _is_int(size) or size < 0 or (max_size is not None and not 0 < size <= max_size):
        raise ImageError(f"{what} gives an invalid size {size!r}: the image is corrupt")
    if not isinstance(desc.get("mediaType", ""), str):
        raise ImageError(f"{what} has a mediaType that is not a string: the image is corrupt")
    platform = desc.get("platform")
    if platform is not None and not (
        isinstance(platform, dict)
        and all(isinstance(platform.get(k, ""), str) for k in _PLATFORM_FIELDS)
    ):
        raise ImageError(
            f"{what} has a platform that is not an object of strings: the image is corrupt"
        )
    annotations = desc.get("annotations")
    if annotations is not None and not _is_str_map(annotations):
        raise ImageError(
            f"{what} has annotations that are not an object of strings: the image is corrupt"
        )


# The layer media types sandkit unpacks (OCI image-spec layer.md and Docker's manifest v2.2).
# Only the tar is read from the label: plain, gzip or zstd is told by the layer's first bytes.
UNPACKABLE_LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)


def image_descriptors(
    manifest: dict[str, Any], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config and layer descriptors of an image manifest (from a registry or a layout),
    each with its spec's field types."""
    config = manifest.get("config")
    layers = manifest.get("layers")
    if (
        not isinstance(config, dict)
        or not isinstance(layers, list)
        or not all(isinstance(x, dict) for x in layers)
    ):
        raise ImageError(
            f"manifest of {where} lacks a config or a layers list: the image is corrupt"
        )
    check_descriptor(config, f"the config descriptor of {where}")
    for layer in layers:
        check_descriptor(layer, f"a layer descriptor of {where}")
    return config, layers


def check_layer_type(layer: dict[str, Any], where: str) -> None:
    """A layer descriptor of a type sandkit can unpack: an encrypted or non-tar layer is refused
    by its type, not taken for a corrupt tar once downloaded."""
    media_type = layer.get("mediaType", "")
    if media_type in UNPACKABLE_LAYERS:
        return
    hint = (
        " (encrypted layers need a decryption key sandkit does not have)"
        if "encrypted" in media_type
        else ""
    )
    raise ImageError(
        f"{where} has a layer of media type {media_type!r} that sandkit cannot unpack{hint}"
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


# The config fields sandkit reads, with their types in the OCI image spec (config.md); an
# absent or null field is fine, a wrong type a corrupt image. (image.py and config.py read them.)
_CONFIG_STRINGS = ("architecture", "os", "variant", "created", "author", "os.version")
_RUN_STRINGS = ("User", "WorkingDir", "StopSignal")
_RUN_LISTS = (
    "Env",
    "Entrypoint",
    "Cmd",
)  # (a bare string is tolerated for the last two, as Docker)
_RUN_MAPS = ("ExposedPorts", "Volumes", "Labels")


def check_config(raw: bytes, where: str) -> list[str]:
    """The diff_ids of an image config whose fields have their spec's types."""
    what = f"the config of {where}"
    cfg = load_json(raw, what)
    rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ImageError(f"{what} has no rootfs.diff_ids list: the image is corrupt")
    for d in diff_ids:
        check_digest(d, f"diff_id in {what}")
    bad = [k for k in _CONFIG_STRINGS if not _null_or(cfg.get(k), str)]
    run = cfg.get("config")
    if not _null_or(run, dict):
        bad.append("config")
    elif run:
        bad += [f"config.{k}" for k in _RUN_STRINGS if not _null_or(run.get(k), str)]
        bad += [f"config.{k}" for k in _RUN_LISTS if not _is_string_list(run.get(k))]
        bad += [f"config.{k}" for k in _RUN_MAPS if not _null_or(run.get(k), dict)]
        if not _is_str_map(run.get("Labels") or {}):
            bad.append("config.Labels")
    if bad:
        raise ImageError(
            f"{what} has fields of the wrong type ({', '.join(sorted(set(bad)))}): the image is corrupt"
        )
    return diff_ids


def _null_or(value: object, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _is_string_list(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    )
