"""The host <-> keeper protocol: one JSON object per SOCK_SEQPACKET packet, fds by SCM_RIGHTS.

Both ends check every message strictly (size, type, keys, value types) and refuse anything
else: the keeper trusts only processes of its own user (its socket lives in the private
$SANDKIT_HOME), but a bug on either side must end in a clear error, never in a guess.

Requests (host -> keeper), at most one fd each:
- ``{"op": "hello"}``: the first packet of a connection; it makes the connection a member (a
  connection that closes without one, as `store.keeper_running` does, is only a probe). The
  reply carries the keeper's user namespace as an fd when it has one (rootless).
- ``{"op": "status"}`` (instead of a hello: a probe, `store.keeper_running`): the reply is
  ``{"members": n}``, the connections that said hello.
- ``{"op": "list"}`` (instead of a hello: a probe, ``sandkit network inspect``): the reply is
  ``{"containers": {id: {"Name": str, "IPv4Address": str, "MacAddress": str}}}``, one entry
  per attached container, by its id, as Docker's "Containers" of a network: ``Name`` is its
  host name, ``IPv4Address`` its address with the prefix length ("10.89.0.2/24").
- ``{"op": "attach", "id": str, "name": str, "aliases": [str], "iface": str, "egress": {...},
  "denied": [str]}`` with the container's network namespace as an fd: ``id`` is the
  container's (64 lowercase hex digits), ``name`` its host name; ``egress`` is the
  container's policy (`egress.ResolvedEgress.to_json`), ``denied`` the always-denied networks
  read on the host (`egress.always_denied`); the reply is the interface's configuration
  (`check_attachment`).
  Closing the connection detaches everything it attached.
- ``{"op": "egress", "egress": {...}, "denied": [str]}``: a new egress policy for what this
  connection attached (a running container's ``set_egress``), as in an attach; each container's
  chain is swapped in one transaction, and the resolver follows the new policy. The reply is
  ``{"ok": true}``, or ``{"error": str}``.

A connection past the keeper's limit (`keeper.MAX_CONNECTIONS`, or fewer for its fd limit) gets
``{"error": str}`` at once, saying so, and is closed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from typing import Any

import attrs

from ..errors import NetworkError
from .egress import ResolvedEgress, denied_from_json

# A request or reply is small (a few names and addresses), but for an attach's egress policy:
# up to egress.MAX_DESTINATIONS destinations of a few dozen bytes each. Below the kernel's
# default socket send buffer (net.core.wmem_default, 208 KiB), the limit of one packet.
MAX_MESSAGE = 160 * 1024
MAX_FDS = 1
MAX_ALIASES = 16
# A DNS label (RFC 1035: 63 bytes); names of containers and aliases are looked up by DNS.
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})")
_IFACE = re.compile(r"eth[0-9]{1,2}")
MAX_INTERFACES = 100  # a container's interfaces are eth0 to eth99 (_IFACE)
_ID = re.compile(r"[0-9a-f]{64}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one message (and ``fds``) as one packet."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise NetworkError(f"keeper message too large ({len(data)} bytes)")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message and the fds that came with it; None at end of file. A packet that is too
    large, carries too many fds or is not one JSON object raises NetworkError (its fds closed)."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE + 1, MAX_FDS)
    try:
        if not data and not fds:
            return None
        if len(data) > MAX_MESSAGE or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise NetworkError("keeper message too large or with too many fds")
        try:
            message = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise NetworkError("keeper message is not JSON") from None
        if not isinstance(message, dict):
            raise NetworkError("keeper message is not a JSON object")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return message, fds


def check_name(name: object, what: str) -> str:
    """``name`` if it may be looked up by DNS (a container's name or alias); NetworkSpecError
    otherwise."""
    from ..errors import NetworkSpecError

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NetworkSpecError(
            f"{what} {name!r} cannot be looked up by name on a network: use 1 to 63 letters, "
            "digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


@attrs.frozen
class AttachRequest:
    """An attach request, checked."""

    id: str
    name: str
    aliases: list[str]
    iface: str
    egress: ResolvedEgress
    denied: list[ipaddress.IPv4Network]


def check_attach(message: dict[str, Any]) -> AttachRequest:
    """The attach request in ``message``; NetworkError (EgressError for the policy) if it is
    malformed."""
    if set(message) != {"op", "id", "name", "aliases", "iface", "egress", "denied"}:
        raise NetworkError(f"malformed attach request: keys {sorted(message)}")
    container_id = message["id"]
    if not isinstance(container_id, str) or not _ID.fullmatch(container_id):
        raise NetworkError(f"malformed attach request: container id {container_id!r}")
    aliases = message["aliases"]
    if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
        raise NetworkError(f"malformed attach request: at most {MAX_ALIASES} aliases")
    iface = message["iface"]
    if not isinstance(iface, str) or not _IFACE.fullmatch(iface):
        raise NetworkError(f"malformed attach request: interface {iface!r}")
    return AttachRequest(
        id=container_id,
        name=check_name(message["name"], "container name"),
        aliases=[check_name(a, "alias") for a in aliases],
        iface=iface,
        egress=ResolvedEgress.from_json(message["egress"]),
        denied=denied_from_json(message["denied"]),
    )


@attrs.frozen
class EgressRequest:
    """An egress request, checked."""

    egress: ResolvedEgress
    denied: list[ipaddress.IPv4Network]


def check_egress(message: dict[str, Any]) -> EgressRequest:
    """The egress request in ``message``; NetworkError (EgressError for the policy) if it is
    malformed."""
    if set(message) != {"op", "egress", "denied"}:
        raise NetworkError(f"malformed egress request: keys {sorted(message)}")
    return EgressRequest(
        egress=ResolvedEgress.from_json(message["egress"]),
        denied=denied_from_json(message["denied"]),
    )


def check_attachment(message: dict[str, Any]) -> dict[str, Any]:
    """The keeper's answer to an attach: the interface's configuration, checked (the init's
    ``setup.net``); NetworkError naming the keeper's refusal otherwise."""
    if "error" in message:
        raise NetworkError(f"the network refused the container: {message['error']}")
    expected = {"iface": str, "address": str, "prefix": int, "gateway": str, "mtu": int}
    if set(message) != set(expected) or not all(
        isinstance(message[k], t) and not isinstance(message[k], bool) for k, t in expected.items()
    ):
        raise NetworkError(f"malformed answer from the network keeper: {message!r}")
    try:
        ipaddress.IPv4Address(message["address"])
        ipaddress.IPv4Address(message["gateway"])
    except ValueError:
        raise NetworkError(f"malformed address from the network keeper: {message!r}") from None
    if not 0 < message["prefix"] <= 30 or not 1280 <= message["mtu"] <= 65535:
        raise NetworkError(f"malformed answer from the network keeper: {message!r}")
    return message


def check_listing(message: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The keeper's answer to a list: its containers by id, checked; NetworkError otherwise."""
    entries = message.get("containers")
    if set(message) != {"containers"} or not isinstance(entries, dict):
        raise NetworkError(f"malformed list from the network keeper: {message!r}")
    for container_id, entry in entries.items():
        if (
            not _ID.fullmatch(container_id)
            or not isinstance(entry, dict)
            or set(entry) != {"Name", "IPv4Address", "MacAddress"}
            or not all(isinstance(value, str) for value in entry.values())
            or not _NAME.fullmatch(entry["Name"])
            or not _MAC.fullmatch(entry["MacAddress"])
        ):
            raise NetworkError(f"malformed list from the network keeper: {message!r}")
        try:
            ipaddress.IPv4Interface(entry["IPv4Address"])
        except ValueError:
            raise NetworkError(f"malformed list from the network keeper: {message!r}") from None
        if "/" not in entry["IPv4Address"]:
            raise NetworkError(f"malformed list from the network keeper: {message!r}")
    return entries
