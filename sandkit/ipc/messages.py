"""One attrs class per message type of docs/protocol.md.

Requests go from the host to the init; replies and events come back. Each class knows its wire
name (``TYPE``) and how many file descriptors travel with it; the codec does the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

# A path, argv or env entry may be text or raw bytes: Linux names are bytes, and the init takes both.
StrOrBytes = str | bytes


@attrs.frozen
class Request:
    """A message from the host to the init; ``id`` pairs it with its replies."""

    TYPE: ClassVar[str]
    id: int

    def fd_count(self) -> int:
        """How many fds travel with this request, in order."""
        return 0


@attrs.frozen
class Interface:
    """An IPv4 interface the init configures in the container's network namespace (a veth end
    the host moved there): MTU, ``address``/``prefix``, up, and a default route through
    ``gateway`` (none when absent)."""

    iface: str
    address: str
    prefix: int
    gateway: str | None = None
    mtu: int | None = None


@attrs.frozen
class File:
    """A file the init writes into the container's root before anything runs (its /etc/hosts,
    /etc/resolv.conf), owned by the container's root, replacing what the image has there."""

    path: str
    data: bytes
    mode: int = 0o644


@attrs.frozen
class Setup(Request):
    """The one message that tells a fresh init how to build the container (id is always 0)."""

    TYPE: ClassVar[str] = "setup"
    scratch: str
    rootfs: dict[str, Any]
    hostname: str
    mounts: tuple[dict[str, Any], ...] = ()
    masked: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    rootless: bool = False
    scratch_size: int = 0
    scratch_inodes: int = 0
    loopback: bool = False
    # The writable layer is this host directory (upper/ and work/ inside; its fd comes with this
    # message, to check it by) instead of the scratch tmpfs: it outlives the container
    # (persist=True). "": none.
    layer: str = ""
    lifetime_ms: int = 0
    # The container's capabilities and seccomp profile: the init applies them to itself at the
    # end of set-up (or at the first exec, see docs/protocol.md), and every process inherits them.
    caps: int | None = None
    seccomp: bytes | None = None
    # The container's interface on a sandkit network, and files such as its /etc/hosts.
    net: Interface | None = None
    files: tuple[File, ...] = ()
    id: int = 0


@attrs.frozen
class Exec(Request):
    """Start a process in the container: ``argv`` with ``env`` (``KEY=VALUE`` entries) in ``cwd`` as
    ``user``. ``stdio`` says where its standard streams go (fds sent with the request, a pty the
    init makes, or captured by the init and sent back with the exit)."""

    TYPE: ClassVar[str] = "exec"
    argv: tuple[StrOrBytes, ...]
    env: tuple[StrOrBytes, ...]
    cwd: str = "/"
    user: str | None = None
    # "fds": stdin, stdout, stderr come with the request; "pty": the init makes a terminal;
    # "capture": the init collects the output and sends it with the exit event.
    stdio: str = "fds"
    input: bytes | None = None  # capture only: what stdin reads
    limit: int | None = None  # capture only: bytes kept per stream
    rows: int = 24
    cols: int = 80
    caps: int | None = None
    nnp: bool = True
    seccomp: bytes | None = None
    seccomp_shared: bool = False
    rlimits: tuple[tuple[int, int, int], ...] = ()
    cgroups: int = 0

    STDIO: ClassVar[tuple[str, ...]] = ("fds", "pty", "capture")

    @property
    def pty(self) -> bool:
        """True when the init gives the process a terminal (its master comes back with
        `Started`)."""
        return self.stdio == "pty"

    def fd_count(self) -> int:
        return (3 if self.stdio == "fds" else 0) + self.cgroups


@attrs.frozen
class Signal(Request):
    """Send ``sig`` to the process of exec ``target``, or with ``tree`` to every process it started
    too."""

    TYPE: ClassVar[str] = "signal"
    target: int
    sig: int
    tree: bool = False


