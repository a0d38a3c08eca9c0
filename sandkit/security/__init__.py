"""Security defaults for containers: seccomp programs, capability masks, masked /proc and /sys paths.

What the runtime puts in the protocol messages:

- ``exec.seccomp``: ``resolve_seccomp(spec, caps)`` (bytes, or None for no filter);
- ``exec.caps``: ``resolve_caps(add, drop)`` (bitmask, bit N = capability N);
- ``setup.masked`` / ``setup.readonly``: ``MASKED_PATHS`` / ``READONLY_PATHS``.
"""

from .capabilities import DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_MASK, cap_names, resolve_caps
from .paths import MASKED_PATHS, READONLY_PATHS
from .seccomp import Action, Arg, Op, Rule, SeccompProfile, default_program, resolve_seccomp

__all__ = [
    "DOCKER_DEFAULT_CAPS",
    "DOCKER_DEFAULT_MASK",
    "MASKED_PATHS",
    "READONLY_PATHS",
    "Action",
    "Arg",
    "Op",
    "Rule",
    "SeccompProfile",
    "cap_names",
    "default_program",
    "resolve_caps",
    "resolve_seccomp",
]
