"""Network definitions: what ``sandkit network create`` and `sandkit.Network` record.

A network is a name, an id, an IPv4 subnet with its gateway and a few flags, kept in
``$SANDKIT_HOME/networks/<id prefix>/network.json``. The definition outlives containers, as a
Docker network does; what makes the network work (its namespace, bridge and keeper process,
`sandkit.net.keeper`) exists only while containers are on it. The directory of a network also
holds its ``lock`` (taken by whoever starts, joins or stops its keeper, and by `remove_network`)
and, while the keeper runs, its ``keeper.sock``.

The default network, ``bridge``, is built in: it always exists, needs no file, and cannot be
removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from ..errors import (
    NetworkError,
    NetworkExistsError,
    NetworkInUseError,
    NetworkNotFoundError,
    NetworkSpecError,
)
from ..home import private_home, private_subdir

DEFAULT_NETWORK = "bridge"
DEFAULT_SUBNET = ipaddress.IPv4Network("10.88.0.0/16")
# User networks get a /24 each from here unless they name their own subnet.
USER_SUBNET_POOL = ipaddress.IPv4Network("10.89.0.0/16")
USER_SUBNET_PREFIX = 24
# Names that mean a mode, not a network (Docker refuses them too).
RESERVED_NAMES = frozenset({"none", "host", DEFAULT_NETWORK, "default"})
# Docker's rule for network names, with a length bound of ours.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_ID_DIR_LENGTH = 12  # the directory of a network is named by its short id: paths stay short
_DEFINITION = "network.json"


@attrs.frozen
class NetworkRecord:
    """One network's definition."""

    name: str
    id: str  # 64 hex digits, as Docker's
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    internal: bool = False  # no outbound traffic at all: containers reach only each other
    created: str = ""  # RFC 3339
    labels: dict[str, str] = attrs.field(factory=dict)
    builtin: bool = False

    @property
    def short_id(self) -> str:
        """The first 12 digits of the id, as ``sandkit network ls`` shows it."""
        return self.id[:_ID_DIR_LENGTH]

    def directory(self, home: Path | None = None) -> Path:
        """The network's private directory (created if missing): lock, keeper socket."""
        return private_subdir(private_home(home), "networks", self.short_id)

    def to_json(self) -> dict[str, Any]:
        """The definition as stored in network.json (Docker's field names)."""
        return {
            "Name": self.name,
            "Id": self.id,
            "Subnet": str(self.subnet),
            "Gateway": str(self.gateway),
            "Internal": self.internal,
            "Created": self.created,
            "Labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkRecord:
        """The definition read back from network.json."""
        return cls(
            name=str(data["Name"]),
            id=str(data["Id"]),
            subnet=ipaddress.IPv4Network(data["Subnet"]),
            gateway=ipaddress.IPv4Address(data["Gateway"]),
            internal=bool(data.get("Internal", False)),
            created=str(data.get("Created", "")),
            labels={str(k): str(v) for k, v in dict(data.get("Labels") or {}).items()},
        )


# The built-in default network; its id is fixed so that it is the same in every process.
BRIDGE = NetworkRecord(
    name=DEFAULT_NETWORK,
    id=hashlib.sha256(b"sandkit network bridge").hexdigest(),
    subnet=DEFAULT_SUBNET,
    gateway=DEFAULT_SUBNET.network_address + 1,
    builtin=True,
)


def check_name(name: str) -> str:
    """``name`` if it may name a user network; NetworkSpecError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NetworkSpecError(
            f"invalid network name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise NetworkSpecError(
            f"network name {name!r} is reserved (none, host and bridge are modes of "
            "network=): choose another name"
        )
    return name


def _networks_dir(home: Path | None) -> Path:
    return private_subdir(private_home(home), "networks")


@contextlib.contextmanager
def _store_lock(home: Path | None) -> Iterator[None]:
    """Serialises create and remove between processes (names and subnets stay unique)."""
    path = _networks_dir(home) / "store.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def network_lock(record: NetworkRecord, home: Path | None = None) -> Iterator[Path]:
    """Holds the network's own lock: nobody starts, joins, stops or removes its keeper meanwhile.
    Yields the network's directory."""
    directory = record.directory(home)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)


def list_networks(home: Path | None = None) -> list[NetworkRecord]:
    """Every network: the built-in ``bridge`` first, then the user's by name."""
    records = []
    for entry in sorted(_networks_dir(home).iterdir()):
        definition = entry / _DEFINITION
        if entry.is_dir() and definition.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                records.append(NetworkRecord.from_json(json.loads(definition.read_text())))
    return [BRIDGE, *sorted(records, key=lambda r: r.name)]


def get_network(name_or_id: str, home: Path | None = None) -> NetworkRecord:
    """The network named ``name_or_id``, or whose id starts with it (Docker's rule: a unique
    prefix of at least a few digits); NetworkNotFoundError otherwise."""
    records = list_networks(home)
    for record in records:
        if record.name == name_or_id or record.id == name_or_id:
            return record
    if len(name_or_id) >= 3 and re.fullmatch(r"[0-9a-f]+", name_or_id):
        matches = [r for r in records if r.id.startswith(name_or_id)]
        if len(matches) == 1:
            return matches[0]
    raise NetworkNotFoundError(
        f"network {name_or_id!r} not found: create it with `sandkit network create "
        f"{name_or_id}` or sandkit.Network({name_or_id!r}); `sandkit network ls` lists them"
    )


def _parse_subnet(subnet: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise NetworkSpecError(
            f"invalid subnet {str(subnet)!r}: {exc}; give an IPv4 network such as 10.90.0.0/24"
        ) from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise NetworkSpecError(f"subnet {subnet!r} is IPv6: sandkit's networks are IPv4 only")
    if network.prefixlen > 29:
        raise NetworkSpecError(
            f"subnet {subnet!r} is too small: it needs room for a gateway and containers "
            "(a /29 or larger)"
        )
    return network


def _free_subnet(taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in USER_SUBNET_POOL.subnets(new_prefix=USER_SUBNET_PREFIX):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise NetworkSpecError(
        f"every /{USER_SUBNET_PREFIX} of {USER_SUBNET_POOL} is taken by a network: remove "
        "unused networks (`sandkit network prune`) or give subnet= explicitly"
    )


def create_network(
    name: str | None = None,
    *,
    subnet: str | ipaddress.IPv4Network | None = None,
    internal: bool = False,
    labels: dict[str, str] | None = None,
    home: Path | None = None,
) -> NetworkRecord:
    """Records a new network. ``name=None`` picks one (``sandkit-<hex>``); ``subnet=None`` picks
    a free /24 of 10.89.0.0/16. Refuses a name or subnet already taken."""
    name = check_name(name if name is not None else f"sandkit-{secrets.token_hex(4)}")
    wanted = _parse_subnet(subnet) if subnet is not None else None
    with _store_lock(home):
        existing = list_networks(home)
        if any(r.name == name for r in existing):
            raise NetworkExistsError(
                f"a network named {name!r} exists already: use it, or remove it first with "
                f"`sandkit network rm {name}`"
            )
        taken = [r.subnet for r in existing]
        if wanted is not None:
            clash = next((r for r in existing if r.subnet.overlaps(wanted)), None)
            if clash is not None:
                raise NetworkSpecError(
                    f"subnet {wanted} overlaps network {clash.name!r} ({clash.subnet}): "
                    "choose another subnet"
                )
        chosen = wanted or _free_subnet(taken)
        record = NetworkRecord(
            name=name,
            id=secrets.token_hex(32),
            subnet=chosen,
            gateway=chosen.network_address + 1,
            internal=internal,
            created=datetime.now(UTC).isoformat(),
            labels=dict(labels or {}),
        )
        directory = record.directory(home)
        temporary = directory / f".{_DEFINITION}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(record.to_json(), out)
        os.rename(temporary, directory / _DEFINITION)
    return record


def keeper_socket(directory: Path) -> Path:
    """Where a network's keeper listens while it runs."""
    return directory / "keeper.sock"


# How long a status probe waits for a keeper's answer (it answers at once unless wedged).
_PROBE_TIMEOUT = 1.0


def keeper_running(directory: Path) -> bool:
    """Whether a keeper serves containers on the network (call with the network's lock held).

    A keeper whose last container just left still listens until it can take the lock, which
    the caller holds: it answers the probe with no members and counts as gone (it exits, and
    removes its socket if still there, once the caller lets go). Something that accepts the
    probe but does not answer counts as running.
    """
    from .protocol import receive, send  # the protocol module imports nothing of ours

    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as probe:
        # (before connecting too: a stopped keeper's full backlog would hold the connect)
        probe.settimeout(_PROBE_TIMEOUT)
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # Through the directory's fd: a deep $SANDKIT_HOME makes paths longer than sun_path.
            probe.connect(f"/proc/self/fd/{dir_fd}/{keeper_socket(directory).name}")
        except TimeoutError:
            return True  # something listens there but does not take us: it counts as running
        except OSError:
            return False
        finally:
            os.close(dir_fd)
        try:
            send(probe, {"op": "status"})
            answer = receive(probe)
        except (OSError, NetworkError):
            return True
    if answer is None:
        return True
    message, fds = answer
    for fd in fds:
        os.close(fd)
    members = message.get("members")
    return not (isinstance(members, int) and members == 0)


def remove_network(name_or_id: str, home: Path | None = None) -> NetworkRecord:
    """Removes a user network's definition; NetworkInUseError while containers are on it."""
    record = get_network(name_or_id, home)
    if record.builtin:
        raise NetworkSpecError(
            f"{record.name!r} is sandkit's built-in default network and cannot be removed"
        )
    with _store_lock(home), network_lock(record, home) as directory:
        if keeper_running(directory):
            raise NetworkInUseError(
                f"network {record.name!r} has containers on it: stop them (or `sandkit "
                f"network disconnect {record.name} CONTAINER`) before removing it"
            )
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()
    return record


__all__ = [
    "BRIDGE",
    "DEFAULT_NETWORK",
    "NetworkRecord",
    "check_name",
    "create_network",
    "get_network",
    "keeper_running",
    "keeper_socket",
    "list_networks",
    "network_lock",
    "remove_network",
]
