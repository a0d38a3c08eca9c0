"""The keeper of one network: ``python -m sandkit.net.keeper SPEC``, started by `client`.

It makes the network's namespace N (rootless: inside a user namespace U_N of its own, where it
is root), with the bridge, iptables rules and resolver of the network, starts the uplink for the
outbound path (not for an internal network), and serves the hosts' connections: each container's
host side holds one for the container's life, attaches the container through it, and closing it
detaches. When no connection is left the keeper takes the network's lock, makes sure nobody
connected meanwhile, removes its socket and exits: N, and everything in it, vanish with it.

The keeper answers only processes of its own user: its socket is in the private $SANDKIT_HOME.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import queue
import resource
import select
import selectors
import signal
import socket
import sys
import time
from typing import Any, NoReturn

import attrs
import dns.message
import dns.rcode

from .. import idmap
from ..errors import NetworkError
from . import dns as resolver
from . import firewall, netlink, nsutil, portguard, protocol, uplink
from .egress import ResolvedEgress

SOCKET_NAME = "keeper.sock"
PROCESS_NAME = "sandkit-keeper"  # its comm, as ps shows it
LOCK_NAME = "lock"
MAX_CONNECTIONS = 1024  # host connections at once (one per container, plus probes)
# fds the keeper keeps for itself beyond its connections: its sockets, the resolver's TCP
# connections (MAX_DNS_TCP), and the pipes and netlink sockets of an attach.
FD_RESERVE = 96
MAX_DNS_TCP = 32  # resolver TCP connections at once
MAX_DNS_TCP_PER_CLIENT = 4  # of which one container may hold (the others' stay free)
DNS_TCP_TIMEOUT = 5.0
SELECT_TICK = 1.0
LOCK_RETRY = 0.01  # while idle and the lock is taken
UPLINK_START_TIMEOUT = 10.0


@attrs.frozen
class KeeperSpec:
    """What the host tells a new keeper (JSON on its command line)."""

    name: str
    directory: str
    subnet: str
    gateway: str
    internal: bool
    upstream: list[str]
    uplink: str | None  # the uplink program's path (`uplink.find_uplink`); None: internal
    rootless: bool
    uid: int
    gid: int
    ready_fd: int

    def to_argv(self) -> str:
        """The spec as the keeper's command-line argument."""
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_argv(cls, text: str) -> KeeperSpec:
        """The spec read back from the command-line argument."""
        return cls(**json.loads(text))


class AddressPool:
    """In-memory IPAM: the next free address of the subnet from gateway + 1."""

    def __init__(self, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> None:
        self._subnet = subnet
        self._taken = {gateway}

    def allocate(self) -> ipaddress.IPv4Address:
        """The lowest free address; NetworkError when the subnet is full."""
        for address in self._subnet.hosts():
            if address not in self._taken:
                self._taken.add(address)
                return address
        raise NetworkError(f"network {self._subnet} is full: every address is taken")

    def free(self, address: ipaddress.IPv4Address) -> None:
        """Give ``address`` back (it may go to the next container)."""
        self._taken.discard(address)


@attrs.define
class Attached:
    """One container's interface on the network."""

    container_id: str
    veth: str
    address: ipaddress.IPv4Address
    names: list[str]


@attrs.define(eq=False)
class HostConnection:
    """One host connection: a container's host side, or a probe until it says hello."""

    sock: socket.socket
    member: bool = False
    attached: list[Attached] = attrs.field(factory=list)


@attrs.define(eq=False)
class DnsTcpConnection:
    """One resolver client over TCP: what it sent so far, and when it is given up."""

    sock: socket.socket
    client: str  # the container's address
    deadline: float
    buffer: bytearray = attrs.field(factory=bytearray)


class Keeper:
    """The running keeper: its namespace is made; `serve` runs until the last container goes."""

    def __init__(self, spec: KeeperSpec) -> None:
        self.spec = spec
        self.subnet = ipaddress.IPv4Network(spec.subnet)
        self.gateway = ipaddress.IPv4Address(spec.gateway)
        self.pool = AddressPool(self.subnet, self.gateway)
        self.names = resolver.Names()
        # The egress policy of each attached container, by address: the resolver follows it.
        self.policies: dict[ipaddress.IPv4Address, ResolvedEgress] = {}
        self.dir_fd = os.open(spec.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.lock_fd = os.open(
            LOCK_NAME,
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
            dir_fd=self.dir_fd,
        )
        self.selector = selectors.DefaultSelector()
        self.connections: set[HostConnection] = set()
        _raise_fd_limit()
        self.dns_tcp: set[DnsTcpConnection] = set()
        # the address slots whose port rules are loaded (they stay: see portguard)
        self.guarded: set[ipaddress.IPv4Address] = set()
        self.egress = firewall.EgressTables(self._xtables_lock())
        # addresses whose veths a thread deleted (see _release), freed by the loop
        self.released: queue.SimpleQueue[ipaddress.IPv4Address] = queue.SimpleQueue()
        # The keeper's end of the pipe whose end of file makes the launcher kill the uplink.
        self.uplink_watch: int | None = None
        self.forwarder = resolver.Forwarder(None, [])
        self.listener: socket.socket | None = None

    # -- set-up -----------------------------------------------------------------------------

    def set_up(self) -> None:
        """Leave the host's namespaces for N (and U_N), and build the network there."""
        spec = self.spec
        upstream = None
        if not spec.internal and spec.upstream:
            # Opened here, in the host's namespace: it reaches the host's resolvers, even one on
            # the host's loopback, which no container can.
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.forwarder = resolver.Forwarder(upstream, spec.upstream)
        launcher = self._fork_uplink_launcher() if spec.uplink else None
        if launcher is not None:
            self.uplink_watch = launcher[1]
        try:
            if spec.rootless:
                self._enter_user_namespace()
            else:
                nsutil.unshare(nsutil.CLONE_NEWNET)
            # (the MAC of the gateway's address: no container has it, see portguard.mac_for)
            netlink.create_bridge(
                self.gateway, self.subnet.prefixlen, portguard.mac_for(self.gateway)
            )
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
            firewall.install_base(
                self.subnet,
                self.gateway,
                uplink=launcher is not None,
                lock_file=self._xtables_lock(),
            )
        except BaseException:
            if launcher is not None:
                self.stop_uplink()  # the launcher exits without starting the uplink
                os.waitpid(launcher[0], 0)
            raise
        if launcher is not None:
            self._start_uplink(*launcher)
        self._open_resolver()
        self._listen()

    def _xtables_lock(self) -> str:
        return os.path.join(self.spec.directory, "xtables.lock")

    def _enter_user_namespace(self) -> None:
        """U_N and N. U_N maps the user's subordinate range when it has one (idmap.py), so that
        the containers nested in it map the range too; else the user's one id."""
        mapping = idmap.rootless_mapping()
        if mapping is not None:
            flags = nsutil.CLONE_NEWUSER | nsutil.CLONE_NEWNET
            idmap.unshare_mapped(mapping, functools.partial(nsutil.unshare, flags))
            return
        nsutil.unshare(nsutil.CLONE_NEWUSER | nsutil.CLONE_NEWNET)
        nsutil.become_root_of_new_userns(self.spec.uid, self.spec.gid)

    def _fork_uplink_launcher(self) -> tuple[int, int]:
        """A child left in the host's namespaces (the launcher) that waits for N, starts the
        uplink on it, and kills it when the keeper ends, however it ends (its end of a pipe the
        keeper holds reads end of file). Returns (launcher pid, the keeper's end of the pipe).

        A watchdog rather than PR_SET_PDEATHSIG on the uplink: pasta sandboxes itself in a user
        namespace of its own, and changing credentials so clears the parent-death signal (seen
        here: pastas outlived their keeper); given N as an fd, pasta does not notice N's end.
        """
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        keeper_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 127
            try:
                os.close(go_write)
                status = self._launch_and_watch_uplink(keeper_pid, go_read)
            except BaseException as exc:  # noqa: BLE001 - a forked child must never return
                with contextlib.suppress(OSError):
                    os.write(2, f"sandkit keeper: cannot start the uplink: {exc}\n".encode())
            os._exit(status)
        os.close(go_read)
        return pid, go_write

    def _launch_and_watch_uplink(self, keeper_pid: int, go: int) -> int:
        """In the launcher: start the uplink once the keeper says so; return its exit status when it
        ends by itself, or kill it when the keeper ends (0)."""
        if os.read(go, 1) != b"g":
            return 1  # the keeper failed before N was ready
        command = self._uplink_command(keeper_pid, go)
        uplink_pid = os.fork()
        if uplink_pid == 0:
            os.set_inheritable(go, True)  # slirp4netns's --exit-fd
            for number in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(number, signal.SIG_DFL)  # as Python found them, for the uplink
            try:
                os.execv(command[0], command)
            finally:
                os._exit(127)
        uplink_fd = os.pidfd_open(uplink_pid)
        ready, _, _ = select.select([go, uplink_fd], [], [])
        if go in ready:  # the keeper ended (or stopped the uplink): end of file
            signal.pidfd_send_signal(uplink_fd, signal.SIGKILL)
        _, status = os.waitpid(uplink_pid, 0)
        return 0 if go in ready else os.waitstatus_to_exitcode(status) or 1

    def _uplink_command(self, keeper_pid: int, keeper_watch: int) -> list[str]:
        """In the launcher: the uplink's command line, on inheritable fds of N (and U_N).
        slirp4netns also watches ``keeper_watch`` (the launcher's end of the keeper's pipe)
        itself: it then ends with the keeper even when the launcher was killed first."""
        # The program opens them again as /proc/self/fd/N: as root, its dropped capabilities
        # would not let it open /proc/<keeper>/ns/net itself.
        program = self.spec.uplink
        assert program is not None
        netns = os.open(f"/proc/{keeper_pid}/ns/net", os.O_RDONLY)
        os.set_inheritable(netns, True)
        userns = None
        if self.spec.rootless:
            userns = os.open(f"/proc/{keeper_pid}/ns/user", os.O_RDONLY)
            os.set_inheritable(userns, True)
        if uplink.is_slirp4netns(program):
            if userns is not None:
                # Root of U_N (still in the host's network namespace): its sandbox may then
                # make its mount namespace, and that one cannot reach the host's mounts.
                nsutil.setns(userns, nsutil.CLONE_NEWUSER)
            else:
                nsutil.private_mount_namespace()
        return uplink.uplink_command(
            program,
            rootless=self.spec.rootless,
            netns_fd=netns,
            userns_fd=userns,
            exit_fd=keeper_watch,
        )

    def _start_uplink(self, launcher: int, go: int) -> None:
        """Let the launcher start the uplink, and wait until its interface in N has its address.
        ``go`` stays open for the keeper's life: its end tells the launcher to kill the uplink."""
        os.write(go, b"g")
        self.uplink_watch = go
        deadline = time.monotonic() + UPLINK_START_TIMEOUT
        while not netlink.has_address(firewall.UPLINK_NAME):
            if os.waitpid(launcher, os.WNOHANG) != (0, 0):
                raise NetworkError(
                    "the uplink (slirp4netns or pasta) failed to start (its message follows)"
                )
            if time.monotonic() > deadline:
                raise NetworkError(
                    f"the uplink (slirp4netns or pasta) did not set up its interface in "
                    f"{UPLINK_START_TIMEOUT} s"
                )
            time.sleep(0.001)

    def _open_resolver(self) -> None:
        address = (str(self.gateway), resolver.DNS_PORT)
        self.dns_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.dns_udp.bind(address)
        self.dns_tcp_listener = socket.socket(
            socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC
        )
        self.dns_tcp_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.dns_tcp_listener.bind(address)
        self.dns_tcp_listener.listen(MAX_DNS_TCP)
        for sock in (self.dns_udp, self.dns_tcp_listener):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        if self.forwarder.socket is not None:
            self.forwarder.socket.setblocking(False)
            self.selector.register(self.forwarder.socket, selectors.EVENT_READ)

    def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME, dir_fd=self.dir_fd)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        # Through the directory's fd: a deep $SANDKIT_HOME makes paths longer than sun_path.
        self.listener.bind(f"/proc/self/fd/{self.dir_fd}/{SOCKET_NAME}")
        # Connecting takes write permission on the socket: only our user, whatever the umask
        # we inherited and the modes of the directories above. Before listen: until then
        # nobody can connect anyway.
        os.chmod(SOCKET_NAME, 0o600, dir_fd=self.dir_fd, follow_symlinks=False)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)

    # -- serving ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until no connection is left (checked under the network's lock), then return."""
        while True:
            tick = SELECT_TICK
            if not self.connections:
                if self._may_exit():
                    return
                tick = LOCK_RETRY  # whoever holds the lock is probably joining: serve them
            ready = self.selector.select(tick)
            # Before the requests: an address whose port went meanwhile goes to the next
            # container, whose slot's port rules are then loaded already (see portguard).
            self._free_released()
            for key, _ in ready:
                self._dispatch(key.fileobj, key.data)
            self._expire_dns_tcp()
            self.forwarder.expire()

    def _may_exit(self) -> bool:
        """True when the lock is free and nobody connected meanwhile: the socket is then gone
        (whoever comes next starts a new keeper), and the lock is held until the process exits,
        after N is gone. Never waits for the lock: a host holding it waits for our answer."""
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._accept_all()
        if self.connections:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            return False
        # (gone already if the network was removed meanwhile: a keeper without members is
        # no reason to keep a network, see store.keeper_running)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME, dir_fd=self.dir_fd)
        return True

    def _dispatch(self, fileobj: Any, data: Any) -> None:
        if fileobj is self.listener:
            self._accept_all()
        elif isinstance(data, HostConnection):
            self._serve_host(data)
        elif fileobj is self.dns_udp:
            self._serve_dns_udp()
        elif fileobj is self.dns_tcp_listener:
            self._accept_dns_tcp()
        elif isinstance(data, DnsTcpConnection):
            self._serve_dns_tcp(data)
        elif fileobj is self.forwarder.socket:
            self.forwarder.receive()

    def _accept_all(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # none waiting; or out of fds, which the limit below should prevent
                return
            if len(self.connections) >= _connection_limit():
                self._refuse(sock)
                continue
            connection = HostConnection(sock)
            self.connections.add(connection)
            self.selector.register(sock, selectors.EVENT_READ, connection)

    def _refuse(self, sock: socket.socket) -> None:
        """Tell a connection past the limit why it is refused (it never blocks: a fresh
        connection's buffer is empty), and close it."""
        with contextlib.suppress(OSError), sock:
            sock.setblocking(False)
            protocol.send(
                sock,
                {
                    "error": f"the network has {len(self.connections)} containers and probes, "
                    "the limit of its keeper (its open-files limit, `ulimit -n`, less "
                    f"{FD_RESERVE}; at most {MAX_CONNECTIONS}): raise that limit for the "
                    "process that starts the network's first container, or use another network"
                },
            )

    def _serve_host(self, connection: HostConnection) -> None:
        try:
            received = protocol.receive(connection.sock)
        except (OSError, NetworkError):
            received = None  # a broken or malformed peer is dropped
        if received is None:
            self._drop(connection)
            return
        message, fds = received
        try:
            reply, reply_fds = self._handle(connection, message, fds)
        except NetworkError as exc:
            reply, reply_fds = {"error": str(exc)}, []
        except Exception as exc:  # noqa: BLE001 - the keeper serves other containers: it stays
            reply, reply_fds = {"error": f"internal error in the network keeper: {exc!r}"}, []
        finally:
            for fd in fds:
                os.close(fd)
        try:
            protocol.send(connection.sock, reply, reply_fds)
        except OSError:
            self._drop(connection)
        finally:
            for fd in reply_fds:
                os.close(fd)

    def _handle(
        self, connection: HostConnection, message: dict[str, Any], fds: list[int]
    ) -> tuple[dict[str, Any], list[int]]:
        op = message.get("op")
        if op == "hello" and message == {"op": "hello"} and not fds and not connection.member:
            connection.member = True
            if self.spec.rootless:
                return {"ok": True}, [os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)]
            return {"ok": True}, []
        if op == "status" and message == {"op": "status"} and not fds and not connection.member:
            # A probe (store.keeper_running): is anyone still on the network? Containers that
            # stopped just before the probe came may not have been read yet: drop them first.
            self._drop_closed_members()
            return {"members": sum(c.member for c in self.connections)}, []
        if op == "attach" and connection.member and len(fds) == 1:
            return self._attach(connection, protocol.check_attach(message), fds[0]), []
        if op == "list" and message == {"op": "list"} and not fds and not connection.member:
            # A probe (`sandkit network inspect`): each attached container by id, with its host
            # name, address and MAC, as Docker's "Containers" of a network; at most
            # MAX_CONNECTIONS short entries: well within protocol.MAX_MESSAGE.
            listing = {
                attached.container_id: {
                    "Name": attached.names[0],
                    "IPv4Address": f"{attached.address}/{self.subnet.prefixlen}",
                    "MacAddress": portguard.mac_for(attached.address),
                }
                for c in self.connections
                for attached in c.attached
            }
            return {"containers": listing}, []
        if op == "egress" and connection.member and not fds:
            return self._set_egress(connection, protocol.check_egress(message)), []
        raise NetworkError(f"unexpected request {op!r} (with {len(fds)} fds)")

    def _attach(
        self, connection: HostConnection, request: protocol.AttachRequest, netns: int
    ) -> dict[str, Any]:
        address = self.pool.allocate()
        veth = portguard.veth_for(address)
        try:
            if address not in self.guarded:
                # Before the slot's first port exists: no frame of it passes unchecked.
                portguard.guard(address)
                self.guarded.add(address)
            # The policy before the port too (what a slot's last container left is replaced).
            self.egress.apply(address, request.egress, request.denied)
            netlink.add_veth(veth, request.iface, netns, portguard.mac_for(address))
        except BaseException:
            self.egress.release(address)
            self.pool.free(address)
            raise
        names = [request.name, *request.aliases]
        self.names.add(names, address)
        self.policies[address] = request.egress
        connection.attached.append(Attached(request.id, veth, address, names))
        return {
            "iface": request.iface,
            "address": str(address),
            "prefix": self.subnet.prefixlen,
            "gateway": str(self.gateway),
            "mtu": netlink.VETH_MTU,
        }

    def _set_egress(
        self, connection: HostConnection, request: protocol.EgressRequest
    ) -> dict[str, Any]:
        """Swap the egress policy of what ``connection`` attached (its container): its rules
        in one transaction (its own chain made, replaced or removed for the shared default, see
        `firewall.EgressTables`), then the resolver's view of it."""
        if not connection.attached:
            raise NetworkError("no container is attached through this connection")
        for attached in connection.attached:
            self.egress.apply(attached.address, request.egress, request.denied)
            self.policies[attached.address] = request.egress
        return {"ok": True}

    def _drop_closed_members(self) -> None:
        """Drop the member connections whose host side has closed (EOF waiting to be read)."""
        for connection in [c for c in self.connections if c.member]:
            try:
                if connection.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    self._drop(connection)
            except BlockingIOError:
                continue  # nothing to read: still there
            except OSError:
                self._drop(connection)

    def _drop(self, connection: HostConnection) -> None:
        """A connection closed: detach whatever it attached."""
        self.selector.unregister(connection.sock)
        connection.sock.close()
        self.connections.discard(connection)
        for attached in connection.attached:
            self.names.remove(attached.names, attached.address)
            self.policies.pop(attached.address, None)
            # (no rule to remove: the slot's stay for its next container, see EgressTables)
            self.egress.release(attached.address)
            self._release(attached)

    def _release(self, attached: Attached) -> None:
        """Free an address once its veth is gone: a container that ended took its veth with
        its namespace; one still alive has it deleted aside (deleting a veth takes the kernel
        milliseconds the loop would wait), and its address stays taken until then."""
        address = attached.address
        try:
            deleting = netlink.delete_link_aside(attached.veth, lambda: self.released.put(address))
        except (NetworkError, OSError):
            deleting = False
        if not deleting:
            self.pool.free(address)

    def _free_released(self) -> None:
        """Free the addresses whose veths were deleted aside meanwhile."""
        while True:
            try:
                self.pool.free(self.released.get_nowait())
            except queue.Empty:
                return

    # -- the resolver -----------------------------------------------------------------------

    def _answer(self, wire: bytes, sink: resolver.Sink, client: str) -> None:
        """Answer the query in ``wire`` from the container at ``client``: names of the
        network's containers here, others upstream if the container's egress policy allows
        them (see `resolver.may_forward`), REFUSED otherwise."""
        query = resolver.parse_query(wire)
        if query is None:
            return
        reply = resolver.local_answer(query, self.names)
        if reply is not None:
            sink(reply.to_wire())
        elif not resolver.may_forward(query, self._policy_of(client)):
            sink(resolver.error_reply(query, dns.rcode.REFUSED))
        elif not self.forwarder.forward(query, wire, sink, client):
            sink(resolver.error_reply(query, dns.rcode.SERVFAIL))

    def _policy_of(self, client: str) -> ResolvedEgress | None:
        """The egress policy of the container at address ``client`` (its source address,
        which `portguard` keeps it from forging), None for anyone else."""
        with contextlib.suppress(ValueError):
            return self.policies.get(ipaddress.IPv4Address(client))
        return None

    def _serve_dns_udp(self) -> None:
        try:
            wire, client = self.dns_udp.recvfrom(resolver.MAX_QUERY + 1)
        except OSError:
            return

        def reply(answer: bytes) -> None:
            with contextlib.suppress(OSError):
                self.dns_udp.sendto(answer, client)

        self._answer(wire, reply, client[0])

    def _accept_dns_tcp(self) -> None:
        try:
            sock, client = self.dns_tcp_listener.accept()
        except OSError:
            return
        held = sum(1 for c in self.dns_tcp if c.client == client[0])
        if len(self.dns_tcp) >= MAX_DNS_TCP or held >= MAX_DNS_TCP_PER_CLIENT:
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * (resolver.MAX_REPLY + 2))
        connection = DnsTcpConnection(sock, client[0], time.monotonic() + DNS_TCP_TIMEOUT)
        self.dns_tcp.add(connection)
        self.selector.register(sock, selectors.EVENT_READ, connection)

    def _serve_dns_tcp(self, connection: DnsTcpConnection) -> None:
        try:
            data = connection.sock.recv(resolver.MAX_QUERY + 2 - len(connection.buffer))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_dns_tcp(connection)
            return
        connection.buffer += data
        if len(connection.buffer) < 2:
            return
        length = int.from_bytes(connection.buffer[:2], "big")
        if length > resolver.MAX_QUERY:
            self._close_dns_tcp(connection)
            return
        if len(connection.buffer) < 2 + length:
            return
        wire = bytes(connection.buffer[2 : 2 + length])
        # One query per connection (RFC 7766 allows closing after the answer); reading stops.
        self.selector.unregister(connection.sock)

        def reply(answer: bytes) -> None:
            # Never blocks the keeper: the send buffer holds a whole answer (at most 64 KiB),
            # whatever the client's window, and what does not fit is dropped with the connection.
            with contextlib.suppress(OSError):
                connection.sock.send(len(answer).to_bytes(2, "big") + answer)
            self._close_dns_tcp(connection)

        self._answer(wire, reply, connection.client)

    def _close_dns_tcp(self, connection: DnsTcpConnection) -> None:
        if connection not in self.dns_tcp:
            return
        self.dns_tcp.discard(connection)
        if self.selector.get_map().get(connection.sock) is not None:
            self.selector.unregister(connection.sock)
        connection.sock.close()

    def _expire_dns_tcp(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.dns_tcp if c.deadline < now]:
            self._close_dns_tcp(connection)

    # -- the end ----------------------------------------------------------------------------

    def stop_uplink(self) -> None:
        """Have the launcher kill the uplink now (it holds N open: it would not notice N's end).
        The keeper's exit does the same, however it exits."""
        if self.uplink_watch is not None:
            os.close(self.uplink_watch)
            self.uplink_watch = None


