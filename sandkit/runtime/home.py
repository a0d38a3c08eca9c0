"""Where sandkit keeps its state (`SANDKIT_HOME`), and the few fixed directories in it."""

from __future__ import annotations

import os
from pathlib import Path


def sandkit_home() -> Path:
    """$SANDKIT_HOME, else /var/lib/sandkit for root and $XDG_DATA_HOME/sandkit for a user."""
    explicit = os.environ.get("SANDKIT_HOME")
    if explicit:
        return Path(explicit).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/sandkit")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "sandkit"


def scratch_mountpoint(home: Path) -> Path:
    """An empty directory that every container mounts its own scratch tmpfs over.

    Each init mounts over it inside its private mount namespace, so one directory serves every
    container at once and the host never sees those mounts: nothing to clean up, even after
    `kill -9` of the host.
    """
    path = home / "mnt"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        from ..errors import HostUnsupportedError

        raise HostUnsupportedError(
            f"cannot create sandkit's state directory {str(path)!r}: {exc.strerror}; "
            "set SANDKIT_HOME to a writable directory"
        ) from None
    return path