@attrs.frozen
class Open(Request):
    """Open ``path`` inside the container: ``mode`` is ``"r"``, ``"w"`` (create with ``perm``, or
    truncate), ``"a"`` or ``"dir"``. Only regular files and directories; the fd comes back with
    `Opened`."""

    TYPE: ClassVar[str] = "open"
    path: str
    mode: (
        str  # "r", "w", "a", "dir", or "upper": the writable layer's upper directory (path unused)
    )
    perm: int = 0o644


@attrs.frozen
class Connect(Request):
    """A socket connected to 127.0.0.1:``port`` inside the container, for a published port."""

    TYPE: ClassVar[str] = "connect"
    proto: str  # "tcp" or "udp"
    port: int


@attrs.frozen
class Netif(Request):
    """Configure one more interface of a running container (one more network, connected to it)."""

    TYPE: ClassVar[str] = "netif"
    net: Interface


@attrs.frozen
class Hostname(Request):
    """Set the container's host name (a spare container gets its own this way)."""

    TYPE: ClassVar[str] = "hostname"
    name: str


@attrs.frozen
class Ping(Request):
    """Ask for a `Pong`: the round trip to the init and back."""

    TYPE: ClassVar[str] = "ping"


@attrs.frozen
class Reply:
    """A message from the init to the host, for the request with the same ``id``."""

    TYPE: ClassVar[str]
    FDS: ClassVar[int] = 0
    id: int


@attrs.frozen
class Ready(Reply):
    """The init built the container and serves requests; ``v`` is its protocol version."""

    TYPE: ClassVar[str] = "ready"
    v: int = 0
    id: int = 0


@attrs.frozen
class Started(Reply):
    """An exec is running. For a pty exec, the pty master comes with it (see `Connection`)."""

    TYPE: ClassVar[str] = "started"
    pid: int = 0


@attrs.frozen
class Exit(Reply):
    """An exec's process ended: either ``code`` or ``signal`` is set."""

    TYPE: ClassVar[str] = "exit"
    code: int | None = None
    signal: int | None = None
    core: bool = False
    # A captured exec's output that no `Output` event carried, and whether any was dropped.
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


@attrs.frozen
class Output(Reply):
    """A chunk of a captured exec's output, sent while it runs when there is much of it."""

    TYPE: ClassVar[str] = "output"
    fd: int = 1  # 1 stdout, 2 stderr
    data: bytes = b""


@attrs.frozen
class Opened(Reply):
    """The file asked for by an `Open` is open: its fd comes with this reply."""

    TYPE: ClassVar[str] = "opened"
    FDS: ClassVar[int] = 1


@attrs.frozen
class Connected(Reply):
    """The socket a `Connect` asked for comes with it."""

    TYPE: ClassVar[str] = "connected"
    FDS: ClassVar[int] = 1


@attrs.frozen
class Pong(Reply):
    """The answer to a `Ping`."""

    TYPE: ClassVar[str] = "pong"


@attrs.frozen
class Ok(Reply):
    """A request that needs no other answer (`Signal`, `Hostname`, `Netif`) was done."""

    TYPE: ClassVar[str] = "ok"


@attrs.frozen
class Error(Reply):
    """A request failed: ``errno`` and ``msg`` say why, and for an exec ``kind`` says which step
    (``notfound``, ``noexec``, ``user``, ``cwd``...). With id 0 it concerns the whole container."""

    TYPE: ClassVar[str] = "error"
    errno: int = 0
    msg: str = ""
    kind: str = ""


REQUEST_TYPES: dict[str, type[Request]] = {
    cls.TYPE: cls for cls in (Setup, Exec, Signal, Open, Connect, Netif, Hostname, Ping)
}
REPLY_TYPES: dict[str, type[Reply]] = {
    cls.TYPE: cls for cls in (Ready, Started, Exit, Output, Opened, Connected, Pong, Ok, Error)
}
