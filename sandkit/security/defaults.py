"""The security settings every exec gets unless the caller asks otherwise, computed once."""

from __future__ import annotations

import functools

from . import capabilities, seccomp


@functools.cache
def capabilities_mask() -> int:
    """Docker's default capability set, as the bitmask the init's `exec` message takes."""
    return capabilities.resolve_caps()


def seccomp_program() -> bytes:
    """The default seccomp filter, compiled once per process (the compiler caches it)."""
    return seccomp.default_program()
