"""Docker's exit codes, and which sandkit error maps to which."""

from __future__ import annotations

from .. import errors

OK = 0
FAILED = 1  # what Docker's non-run commands return on an error (no such container, ...)
SANDKIT_FAILED = 125  # the tool itself failed: bad flags, missing image, set-up error
CANNOT_RUN = 126  # the command exists but cannot be executed
NOT_FOUND = 127  # the command does not exist in the container
SIGNAL_BASE = 128  # 128 + N: the command was ended by signal N


def for_error(exc: errors.SandkitError) -> int:
    """The exit code `docker run` gives for the same failure."""
    if isinstance(exc, errors.UserNotFoundError | errors.WorkdirError):
        # Docker resolves the user and the working directory before it creates the process:
        # daemon-side failures (125), not the command's.
        return SANDKIT_FAILED
    if isinstance(exc, errors.ExecStartError):
        return exc.exit_code  # 126, or 127 for CommandNotFoundError
    return SANDKIT_FAILED


def from_returncode(returncode: int) -> int:
    """A process's return code as a shell (and Docker) reports it: -N (signal N) -> 128 + N."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode
