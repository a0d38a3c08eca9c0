"""Where detached containers are found again: `$SANDKIT_HOME/run/<id>/`, for `sandkit run -d`
and ``detach=True`` alike (each has a supervisor, sandkit/detached/supervisor.py).

    config.json      what to start (image, options, main command), name, creation time (written
                     once); `sandkit run -d` adds its RunSpec for `inspect`
    state.json       status, supervisor pid (+ its start time), exit code, times (replaced atomically)
    health.json      State.Health, with a health check (replaced atomically by its thread)
    control.sock     the supervisor's socket (exists while it runs)
    log              the main process's output, in Docker's multiplexed frame format
    supervisor.log   the supervisor's own stderr, for when something goes wrong

A container is running exactly while its supervisor process is: the supervisor holds the
container's control socket, and the init inside kills everything when that socket closes. So a
dead supervisor means a stopped container, and `ps` can tell by looking at the pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from .. import errors
from ..home import private_home, private_subdir

_ID = re.compile(r"^[0-9a-f]{64}$")
# State.Health of a container with a health check (see write_health).
HEALTH_FILE = "health.json"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# Docker names containers adjective_noun; these word lists are sandkit's own.
_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "daring",
    "eager",
    "fuzzy",
    "gentle",
    "hardy",
    "jolly",
    "keen",
    "lucid",
    "mellow",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "sturdy",
    "tidy",
    "vivid",
    "witty",
)
_NOUNS = (
    "badger",
    "canyon",
    "delta",
    "ember",
    "falcon",
    "glacier",
    "harbor",
    "island",
    "juniper",
    "kestrel",
    "lagoon",
    "meadow",
    "nebula",
    "otter",
    "prairie",
    "quartz",
    "river",
    "summit",
    "tundra",
    "willow",
)


class ContainerNotRunning(errors.ContainerNotRunningError):
    """The command needs a running container, and this one has stopped."""


# Failures to find the container asked for: Docker exits 1 for these, even for `exec`.
LOOKUP_ERRORS = (errors.NoSuchContainerError, ContainerNotRunning)


def run_dir() -> Path:
    """``$SANDKIT_HOME/run``: the home is checked to be private first (sandkit/home.py), since
    control sockets and logs of detached containers live here."""
    return private_subdir(private_home(), "run")


def _names_dir() -> Path:
    path = run_dir() / "names"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


@attrs.define
class Record:
    """One detached container, as its state directory describes it."""

    id: str
    dir: Path
    config: dict[str, Any]
    state: dict[str, Any]

    @property
    def name(self) -> str:
        """The ``--name`` the container was given (empty without one)."""
        return str(self.config.get("name", ""))

    @property
    def command(self) -> list[str]:
        """The main process's argv: the one `sandkit run -d` gave, or the one the supervisor
        resolved from the image for a ``run=`` container (Docker's ps and inspect show it)."""
        return list(self.state.get("command") or self.config.get("command") or [])

    @property
    def socket_path(self) -> str:
        """Where the container's supervisor listens for requests."""
        return str(self.dir / "control.sock")

    @property
    def log_path(self) -> Path:
        """The file the supervisor writes the main process's output to (Docker's multiplexed log
        frames)."""
        return self.dir / "log"

    @property
    def running(self) -> bool:
        """True while the container's supervisor is alive (the same process: pid and start time)
        and has not recorded an exit."""
        return self.state.get("status") in ("created", "running") and supervisor_alive(self.state)

    @property
    def status(self) -> str:
        """Docker's State.Status: created, running or exited."""
        if self.running:
            return str(self.state["status"])
        if self.state.get("status") == "created" and "supervisor_pid" not in self.state:
            return "created"  # `sandkit create`d, never started
        return "exited"

    @property
    def exit_code(self) -> int | None:
        """None when the supervisor died without recording one (it was SIGKILLed)."""
        code = self.state.get("exit_code")
        return int(code) if code is not None else None

    @property
    def health(self) -> dict[str, Any] | None:
        """State.Health as the supervisor last wrote it (health.json), None without a health
        check."""
        return _read_json(self.dir / HEALTH_FILE) or None

    def reload(self) -> Record:
        """The record as the state directory says now."""
        return load(self.dir)


def load(directory: Path) -> Record:
    """The record of the container whose state directory is ``directory``."""
    config = _read_json(directory / "config.json")
    state = _read_json(directory / "state.json") or {"status": "created"}
    return Record(directory.name, directory, config, state)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_state(directory: Path, **state: Any) -> None:
    """Replace state.json at once (write then rename), so a reader never sees half of it."""
    current = _read_json(directory / "state.json")
    current.update(state)
    tmp = directory / f".state.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(current))
    os.replace(tmp, directory / "state.json")


def write_health(directory: Path, report: dict[str, Any]) -> None:
    """Replace health.json at once: the health check's thread writes it, apart from state.json,
    which the supervisor's loop rewrites (read, change, write) at the same time."""
    tmp = directory / f".health.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(report))
        os.replace(tmp, directory / HEALTH_FILE)
    except OSError:
        # No room, or the state directory is going: the checks go on, the next result is
        # written again (a health report is worth no failure of the container).
        with contextlib.suppress(OSError):
            tmp.unlink()


def process_start_time(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, which tells it apart from a later
    process that reuses its pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def supervisor_alive(state: dict[str, Any]) -> bool:
    """True when the supervisor named in ``state`` is alive: its pid runs and has the recorded
    start time, so a reused pid does not count."""
    pid = state.get("supervisor_pid")
    if not pid:
        return False
    return process_start_time(int(pid)) == state.get("supervisor_start")


# --- creating, finding and removing ------------------------------------------------------------


def create(config: dict[str, Any], name: str | None) -> Record:
    """A new state directory with a unique id and name (Docker's rules for both)."""
    container_id = secrets.token_hex(32)
    directory = run_dir() / container_id
    directory.mkdir(mode=0o700)
    try:
        name = _reserve_name(name, container_id)
        config = {**config, "id": container_id, "name": name, "created": time.time()}
        (directory / "config.json").write_text(json.dumps(config))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return load(directory)


def _reserve_name(name: str | None, container_id: str) -> str:
    if name is None:
        for _ in range(100):
            candidate = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
            if _try_link(candidate, container_id):
                return candidate
        name = f"sandkit_{container_id[:8]}"
    if not _NAME.match(name):
        raise errors.ContainerError(
            f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    if not _try_link(name, container_id):
        owner = os.readlink(_names_dir() / name)
        raise errors.NameInUseError(
            f'Conflict. The container name "/{name}" is already in use by container "{owner}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )
    return name


def _try_link(name: str, container_id: str) -> bool:
    """Claim ``name`` with a symlink (atomic); a link to a container that is gone is stale,
    and replaced under the names' lock: two processes that both found it stale must not
    both remove what is there and link their own (the second would remove the first's
    fresh link, and two containers would answer to the name)."""
    names = _names_dir()
    link = names / name
    try:
        os.symlink(container_id, link)
        return True
    except FileExistsError:
        pass
    with _names_locked(names):
        with contextlib.suppress(FileNotFoundError):
            if (run_dir() / os.readlink(link)).is_dir():
                return False
            link.unlink()
        try:
            os.symlink(container_id, link)
        except FileExistsError:  # a claim that took no lock came first
            return False
    return True


@contextlib.contextmanager
def _names_locked(names: Path) -> Iterator[None]:
    """An exclusive flock on the names directory, for replacing a stale link."""
    fd = os.open(names, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def records() -> list[Record]:
    """Every detached container, newest first."""
    found = [load(d) for d in run_dir().iterdir() if _ID.match(d.name) and d.is_dir()]
    return sorted(found, key=lambda r: r.config.get("created", 0), reverse=True)


def find(ref: str) -> Record:
    """By name, full id or unique id prefix, as Docker finds containers."""
    link = _names_dir() / ref
    if _NAME.match(ref) and link.is_symlink():
        directory = run_dir() / os.readlink(link)
        if directory.is_dir():
            return load(directory)
    matches = [r for r in records() if r.id.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise errors.ContainerError(f"multiple containers found with provided prefix: {ref}")
    raise errors.NoSuchContainerError(f"No such container: {ref}")


def remove(record: Record) -> None:
    """Delete the container's state directory, and its name if that still names it."""
    names = _names_dir()
    link = names / record.name
    if record.name:
        # Under the lock, so that no other remove of it takes the name back from a new
        # container that claimed it between this look and the unlink.
        with _names_locked(names), contextlib.suppress(OSError):
            if os.readlink(link) == record.id:
                link.unlink()
    shutil.rmtree(record.dir, ignore_errors=True)
