"""Image references (`name[:tag][@digest]`), normalised the way Docker normalises them.

``busybox`` means ``docker.io/library/busybox:latest``; the first path component is a registry
only if it contains ``.`` or ``:`` or is ``localhost``. The store keys tags by the full form and
shows the short ("familiar") form, as `docker images` does.
"""

from __future__ import annotations

import re

import attrs

from ..errors import InvalidReferenceError

DEFAULT_REGISTRY = "docker.io"
# The grammar of the distribution spec and Docker's reference package. Matched whole
# (fullmatch: '$' would let a trailing newline through) and ASCII only: Python's \w, unlike
# Go's, takes any Unicode letter or digit.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_TAG = re.compile(
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII
)  # the spec: at most 128 characters
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_HOST = re.compile(r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?", re.ASCII)
NAME_MAX = 255  # Docker's NameTotalLengthMax: registry/path, after normalisation


@attrs.frozen
class Reference:
    """A parsed image reference in Docker's full form: ``registry``, ``repository``
    (``library/busybox`` for an official image), and a ``tag`` and/or a ``digest``."""

    registry: str
    repository: str  # path inside the registry, e.g. library/busybox
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar_name(self) -> str:
        """The name as `docker images` shows it: without ``docker.io/`` and ``library/`` for
        Docker Hub's images."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        return self.repository.removeprefix("library/")

    def familiar(self) -> str:
        """The short form with its tag and digest (``busybox:latest``), as Docker shows it."""
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        """The same repository with ``tag`` and no digest."""
        return attrs.evolve(self, tag=tag, digest=None)


def _invalid(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(
        f"invalid image reference {text!r}: {why} (expected something like 'busybox', "
        "'busybox:1.36', 'registry.example.com:5000/team/app:v1' or 'name@sha256:<64 hex>')"
    )


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise; ``default_tag`` adds ``:latest`` when neither tag nor digest is given."""
    if not isinstance(text, str) or not text or len(text) > 4096 or text != text.strip():
        raise _invalid(str(text)[:300], "empty, too long, or surrounded by spaces")
    if not text.isascii() or not text.isprintable():
        raise _invalid(
            text[:300], "only ASCII letters, digits and the separators / : @ . _ - may appear"
        )
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise _invalid(text, "the digest after '@' must be sha256: and 64 lowercase hex digits")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:  # a ':' after the last '/' is a tag; before it, a registry port
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise _invalid(text, f"tag {tag!r} may hold letters, digits, '_', '.', '-' (max 128)")
    parts = rest.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
        if not _HOST.fullmatch(registry):
            raise _invalid(text, f"registry {registry!r} is not a valid host[:port]")
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    for component in path:
        if not _COMPONENT.fullmatch(component):
            raise _invalid(
                text,
                f"name component {component!r} must be lowercase letters/digits and separators",
            )
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    if len(registry) + 1 + len("/".join(path)) > NAME_MAX:
        raise _invalid(
            text,
            f"the name {registry}/{'/'.join(path)} is longer than {NAME_MAX} characters (Docker's limit)",
        )
    if tag is None and digest is None and default_tag:
        tag = "latest"
    return Reference(registry, "/".join(path), tag, digest)
