"""Manifest media types, the Accept header, verification of what a registry sends, and platform
selection from indexes (OCI image index / Docker manifest list)."""

from __future__ import annotations

import json
from typing import Any

import attrs

from ...errors import ImageError, RegistryError
from ..digest import check_digest, sha256_bytes, verify_bytes
from ..platform import Platform, choose
from .bodies import MAX_DOCUMENT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
SCHEMA1 = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}
IMAGE_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
# Schema 1 is deliberately absent: a registry then either serves schema 2 or (for an image that
# only exists as schema 1) sends schema 1 anyway, which `parse` refuses with an explanation.
ACCEPT = f"{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}, {DOCKER_MANIFEST}"
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
# Content types that say nothing about the manifest kind: trust the body's own mediaType then.
_GENERIC_TYPES = {"", "application/json", "text/plain", "application/octet-stream"}
MAX_MANIFEST = MAX_DOCUMENT  # what registries themselves accept; bigger is an attack or a mistake


@attrs.frozen
class Manifest:
    media_type: str
    digest: str
    raw: bytes
    body: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse(raw: bytes, content_type: str, *, expected: str | None, where: str) -> Manifest:
    """Check a fetched manifest: digest (``expected``: from the reference or the registry's
    Docker-Content-Digest), size bound, schema version, and Content-Type against mediaType."""
    if len(raw) > MAX_MANIFEST:
        raise RegistryError(f"manifest of {where} is {len(raw)} bytes, over the {MAX_MANIFEST} byte limit: refusing it")
    if expected is not None:
        verify_bytes(raw, check_digest(expected, "manifest digest"), f"manifest of {where}")
    ctype = content_type.split(";", 1)[0].strip().lower()
    body = load_json(raw, f"manifest of {where}")
    if ctype in SCHEMA1 or (isinstance(body, dict) and body.get("schemaVersion") == 1):
        raise ImageError(
            f"{where} is stored as a Docker image manifest v2 schema 1, a format Docker itself no longer "
            "pulls (deprecated, unverifiable layer ids): re-push the image with a current Docker, "
            "buildah or skopeo (`skopeo copy` converts it), then pull again"
        )
    if not isinstance(body, dict):
        raise RegistryError(f"manifest of {where} is not a JSON object (Content-Type {ctype!r}): the registry sent garbage")
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError(f"manifest of {where} has a non-string mediaType")
    if ctype not in _GENERIC_TYPES and declared and declared != ctype:
        # The digest covers the body, not the header: a mismatch means a confused or hostile
        # registry, and picking one of the two would be a guess.
        raise RegistryError(
            f"registry sent manifest of {where} as Content-Type {ctype!r} but its mediaType is {declared!r}: "
            "refusing an ambiguous manifest; the registry or the image is broken"
        )
    media_type = declared or (ctype if ctype not in _GENERIC_TYPES else _guess(body))
    if media_type not in IMAGE_TYPES | INDEX_TYPES:
        raise ImageError(
            f"{where} is a {media_type!r}, not a container image (an artifact, signature or unknown "
            "format): pull an image reference instead"
        )
    if body.get("schemaVersion") != 2:
        raise RegistryError(f"manifest of {where} has schemaVersion {body.get('schemaVersion')!r}, expected 2")
    return Manifest(media_type, sha256_bytes(raw), raw, body)


def load_json(raw: bytes, what: str) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON. Nesting too deep for Python's
    parser (200,000 brackets fit in a 4 MiB manifest) is refused with an ImageError."""
    try:
        return json.loads(raw)
    except ValueError:
        return None
    except RecursionError:
        raise ImageError(f"{what} nests its JSON too deeply to be read: a hostile or broken image") from None


def _guess(body: dict[str, Any]) -> str:
    """OCI allows omitting mediaType: tell index from manifest by their required fields."""
    if isinstance(body.get("manifests"), list):
        return OCI_INDEX
    if isinstance(body.get("config"), dict) and isinstance(body.get("layers"), list):
        return OCI_MANIFEST
    return "unknown"


def select(index: Manifest, platform: Platform | None, where: str) -> dict[str, Any]:
    """The index entry for ``platform`` (default: the host), Docker's way: os, architecture and
    variant must match, BuildKit's unknown/unknown attestation entries are skipped."""
    manifests = index.body.get("manifests")
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise RegistryError(f"index of {where} has no valid 'manifests' list")
    for entry in manifests:
        check_descriptor(entry, f"an entry of the index of {where}", max_size=MAX_MANIFEST)
    return choose(manifests, platform, f"index of {where}")


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
        isinstance(platform, dict) and all(isinstance(platform.get(k, ""), str) for k in _PLATFORM_FIELDS)
    ):
        raise ImageError(f"{what} has a platform that is not an object of strings: the image is corrupt")
    annotations = desc.get("annotations")
    if annotations is not None and not _is_str_map(annotations):
        raise ImageError(f"{what} has annotations that are not an object of strings: the image is corrupt")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def check_image(man: Manifest, where: str) -> None:
    """An image manifest we can pull: a config descriptor and supported layer types."""
    cfg = man.body.get("config")
    layers = man.body.get("layers")
    if not isinstance(cfg, dict) or not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise RegistryError(f"manifest of {where} lacks a config or a layers list: the image is corrupt")
    check_descriptor(cfg, f"the config descriptor of {where}")
    for layer in layers:
        check_descriptor(layer, f"a layer descriptor of {where}")
        mt = layer.get("mediaType", "")
        if mt not in LAYER_TYPES:
            hint = " (encrypted layers need a decryption key sandkit does not have)" if "encrypted" in mt else ""
            raise ImageError(f"{where} has a layer of media type {mt!r} that sandkit cannot unpack{hint}")


# The config fields sandkit reads, with their types in the OCI image spec (config.md); an
# absent or null field is fine, a wrong type a corrupt image. (image.py and config.py read them.)
_CONFIG_STRINGS = ("architecture", "os", "variant", "created", "author", "os.version")
_RUN_STRINGS = ("User", "WorkingDir", "StopSignal")
_RUN_LISTS = ("Env", "Entrypoint", "Cmd")  # (a bare string is tolerated for the last two, as Docker)
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
        raise ImageError(f"{what} has fields of the wrong type ({', '.join(sorted(set(bad)))}): the image is corrupt")
    return diff_ids


def _null_or(value: object, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _is_string_list(value: object) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