def _raise_fd_limit() -> None:
    """Open-files limit up to the hard limit: the host's soft limit is often 1024, less than
    MAX_CONNECTIONS and the keeper's own fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _connection_limit() -> int:
    """How many host connections the keeper takes now: MAX_CONNECTIONS, or fewer if its
    open-files limit leaves no room for them and FD_RESERVE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft - FD_RESERVE))


def run(spec: KeeperSpec) -> NoReturn:
    """In the keeper's own process (a session of its own): set up, say ready on the ready pipe,
    serve until the last container goes, exit."""
    nsutil.set_process_name(PROCESS_NAME)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the host process
    keeper = Keeper(spec)
    try:
        keeper.set_up()
    except BaseException as exc:  # noqa: BLE001 - reported to the host through the ready pipe
        keeper.stop_uplink()
        message = str(exc) if isinstance(exc, NetworkError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            os.write(spec.ready_fd, ("error: " + message).encode()[: protocol.MAX_MESSAGE])
        os._exit(1)
    try:
        os.write(spec.ready_fd, b"ok")
    except OSError:  # the host gave up waiting: nobody will connect
        keeper.stop_uplink()
        os._exit(1)
    os.close(spec.ready_fd)
    try:
        keeper.serve()
    finally:
        keeper.stop_uplink()
        os._exit(0)


def main(argv: list[str]) -> None:
    """``python -m sandkit.net.keeper SPEC``: daemonize (the caller reaps our first process at
    once), then `run`."""
    spec = KeeperSpec.from_argv(argv[1])
    os.set_inheritable(spec.ready_fd, False)
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    run(spec)


if __name__ == "__main__":
    main(sys.argv)
