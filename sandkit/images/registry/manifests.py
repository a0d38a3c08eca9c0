"""Manifest media types, the Accept header, verification of what a registry sends, and platform
selection from indexes (OCI image index / Docker manifest list)."""

from __future__ import annotations

from typing import Any

import attrs

from ...errors import ImageError, RegistryError
from ..digest import check_digest, sha256_bytes, verify_bytes
from ..documents import check_descriptor, load_json
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
# Content types that say nothing about the manifest kind: trust the body's own mediaType then.
_GENERIC_TYPES = {"", "application/json", "text/plain", "application/octet-stream"}
MAX_MANIFEST = MAX_DOCUMENT  # what registries themselves accept; bigger is an attack or a mistake


@attrs.frozen
class Manifest:
    """A manifest or index as the registry sent it: its ``media_type``, verified ``digest``, the
    ``raw`` bytes (kept as they are, since the digest is over them) and the parsed ``body``."""

    media_type: str
    digest: str
    raw: bytes
    body: dict[str, Any]

    @property
    def is_index(self) -> bool:
        """True for an OCI image index or Docker manifest list (one manifest per platform)."""
        return self.media_type in INDEX_TYPES


def parse(raw: bytes, content_type: str, *, expected: str | None, where: str) -> Manifest:
    """Check a fetched manifest: digest (``expected``: from the reference or the registry's
    Docker-Content-Digest), size bound, schema version, and Content-Type against mediaType."""
    if len(raw) > MAX_MANIFEST:
        raise RegistryError(
            f"manifest of {where} is {len(raw)} bytes, over the {MAX_MANIFEST} byte limit: refusing it"
        )
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
        raise RegistryError(
            f"manifest of {where} is not a JSON object (Content-Type {ctype!r}): the registry sent garbage"
        )
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
        raise RegistryError(
            f"manifest of {where} has schemaVersion {body.get('schemaVersion')!r}, expected 2"
        )
    return Manifest(media_type, sha256_bytes(raw), raw, body)


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
