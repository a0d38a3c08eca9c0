"""Where sandkit keeps its state (`SANDKIT_HOME`), and the few fixed directories in it.

The home holds unpacked image layers with their images' own modes (setuid files, world-writable
directories), blobs, lock and lease files and the run state of detached containers. None of it
may be reachable by another local user: they could run a setuid-root file from a layer, read a
secret from a blob, plant a file that every container then sees, or flock a lease file to block
our runs. So the home is private to the user who owns it (mode 0700; Docker keeps
/var/lib/docker 0710), and this is checked every time it is opened, not only when created.

The image store, the runtime and the CLI all keep their state here, so this module sits below
all of them, beside `errors` (the only part of sandkit it imports; docs/architecture.md).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o700


def sandkit_home() -> Path:
    """$SANDKIT_HOME, else /var/lib/sandkit for root and $XDG_DATA_HOME/sandkit for a user."""
    explicit = os.environ.get("SANDKIT_HOME")
    if explicit:
        return Path(explicit).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/sandkit")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(data_home) / "sandkit"


def _state_error(message: str) -> Exception:
    from .errors import HostUnsupportedError

    return HostUnsupportedError(message)


def private_home(home: Path | None = None) -> Path:
    """``home`` (default: `sandkit_home()`), created 0700 if missing and checked if not.

    An existing home must belong to us: one owned by another user is refused (whoever owns it
    could plant content for our containers). One that others may write to is refused too,
    because its content can no longer be trusted; one that others may only read or enter is
    made private (chmod 0700), which is what it should have been.
    """
    path = (home or sandkit_home()).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_ancestors(path)
        path.mkdir(mode=PRIVATE_MODE, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise _state_error(
            f"cannot create sandkit's state directory {str(path)!r}: {exc.strerror}; "
            "set SANDKIT_HOME to a writable directory"
        ) from None
    _check_private(path, st)
    return path


def _check_ancestors(path: Path) -> None:
    """Refuses a home that another user could swap: one below a directory they own, or may
    write to without the sticky bit (/tmp's, which keeps them from renaming our entries). They
    could replace the home by a link between two of our calls: to a directory of ours (which
    `_check_private` would then make private and fill), or to a tree of theirs whose links we
    would follow. Both the path as given and where its links lead are checked."""
    uid = os.geteuid()
    for directory in sorted(_ancestors(path.parent)):
        st = os.stat(directory, follow_symlinks=False)
        if st.st_uid not in (0, uid):
            problem = f"belongs to uid {st.st_uid}"
        elif stat.S_ISLNK(st.st_mode):
            continue  # (a link's own mode means nothing; the directory holding it is checked)
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            problem = f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
        else:
            continue
        raise _state_error(
            f"sandkit's state directory {str(path)!r} lies below {str(directory)!r}, which "
            f"{problem}: whoever may change it could swap the state directory for a link to "
            "files of yours. Set SANDKIT_HOME to a directory whose parents only you or root "
            "may change"
        )


def _ancestors(directory: Path) -> set[Path]:
    """``directory`` and every directory above it, as written and where each leads through
    links."""
    written = {directory, *directory.parents}
    resolved = (Path(os.path.realpath(p)) for p in written)
    return written | {a for r in resolved for a in (r, *r.parents)}


def _check_private(path: Path, st: os.stat_result) -> None:
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise _state_error(
            f"sandkit's state directory {str(path)!r} is not a directory: "
            "remove it or set SANDKIT_HOME to another path"
        )
    if st.st_uid != uid:
        raise _state_error(
            f"sandkit's state directory {str(path)!r} belongs to uid {st.st_uid}, not to you "
            f"(uid {uid}): its owner could change the images your containers run. Set "
            "SANDKIT_HOME to a directory of your own (sandkit creates it, mode 0700)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _state_error(
            f"sandkit's state directory {str(path)!r} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}), so what is in it may have been planted by them: "
            "remove it (images are pulled or loaded again), or if you trust its content, "
            f"`chmod 700 {path}`"
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Readable or enterable only: nothing can have been added, so closing it is enough.
        os.chmod(path, PRIVATE_MODE)


def private_subdir(home: Path, *parts: str) -> Path:
    """A directory under the (already checked) home, created 0700 (each level) if missing;
    HostUnsupportedError naming the fix when it cannot be (a read-only or full disk)."""
    path = home
    for part in (p for name in parts for p in name.split("/")):
        path = path / part
        try:
            path.mkdir(exist_ok=True, mode=PRIVATE_MODE)
        except OSError as exc:
            raise _state_error(
                f"cannot create sandkit's state directory {str(path)!r}: {exc.strerror}; "
                "set SANDKIT_HOME to a writable directory"
            ) from None
    return path


def scratch_mountpoint(home: Path) -> Path:
    """An empty directory that every container mounts its own scratch tmpfs over.

    Each init mounts over it inside its private mount namespace, so one directory serves every
    container at once and the host never sees those mounts: nothing to clean up, even after
    `kill -9` of the host.
    """
    return private_subdir(private_home(home), "mnt")
