"""Platforms (`os/arch[/variant]`): the host's, parsing, and choosing one from an index."""

from __future__ import annotations

import platform as _platform
from typing import Any

import attrs

from ..errors import ImageError

# uname machine -> (GOARCH, variant): the names registries use.
_MACHINE = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@attrs.frozen
class Platform:
    """An OCI platform (``linux/amd64``, ``linux/arm/v7``): names as registries and Go use them."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``"os/arch"`` or ``"os/arch/variant"`` (any case); `ImageError` for anything else."""
        parts = text.strip().lower().split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ImageError(
                f"invalid platform {text!r}: write it as os/arch or os/arch/variant, "
                "for example 'linux/amd64' or 'linux/arm/v7'"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_oci(cls, obj: dict[str, Any]) -> Platform:
        """The platform of an OCI ``platform`` object (an index entry's, or an image config's
        fields)."""
        return cls(
            str(obj.get("os", "")), str(obj.get("architecture", "")), str(obj.get("variant", ""))
        )

    def matches(self, other: Platform) -> bool:
        """Does an image built for ``other`` satisfy a request for ``self``?

        A missing variant on either side matches any variant, as Docker does (arm64 images
        rarely say v8); otherwise variants must agree.
        """
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant


def host_platform() -> Platform:
    """This machine's platform, in registry names (``x86_64`` is ``linux/amd64``, ``aarch64`` is
    ``linux/arm64/v8``)."""
    arch, variant = _MACHINE.get(_platform.machine().lower(), (_platform.machine().lower(), ""))
    return Platform("linux", arch, variant)


def is_attestation(desc: dict[str, Any]) -> bool:
    """BuildKit stores provenance/SBOM manifests in indexes under platform unknown/unknown."""
    plat = desc.get("platform") or {}
    return plat.get("os") == "unknown" and plat.get("architecture") == "unknown"


def choose(manifests: list[dict[str, Any]], wanted: Platform | None, where: str) -> dict[str, Any]:
    """Pick the descriptor for ``wanted`` (default: the host) among an index's manifests."""
    candidates = [m for m in manifests if not is_attestation(m)]
    if not candidates:
        raise ImageError(f"{where} lists no runnable image (only attestations or nothing at all)")
    target = wanted or host_platform()
    with_platform = [m for m in candidates if m.get("platform")]
    if not with_platform and len(candidates) == 1:
        return candidates[0]
    for m in with_platform:
        if target.matches(Platform.from_oci(m["platform"])):
            return m
    available = ", ".join(str(Platform.from_oci(m["platform"])) for m in with_platform) or "none"
    raise ImageError(
        f"{where} has no image for platform {target} (available: {available}): pass "
        "platform='os/arch' to choose one explicitly"
    )
