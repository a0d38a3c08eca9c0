"""Docker's exit codes: they live with the detached containers' supervisor, which reports them
too (sandkit/detached/exitcodes.py); the CLI's modules use them by this name."""

from ..detached.exitcodes import (
    CANNOT_RUN,
    FAILED,
    NOT_FOUND,
    OK,
    SANDKIT_FAILED,
    SIGNAL_BASE,
    for_error,
    from_returncode,
)

__all__ = [
    "CANNOT_RUN",
    "FAILED",
    "NOT_FOUND",
    "OK",
    "SANDKIT_FAILED",
    "SIGNAL_BASE",
    "for_error",
    "from_returncode",
]
