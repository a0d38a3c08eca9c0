"""The host side of a network: join its keeper (starting it if none runs), attach containers.

One `KeeperConnection` per container, held for the container's life: closing it (or the death
of this process) detaches the container, and the last one to go ends the keeper.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
import re
import secrets
import select
import signal
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import attrs

from ..errors import NetworkError, NetworkUnavailableError
from . import egress, keeper, pasta, protocol, uplink
from .keeper import SOCKET_NAME, KeeperSpec
from .store import NetworkRecord, network_lock

# How long a new keeper may take to build its namespace, rules and uplink and say it is ready.
KEEPER_START_TIMEOUT = 10.0
# Where the host's resolvers are read from (the keeper forwards to them).
RESOLV_CONF = Path("/etc/resolv.conf")
MAX_UPSTREAM = 3  # as the C library's resolver: MAXNS
_NAMESERVER = re.compile(rb"^\s*nameserver\s+([0-9.]+)\s*(?:#.*)?$", re.MULTILINE)


LIST_TIMEOUT = 5.0  # seconds a `sandkit network inspect` waits for a keeper's listing
# Seconds the host waits for a keeper's answer to a hello, attach or egress request. A keeper
# answers at once, but one request at a time: the slowest, an attach, runs two *tables-restore
# (each given up after restore.TIMEOUT s). A keeper silent for longer is stopped or wedged,
# and a container start must fail rather than hang on it.
REPLY_TIMEOUT = 120.0


def host_resolvers(path: Path | None = None) -> list[str]:
    """The IPv4 resolvers of the host's resolv.conf (at most 3; an unreadable file: none)."""
    try:
        with open(path or RESOLV_CONF, "rb") as f:
            text = f.read(64 * 1024)
    except OSError:
        return []
    found = [m.decode() for m in _NAMESERVER.findall(text)]
    return found[:MAX_UPSTREAM]


