"""Rootless id ranges: the caller's subordinate ids (/etc/subuid, /etc/subgid), mapped with the
setuid helpers newuidmap/newgidmap, as rootless Podman does.

A rootless container maps 0 to the caller and 1..65535 to the first 65535 ids of the caller's
subordinate ranges, so that an image's own users (postgres, uid 70 or 999) exist inside. Without
an entry (or without the helpers, package ``uidmap``) the map stays the caller's one id, and a
program run as any other user fails with `unmapped_fix`'s advice.

The same mapping owns the files of the image store's layers and of volumes: they are written
inside a user namespace with this mapping (`run_mapped`), so that a layer's owners are what the
container sees, and they are removed the same way (the caller cannot delete files that belong to
its subordinate ids from outside).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import grp
import os
import pickle
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .errors import ContainerStartError, SandkitError

#: ids mapped inside a rootless container with a range: 0..INNER_IDS-1 (Podman's default too).
INNER_IDS = 65536
SUBUID_FILE, SUBGID_FILE = Path("/etc/subuid"), Path("/etc/subgid")
_HELPER_DIRS = "/usr/bin:/bin:/usr/sbin:/sbin"  # the setuid helpers, not whatever PATH says
_HELPER_TIMEOUT = 10.0

T = TypeVar("T")

_CLONE_NEWUSER = 0x10000000
# Loaded now: a forked child may not be able to read sandkit's (or Python's) files.
_libc = ctypes.CDLL(None, use_errno=True)


def _new_user_namespace() -> None:
    """unshare(CLONE_NEWUSER) (Python 3.11 has no os.unshare)."""
    if _libc.unshare(ctypes.c_int(_CLONE_NEWUSER)) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER) failed")


def _join_user_namespace(fd: int) -> None:
    """setns(fd, CLONE_NEWUSER) (Python 3.11 has no os.setns)."""
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(_CLONE_NEWUSER)) != 0:
        raise OSError(ctypes.get_errno(), "setns into the container's user namespace failed")


@attrs.frozen
class SubidRange:
    """One line of /etc/subuid or /etc/subgid: ``count`` ids from ``start``."""

    start: int
    count: int


def _entries(path: Path) -> list[tuple[str, SubidRange]]:
    """Every well-formed line of ``path``: the user (name or uid) and its range."""
    found = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in path.read_text().splitlines():
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                found.append((fields[0], SubidRange(int(fields[1]), int(fields[2]))))
    return found


def subordinate_range(path: Path, uid: int, name: str | None) -> SubidRange | None:
    """The first range ``path`` gives the user (by name or by uid, as shadow's helpers accept),
    or None."""
    for owner, found in _entries(path):
        if owner in (name, str(uid)) and found.count > 0:
            return found
    return None


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _helper(name: str) -> str | None:
    return shutil.which(name, path=_HELPER_DIRS)


@attrs.frozen
class RangeMapping:
    """0 -> the caller, 1..n-1 -> the start of its subordinate range (uids and gids apart)."""

    uid: int
    gid: int
    uids: SubidRange
    gids: SubidRange
    newuidmap: str
    newgidmap: str

    @property
    def inner_uids(self) -> int:
        """How many uids the container has: 0..inner_uids-1."""
        return 1 + min(INNER_IDS - 1, self.uids.count)

    @property
    def inner_gids(self) -> int:
        """How many gids the container has: 0..inner_gids-1."""
        return 1 + min(INNER_IDS - 1, self.gids.count)

    @property
    def key(self) -> str:
        """Names the mapping in the image store (layer.json "idmap"): a layer applied with one
        mapping is never used with another."""
        return (
            f"range:{self.uids.start}+{self.inner_uids - 1}:{self.gids.start}+{self.inner_gids - 1}"
        )

    @property
    def uid_map(self) -> str:
        """The uid map as /proc/<pid>/uid_map shows it."""
        return f"0 {self.uid} 1\n1 {self.uids.start} {self.inner_uids - 1}\n"

    @property
    def gid_map(self) -> str:
        """The gid map as /proc/<pid>/gid_map shows it."""
        return f"0 {self.gid} 1\n1 {self.gids.start} {self.inner_gids - 1}\n"

    def host_uid(self, inner: int) -> int:
        """The host uid a container's uid ``inner`` (< inner_uids) is."""
        return self.uid if inner == 0 else self.uids.start + inner - 1

    def write(self, pid: int) -> None:
        """Writes ``pid``'s maps (a process of ours in a fresh user namespace, waiting) with the
        setuid helpers: only they may map ids other than our own. Refused (`ContainerStartError`)
        for a range that is not the caller's alone (`shared_ids`)."""
        shared = shared_ids(self)
        if shared:
            name = _user_name(self.uid) or str(self.uid)
            raise ContainerStartError(
                f"your subordinate ids are not yours alone: {shared}. A container's users would "
                "be the same host ids as another user's (who could then signal, ptrace and read "
                "your containers' processes, and you theirs). Give each user a range of its "
                f"own in {SUBUID_FILE} and {SUBGID_FILE}, as root: `usermod --del-subuids "
                f"{self.uids.start}-{self.uids.start + self.uids.count - 1} --del-subgids "
                f"{self.gids.start}-{self.gids.start + self.gids.count - 1} --add-subuids "
                f"N-M --add-subgids N-M {name}` with a free N-M (65536 ids)"
            )
        self._run(self.newuidmap, pid, self.uid, self.uids.start, self.inner_uids - 1)
        self._run(self.newgidmap, pid, self.gid, self.gids.start, self.inner_gids - 1)

    @staticmethod
    def _run(helper: str, pid: int, own: int, start: int, count: int) -> None:
        argv = [helper, str(pid), "0", str(own), "1", "1", str(start), str(count)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_HELPER_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ContainerStartError(f"cannot run {helper} for the user namespace: {e}") from None
        if done.returncode != 0:
            raise ContainerStartError(
                f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}. It must be "
                f"setuid root (reinstall the uidmap package), and {SUBUID_FILE}/{SUBGID_FILE} must "
                "give your user that range; check them with `sandkit doctor`"
            )


def _overlaps(a: SubidRange, b: SubidRange) -> bool:
    return a.start < b.start + b.count and b.start < a.start + a.count


def shared_ids(mapping: RangeMapping) -> str:
    """What else holds the host ids ``mapping`` gives a container's users 1..n-1 (another
    user's subordinate range, or an account's or group's own id), as words; "" when nothing
    does. Shadow's newuidmap checks only that /etc/subuid gives the range to the caller."""
    name = _user_name(mapping.uid)
    uids = SubidRange(mapping.uids.start, mapping.inner_uids - 1)
    gids = SubidRange(mapping.gids.start, mapping.inner_gids - 1)
    found = [
        f"{path} gives {other} {theirs.start}-{theirs.start + theirs.count - 1} too"
        for path, ours in ((SUBUID_FILE, uids), (SUBGID_FILE, gids))
        for other, theirs in _entries(path)
        if other not in (name, str(mapping.uid)) and _overlaps(ours, theirs)
    ]
    found += [
        f"uid {user.pw_uid} is the account {user.pw_name!r}"
        for user in pwd.getpwall()
        if user.pw_uid != mapping.uid and _overlaps(uids, SubidRange(user.pw_uid, 1))
    ]
    found += [
        f"gid {group.gr_gid} is the group {group.gr_name!r}"
        for group in grp.getgrall()
        if group.gr_gid != mapping.gid and _overlaps(gids, SubidRange(group.gr_gid, 1))
    ]
    return "; ".join(found)


def rootless_mapping() -> RangeMapping | None:
    """The range a rootless container of this process gets, or None: root (no user namespace
    mapping a range is needed), no subordinate entries for the caller, or no helpers."""
    uid = os.geteuid()
    if uid == 0:
        return None
    name = _user_name(uid)
    uids = subordinate_range(SUBUID_FILE, uid, name)
    gids = subordinate_range(SUBGID_FILE, uid, name)
    newuidmap, newgidmap = _helper("newuidmap"), _helper("newgidmap")
    if uids is None or gids is None or newuidmap is None or newgidmap is None:
        return None
    return RangeMapping(uid, os.getegid(), uids, gids, newuidmap, newgidmap)


def mapping_key() -> str:
    """How this process's files in the store are owned: "host" (root: as the layers say),
    "single" (rootless, one id: everything is the caller's) or a `RangeMapping.key`."""
    if os.geteuid() == 0:
        return "host"
    mapping = rootless_mapping()
    return "single" if mapping is None else mapping.key


def unmapped_fix() -> str:
    """What to do when a rootless container's user or group is not mapped: the exact fix."""
    uid = os.geteuid()
    name = _user_name(uid) or str(uid)
    missing = [str(p) for p in (SUBUID_FILE, SUBGID_FILE) if not subordinate_range(p, uid, name)]
    if missing:
        return (
            f"a rootless container maps only your own uid (as root) because {' and '.join(missing)} "
            f"give your user {name!r} no subordinate ids; to run the image's own users, add them "
            f"as root: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`"
        )
    helpers = [h for h in ("newuidmap", "newgidmap") if _helper(h) is None]
    if helpers:
        return (
            f"{' and '.join(helpers)} (the setuid helpers that map your subordinate ids) are "
            "missing: install the uidmap package (apt-get install uidmap)"
        )
    mapping = rootless_mapping()
    top = min(mapping.inner_uids, mapping.inner_gids) - 1 if mapping else INNER_IDS - 1
    return (
        f"a rootless container maps ids 0 to {top} only (your subordinate range): use ids in it, "
        "or run as root; on a network whose keeper started before your /etc/subuid entry was "
        "added, only root is mapped until the keeper restarts (stop its containers)"
    )


# --- work done inside a user namespace with the mapping ----------------------------------------


def run_mapped(
    mapping: RangeMapping,
    job: Callable[[int | None], T],
    *,
    feed: Callable[[int], None] | None = None,
) -> T:
    """``job(data_fd)`` in a forked child that is root of a new user namespace with ``mapping``
    (so it may chown to the container's ids and remove what they own); returns its result or
    raises its `SandkitError` (others become a `SandkitError` with the child's message).

    ``feed(fd)``, when given, runs here meanwhile and writes the child's input into a pipe whose
    read end the job gets as ``data_fd`` (else None); the job must read it to EOF.
    """
    enter = _new_user_namespace
    return _run_forked(enter, mapping.write, job, feed)


def run_in_userns_of(pid: int, job: Callable[[], T]) -> T:
    """``job()`` in a forked child that joined the user namespace of our process ``pid`` (a
    rootless container's init), where it has every capability: it writes and removes files of
    the container's users (subordinate ids) as the container's root would, with the ids the
    container sees. Returns or raises as `run_mapped`."""
    userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter = functools.partial(_join_user_namespace, userns)
        return _run_forked(enter, None, lambda _fd: job(), None)
    finally:
        os.close(userns)


def _run_forked(
    enter: Callable[[], None],
    write_maps: Callable[[int], None] | None,
    job: Callable[[int | None], T],
    feed: Callable[[int], None] | None,
) -> T:
    """The child runs ``enter()`` (into a user namespace), waits while ``write_maps(pid)`` runs
    here, then ``job``. A fork (not an exec): the child needs no access to sandkit's files, and
    unshare/setns of a user namespace demand a single-threaded process, which a forked child is.
    It runs only the job and leaves with os._exit, touching none of the locks other threads of
    ours may have held."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    data_r, data_w = os.pipe2(os.O_CLOEXEC) if feed is not None else (None, None)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        _child(
            enter, job, (ready_w, go_r, result_w, data_r), close=(ready_r, go_w, result_r, data_w)
        )
    for fd in (ready_w, go_r, result_w, data_r):
        if fd is not None:
            os.close(fd)
    ours = [fd for fd in (ready_r, go_w, result_r, data_w) if fd is not None]
    try:
        _release(pid, write_maps, ready_r, go_w, result_r)
        if feed is not None and data_w is not None:
            _feed(feed, data_w)
            ours.remove(data_w)
            os.close(data_w)  # EOF for the child
        outcome = _read_all(result_r)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    finally:
        for fd in ours:
            os.close(fd)
    os.waitpid(pid, 0)
    return _outcome(outcome)


def _release(
    pid: int, write_maps: Callable[[int], None] | None, ready_r: int, go_w: int, result_r: int
) -> None:
    """Once the child is in its user namespace, write the maps and let it go on."""
    if os.read(ready_r, 1) != b"u":
        raise SandkitError(
            "cannot enter a user namespace with the containers' id mapping: "
            + _read_all(result_r).decode(errors="replace")
        )
    if write_maps is not None:
        write_maps(pid)
    os.write(go_w, b"g")


def _feed(feed: Callable[[int], None], fd: int) -> None:
    """The child stops reading only when it failed: its error is what counts then."""
    with contextlib.suppress(BrokenPipeError):
        feed(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _outcome(data: bytes) -> Any:
    if not data:
        raise SandkitError("the helper process that works in the user namespace died silently")
    kind, value = pickle.loads(data)  # our own forked child: trusted data
    if kind == "ok":
        return value
    if kind == "sandkit":
        raise value
    raise SandkitError(f"in the user namespace with the containers' id mapping: {value}")


def _child(  # pragma: no cover - runs in the forked child
    enter: Callable[[], None],
    job: Callable[[int | None], Any],
    fds: tuple[int, int, int, int | None],
    *,
    close: tuple[int | None, ...],
) -> None:
    ready_w, go_r, result_w, data_r = fds
    status = 0
    try:
        for fd in close:
            if fd is not None:
                os.close(fd)
        try:
            enter()
        except OSError as e:
            os.write(result_w, str(e).encode(errors="replace"))
            os._exit(1)
        os.write(ready_w, b"u")
        os.close(ready_w)
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        _send(result_w, _outcome_of(job, data_r))
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        status = 1
    finally:
        os._exit(status)


def _outcome_of(job: Callable[[int | None], Any], data_r: int | None) -> tuple[str, Any]:
    try:
        return ("ok", job(data_r))
    except SandkitError as e:
        return ("sandkit", e)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        return ("other", f"{type(e).__name__}: {e}")


def _send(fd: int, outcome: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(outcome)
    except Exception as e:  # noqa: BLE001 - an unpicklable result still gets a word out
        data = pickle.dumps(("other", f"{type(e).__name__}: {e}"))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def unshare_mapped(mapping: RangeMapping, unshare: Callable[[], None]) -> None:
    """``unshare()`` (with CLONE_NEWUSER among its flags) and become root of the new user namespace with ``mapping``
    (a network's keeper, so that the containers nested in it may map the range too). A child
    forked first, still outside, writes the maps: only a process there may run the helpers on
    us. The caller must be single-threaded (unshare's rule)."""
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        status = 1
        try:
            os.close(go_w)
            if os.read(go_r, 1) == b"g":
                mapping.write(os.getppid())
                status = 0
        except BaseException as e:  # noqa: BLE001 - said on stderr, the parent raises
            os.write(2, f"{e}\n".encode(errors="replace"))
        finally:
            os._exit(status)
    os.close(go_r)
    try:
        unshare()
        os.write(go_w, b"g")
    finally:
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SandkitError(
            "cannot map the subordinate id range in a new user namespace with newuidmap/"
            "newgidmap (their message is above); check `sandkit doctor`"
        )


def as_owner(work: Callable[[], T], mapping: RangeMapping | None) -> T:
    """``work()``, done again inside the user namespace of ``mapping`` when the caller may not
    touch what the container's users own (a tree of its subordinate ids, to read or delete)."""
    try:
        return work()
    except PermissionError:
        if mapping is None:
            raise
        return run_mapped(mapping, lambda _fd: work())