def _keeper_silent(sock: socket.socket) -> NetworkError:
    """The error for a keeper that left a request on ``sock`` unanswered: it names the
    keeper's pid, the process to end."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = struct.unpack("3i", creds)[0]
    return NetworkError(
        f"the network's keeper (pid {pid}) did not answer within {REPLY_TIMEOUT:g} s "
        "(sandkit.net.client.REPLY_TIMEOUT): it is stopped or wedged. End it "
        f"(`kill {pid}`; the containers on the network lose their interfaces on it) and "
        "restart them"
    )


def _keeper_gone(why: str | None) -> NetworkError:
    return NetworkError(
        f"the network's keeper ended unexpectedly ({why}): the containers on the network have "
        "lost their interfaces on it; restart them to start a new keeper"
    )


class KeeperConnection:
    """A container's membership of a network (one connection to its keeper)."""

    def __init__(self, sock: socket.socket, userns_fd: int | None) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        # Set once a request went unanswered: a late answer would be taken for the next one's.
        self._silent: NetworkError | None = None
        self.userns_fd = userns_fd  # rootless: the keeper's user namespace, to nest under

    def attach(
        self,
        netns_fd: int,
        name: str,
        aliases: list[str],
        iface: str = "eth0",
        policy: egress.ResolvedEgress | None = None,
        denied: list[ipaddress.IPv4Network] | None = None,
        container_id: str | None = None,
    ) -> dict[str, Any]:
        """Give the container whose network namespace is ``netns_fd`` an interface on the
        network, with the egress ``policy`` (None: "all") and the ``denied`` destinations
        (None: `egress.always_denied`, read here in the host's namespace); returns the
        interface's configuration for the init (``setup.net``). ``container_id`` (64 hex
        digits) keys the container in the keeper's list; None: a fresh one (a namespace
        attached outside any container)."""
        if container_id is None:
            container_id = secrets.token_hex(32)
        if policy is None:
            policy = egress.ResolvedEgress(allow_all=True)
        if denied is None:
            denied = egress.always_denied()
        request = {
            "op": "attach",
            "id": container_id,
            "name": name,
            "aliases": list(aliases),
            "iface": iface,
            "egress": policy.to_json(),
            "denied": [str(network) for network in denied],
        }
        return protocol.check_attachment(self._exchange(request, [netns_fd]))

    def set_egress(
        self, policy: egress.ResolvedEgress, denied: list[ipaddress.IPv4Network]
    ) -> None:
        """Swap the egress policy of the container attached through this connection (see
        `attach`): at once, in one transaction; the resolver follows it."""
        request = {
            "op": "egress",
            "egress": policy.to_json(),
            "denied": [str(network) for network in denied],
        }
        reply = self._exchange(request)
        if reply != {"ok": True}:
            raise NetworkError(
                f"the network refused the egress policy: {reply.get('error', reply)}"
            )

    def _exchange(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """Send ``request`` and return the keeper's answer: one at a time (a container's
        requests may come from several threads, and each answer must go to its own request),
        within `REPLY_TIMEOUT`."""
        with self._lock:
            if self._silent is not None:
                raise self._silent
            self._sock.settimeout(REPLY_TIMEOUT)
            try:
                protocol.send(self._sock, request, fds)
                received = protocol.receive(self._sock)
            except TimeoutError:
                self._silent = _keeper_silent(self._sock)
                raise self._silent from None
            except OSError as exc:  # a keeper killed: the pipe is broken, or reset
                raise _keeper_gone(exc.strerror) from None
            return self._reply(received)

    def _reply(self, received: tuple[dict[str, Any], list[int]] | None) -> dict[str, Any]:
        if received is None:
            raise _keeper_gone("end of file")
        message, fds = received
        for fd in fds:
            os.close(fd)
        return message

    def close(self) -> None:
        """Leave the network: the keeper detaches everything attached through this connection."""
        if self.userns_fd is not None:
            os.close(self.userns_fd)
            self.userns_fd = None
        self._sock.close()


def join(record: NetworkRecord, home: Path | None = None) -> KeeperConnection:
    """A connection to ``record``'s keeper, started first if none runs. NetworkError when
    none can be had: a keeper that fails to start, dies or does not answer, or a
    $SANDKIT_HOME where the network's files cannot be made (full, read-only)."""
    try:
        return _join(record, home)
    except OSError as exc:
        raise NetworkError(f"cannot join network {record.name!r}: {exc}") from None


def _join(record: NetworkRecord, home: Path | None) -> KeeperConnection:
    rootless = os.geteuid() != 0
    with network_lock(record, home) as directory:
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock = _connect(dir_fd)
            if sock is None:
                _start_keeper(record, directory, rootless)
                sock = _connect(dir_fd)
                if sock is None:
                    raise NetworkError(f"the keeper of network {record.name!r} is not listening")
        finally:
            os.close(dir_fd)
        try:
            sock.settimeout(REPLY_TIMEOUT)
            # Under the lock: a keeper that takes it to exit sees this connection as a member.
            received = _hello(sock)
        except TimeoutError:
            error = _keeper_silent(sock)
            sock.close()
            raise error from None
        except OSError as exc:  # a keeper that ended meanwhile
            sock.close()
            raise _keeper_gone(exc.strerror) from None
        except BaseException:
            sock.close()
            raise
    if received is None:
        sock.close()
        raise NetworkError(f"the keeper of network {record.name!r} closed the connection")
    message, fds = received
    if set(message) == {"error"} and not fds:
        sock.close()
        raise NetworkError(f"the keeper of network {record.name!r} refused: {message['error']}")
    if message != {"ok": True} or len(fds) > (1 if rootless else 0):
        for fd in fds:
            os.close(fd)
        sock.close()
        raise NetworkError(f"unexpected answer from the keeper of {record.name!r}: {message!r}")
    return KeeperConnection(sock, fds[0] if fds else None)


def attached_containers(
    record: NetworkRecord, home: Path | None = None
) -> dict[str, dict[str, str]]:
    """Each container on ``record`` now, by id, as its keeper lists them (`protocol`'s
    "list": Name, IPv4Address, MacAddress); none when no keeper runs. NetworkError when the
    keeper does not answer in time, or answers anything else."""
    directory = record.directory(home)
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = _connect(dir_fd)
    finally:
        os.close(dir_fd)
    if sock is None:
        return {}
    with sock:
        sock.settimeout(LIST_TIMEOUT)
        try:
            protocol.send(sock, {"op": "list"})
            received = protocol.receive(sock)
        except OSError as exc:
            raise NetworkError(f"the keeper of {record.name!r} did not list: {exc}") from None
    if received is None:  # exiting: its last container just left
        return {}
    message, fds = received
    for fd in fds:
        os.close(fd)
    return protocol.check_listing(message)


def _hello(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Say hello and read the answer. A keeper that refuses the connection (it has as many as
    it may) sends why and closes at once: our hello then fails, or the first read reports the
    reset ahead of the answer queued before it; the answer is read all the same."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        protocol.send(sock, {"op": "hello"})
    try:
        return protocol.receive(sock)
    except ConnectionResetError:
        return protocol.receive(sock)


def _connect(dir_fd: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    # Connecting waits too while a stopped keeper's backlog is full.
    sock.settimeout(REPLY_TIMEOUT)
    try:
        # Through the directory's fd: a deep $SANDKIT_HOME makes paths longer than sun_path.
        sock.connect(f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except TimeoutError:
        sock.close()
        raise NetworkError(
            f"the network's keeper did not take a connection within {REPLY_TIMEOUT:g} s: "
            "it is stopped or wedged. End it (`sandkit network inspect` names the network; "
            "its process is called sandkit-keeper) and restart the containers on it"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _start_keeper(record: NetworkRecord, directory: Path, rootless: bool) -> None:
    """Start the network's keeper and wait until it is ready (or say why it is not)."""
    uplink_path = None
    if not record.internal:
        uplink_path = uplink.find_uplink()
        pasta.check_tun(rootless)
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    spec = KeeperSpec(
        name=record.name,
        directory=os.fspath(directory),
        subnet=str(record.subnet),
        gateway=str(record.gateway),
        internal=record.internal,
        upstream=host_resolvers(),
        uplink=uplink_path,
        rootless=rootless,
        uid=os.geteuid(),
        gid=os.getegid(),
        ready_fd=ready_write,
    )
    # The keeper's messages: read here if it fails to start (a file, so that a keeper that
    # writes later never blocks on a full pipe; unlinked, so it goes when the keeper does).
    with tempfile.TemporaryFile(dir=directory) as stderr:
        try:
            _fork_keeper(spec, stderr.fileno())
        finally:
            os.close(ready_write)
        try:
            answer = _read_ready(ready_read)
        finally:
            os.close(ready_read)
        if answer != b"ok":
            stderr.seek(0)
            detail = stderr.read(8192).decode(errors="replace").strip()
            reason = answer.decode(errors="replace").removeprefix("error: ") or (
                f"it did not say it was ready within {KEEPER_START_TIMEOUT:.0f} s"
            )
            raise NetworkError(
                f"the keeper of network {record.name!r} failed to start: {reason}"
                + (f"\n{detail}" if detail else "")
            )


def _fork_keeper(spec: KeeperSpec, stderr_fd: int) -> None:
    """Run the keeper in a grandchild of this process, in a session of its own (nobody's
    zombie: our child exits at once and is reaped here).

    Forked rather than exec'd: no interpreter start (the keeper's code is loaded already), and
    no need for the user to be able to run this process's interpreter from its path. The
    grandchild keeps only the ready pipe and stderr: any other fd (a container's control
    socket) held there would keep that container alive.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                _become_keeper(spec, stderr_fd)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _become_keeper(spec: KeeperSpec, stderr_fd: int) -> NoReturn:
    # Objects inherited from the host process are never collected here: one that owned an fd
    # would close a number the keeper has reused by then.
    gc.freeze()
    # The host program's Python signal handlers (and a wakeup fd, whose number the keeper may
    # reuse) are not the keeper's.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr_fd, 2)
    os.dup2(spec.ready_fd, 3, inheritable=False)
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    keeper.run(attrs.evolve(spec, ready_fd=3))


def _read_ready(fd: int) -> bytes:
    """The keeper's first words on the ready pipe: b"ok", b"error: ...", or b"" (it died or
    timed out)."""
    deadline = time.monotonic() + KEEPER_START_TIMEOUT
    data = b""
    while len(data) < protocol.MAX_MESSAGE:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, protocol.MAX_MESSAGE)
        if not chunk:
            break
        data += chunk
        if data == b"ok":
            break
    return data


__all__ = ["KeeperConnection", "NetworkUnavailableError", "host_resolvers", "join"]
