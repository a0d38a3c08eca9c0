"""The async core of a container: start its init, ask it to run things, tear it down."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import math
import os
import re
import secrets
import signal as signals
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, TypeAlias, Unpack, cast

import anyio
import attrs

from .. import errors
from ..home import sandkit_home, scratch_mountpoint
from ..images.config import ImageConfig, stop_signal
from ..images.image import Image
from ..ipc import (
    Connect,
    Connected,
    Error,
    Exec,
    Exit,
    File,
    Hostname,
    Interface,
    Netif,
    Ok,
    Open,
    Opened,
    Ping,
    Pong,
    Reply,
    Setup,
    Signal,
    Started,
    encode,
)
from ..net import egress as net_egress
from ..net import protocol as net_protocol
from ..net import store as net_store
from ..security import capabilities
from ..security import paths as security_paths
from ..security import seccomp as seccomp_profiles
from ..sessions.results import CodeResult, OutputChunk
from ..sessions.session import AsyncCodeSession, ContainerSessions
from . import environment, etcfiles, health, plan, prespawn, readiness, service, startup
from .cgroups import CgroupStats, Limits, parse_size
from .channel import ControlChannel
from .forward import CONNECT_TIMEOUT, Binding, PortForwarder
from .mounts import Mount, lease_volumes
from .options import ContainerOptions, check_option_names
from .outcomes import (
    CapturedOutput,
    CapturedReplies,
    ExecOutcome,
    communicate,
    exec_failure,
    exec_result,
    file_error,
    finished,
)
from .ports import PortSpec, container_side, parse_ports
from .process import AsyncInput, AsyncOutput, AsyncProcess, set_nonblocking
from .resources import ResourcePlan, Resources
from .results import ExecResult
from .spawn import SpawnedInit

if TYPE_CHECKING:
    from ..images.changes import Change
    from ..net.client import KeeperConnection
    from . import copy
    from .attached import AsyncAttachedContainer

# How long a start waits for a spare container that is being made (20 x 0.2 ms).
# Guards making a container's ContainerSessions, which threads may ask for at once.
_SESSIONS_MADE = threading.Lock()
_SPARE_POLLS = 20
_SPARE_POLL_INTERVAL = 0.0002
# A spare taken this soon after it was made means starts come back to back.
_BACK_TO_BACK = 0.005
# After a timeout kills an exec's tree, how long to wait for its pipes to close before giving up
# on output still held open by something that escaped the kill.
_DRAIN_AFTER_KILL = 2.0
# How long a stop waits for the init to end the container once told to (it kills everything and
# exits at once) before the host SIGKILLs it: stop() returns even if the init cannot answer.
_STOP_GRACE = 5.0
# An exec's input up to this size travels inside its request (a pipe in the container holds it
# whole); more goes through a pipe the host feeds.
_INLINE_INPUT = 16 * 1024

# A captured exec is written once, as a generator that yields (request id, deadline) when it
# needs the next reply for that id, and is sent the reply (None when the deadline passed). Two
# drivers run it: one awaits on the event loop, one blocks a thread of the sync API.
_ExecFlow = Generator[tuple[int, float | None], Reply | None, ExecOutcome]


# What one call may bring into this process with its default arguments (documented in the
# README): an exec keeps this much of each stream, read_file reads a file up to this size.
DEFAULT_MAX_OUTPUT = 16 << 20
DEFAULT_MAX_READ = 64 << 20

# The writable layer is a tmpfs: its pages and its inodes are the host's memory. Without a
# disk_size it gets 1 GiB, or a quarter of RAM on a smaller host (tmpfs's own default, half of
# RAM per container, let any container take the host's memory), and one inode per 4 KiB.
_DEFAULT_DISK_SIZE = 1 << 30
# What a container on a network gets written into its /etc (the host image's own copies of
# these are not bound over them).
HOSTS_FILE, RESOLV_CONF = "/etc/hosts", "/etc/resolv.conf"
NETWORK_FILES = (HOSTS_FILE, RESOLV_CONF)


def default_disk_size() -> int:
    """The writable layer's size when the container gives no ``disk_size`` (documented)."""
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(_DEFAULT_DISK_SIZE, ram // 4)


def _check_hostname(name: str) -> None:
    # What sethostname(2) takes: HOST_NAME_MAX bytes, and no NUL (the protocol's strings).
    if not name or len(name.encode()) > 64 or "\0" in name:
        raise errors.ContainerError(
            f"hostname {name!r} is not valid: it takes 1 to 64 bytes (letters, digits and '-' "
            "are what other machines will accept)"
        )


def _default_inodes(disk_size: int) -> int:
    # about one inode per 4 KiB of space, as ext4 makes them, within sane bounds
    return min(max(disk_size // 4096, 4096), 1 << 20)


def _check_size(path: str, size: int, max_size: int) -> None:
    if size > max_size:
        raise errors.FileTooLargeError(
            f"{path!r} in the container is {size} bytes, over read_file's limit of {max_size} "
            "bytes: stream it with open_file(path), or pass a larger max_size="
        )


def network_name(network: object) -> str:
    """The name in ``network=``: a string, or the ``name`` of a `sandkit.Network`."""
    name = network if isinstance(network, str) else getattr(network, "name", None)
    if not isinstance(name, str):
        raise errors.NetworkSpecError(
            f"network={network!r} is not valid: give 'none', 'host', 'bridge', a network's "
            "name or a sandkit.Network"
        )
    return name


def network_of(name: str) -> net_store.NetworkRecord | None:
    """The network a container joins (None for "none" and "host"); NetworkNotFoundError."""
    if name in ("none", "host"):
        return None
    return net_store.get_network(name)


def denied_destinations() -> list[ipaddress.IPv4Network]:
    """What a container on a network never reaches unless its policy names it literally: the
    always-denied destinations (`egress.always_denied`, the host's addresses read now) and the
    subnets of sandkit's networks. Those are reachable only from inside each network: without
    this, a packet for a container of another network would leave through pasta for the
    outside and hang there, instead of being refused at once."""
    subnets = [record.subnet for record in net_store.list_networks()]
    return list(dict.fromkeys([*net_egress.always_denied(), *subnets]))


@attrs.define(eq=False)
class Joined:
    """A network a running container is on: the keeper connection that holds its interface
    there (closing it detaches the container), and the interface's name in the container."""

    connection: KeeperConnection
    iface: str


# How long `disconnect` waits for the keeper to take the container's interface away.
DETACH_TIMEOUT = 5.0
_DETACH_POLL = 0.002


_NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2), linux/nsfs.h


def _userns_parent_is(pid: int, userns_fd: int) -> bool:
    """Whether the user namespace of process ``pid`` was made right under ``userns_fd``'s."""
    own = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        parent = fcntl.ioctl(own, _NS_GET_PARENT)
    except OSError:
        return False  # (EPERM: its parent is not ours to see, so not the keeper's either)
    finally:
        os.close(own)
    try:
        theirs, wanted = os.fstat(parent), os.fstat(userns_fd)
    finally:
        os.close(parent)
    return (theirs.st_dev, theirs.st_ino) == (wanted.st_dev, wanted.st_ino)


def _has_interface(dev_path: str, iface: str) -> bool:
    """Whether the network namespace whose /proc/PID/net/dev is ``dev_path`` has ``iface``."""
    try:
        with open(dev_path) as f:
            return any(line.split(":", 1)[0].strip() == iface for line in f.readlines()[2:])
    except (FileNotFoundError, ProcessLookupError):
        return False


class Buildable(Protocol):
    """An image still to build: a recipe of the Python DSL (``Image.from_(...)...``, in
    sandkit.build, a layer above this one, hence a protocol rather than the class)."""

    async def build_async(self) -> Image:
        """Build (or take from the build cache) and return the image."""
        ...


# What a container can be made from (see `resolve_image`; a recipe: `built_image`).
BuiltSource: TypeAlias = Image | str | os.PathLike[str]
ImageSource: TypeAlias = BuiltSource | Buildable


async def built_image(image: ImageSource) -> BuiltSource:
    """A recipe built into an image (on first use; the build cache makes a rebuild cheap);
    anything else as is."""
    if isinstance(image, Image | str | os.PathLike):
        return image
    return await image.build_async()


def resolve_image(image: BuiltSource) -> Image | str:
    """What a container runs: "host" (see `plan.HOST_IMAGE`), an `Image`, a directory holding a
    root filesystem (an `os.PathLike`), or an image in the local store by reference."""
    if isinstance(image, os.PathLike):
        return Image.from_directory(image)
    if isinstance(image, Image) or image == plan.HOST_IMAGE:
        return image
    return Image.get(image)


@attrs.define(eq=False, init=False)
class AsyncContainer:
    """An isolated container made from an image; use ``async with``, or `start()` and `stop()`.

    ``image`` is "host" (the host's own programs, read-only, over a fresh writable layer), an
    `Image`, a directory (an `os.PathLike`) holding a root filesystem, or a reference to an image
    in the local store; ``options`` are `ContainerOptions`.

    Works under trio and asyncio (through anyio). Nothing of it outlives the host process: the
    init inside kills everything and exits as soon as the host's end of its socket closes.
    """

    image: ImageSource
    options: ContainerOptions
    hostname: str
    id: str
    _resolved: Image | str | None = attrs.field(default=None, init=False)
    _resources: Resources | None = attrs.field(default=None, init=False)
    _caps: int = attrs.field(default=0, init=False)
    _seccomp_program: bytes | None = attrs.field(default=None, init=False)
    _init: SpawnedInit | None = attrs.field(default=None, init=False)
    _channel: ControlChannel | None = attrs.field(default=None, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    _devnull: int = attrs.field(default=-1, init=False)
    _limits: Limits = attrs.field(factory=Limits, init=False)
    _lease: contextlib.AbstractContextManager[Any] | None = attrs.field(default=None, init=False)
    _volume_leases: contextlib.ExitStack | None = attrs.field(default=None, init=False)
    _recipe_used: prespawn.Recipe | None = attrs.field(default=None, init=False)
    _port_specs: tuple[PortSpec, ...] = attrs.field(default=(), init=False)
    _forwarder: PortForwarder | None = attrs.field(default=None, init=False)
    _network_record: net_store.NetworkRecord | None = attrs.field(default=None, init=False)
    _aliases: tuple[str, ...] = attrs.field(default=(), init=False)
    _egress_policy: net_egress.EgressPolicy = attrs.field(
        default=net_egress.EgressPolicy(allow_all=True), init=False
    )
    # Resolved at start: what the keeper enforces, with the host's always-denied destinations.
    _egress: net_egress.ResolvedEgress | None = attrs.field(default=None, init=False)
    _denied: list[ipaddress.IPv4Network] | None = attrs.field(default=None, init=False)
    _membership: KeeperConnection | None = attrs.field(default=None, init=False)
    _addresses: dict[str, str] = attrs.field(factory=dict, init=False)
    # Every network the running container is on, by name (its first one too, once started).
    _joined: dict[str, Joined] = attrs.field(factory=dict, init=False)
    _next_iface: int = attrs.field(default=0, init=False)
    _networks_lock: anyio.Lock | None = attrs.field(default=None, init=False)
    # An fd of the user namespace to nest a rootless container's under (a network's keeper's),
    # set before start; the caller keeps it open until start returns. See `spawn_init`.
    _parent_userns: int | None = attrs.field(default=None, init=False)
    # The main process (run=): what the options ask for, and once started the service itself.
    _service_spec: service.ServiceSpec | None = attrs.field(default=None, init=False)
    _service: service.Service | None = attrs.field(default=None, init=False)
    # Readiness and health (issue 18 item 2): the health check's thread while it runs, and its
    # state, kept after the stop for `health` and `health_report`.
    _health_monitor: health.HealthMonitor | None = attrs.field(default=None, init=False)
    _health_state: health.HealthState | None = attrs.field(default=None, init=False)
    # Code sessions (issue 19): made on first use, closed at stop.
    _code_sessions: ContainerSessions | None = attrs.field(default=None, init=False)
    # Why it was stopped, when not by its own user (a warm pool's close), for the holder's errors.
    _stop_reason: str = attrs.field(default="", init=False)
    # False for a warm pool's containers: the pool makes their successors itself (see prespawn).
    _spares: bool = attrs.field(default=True, init=False)
    # What the init was told at start: its mounts and files are left out of diff and commit.
    _setup: Setup | None = attrs.field(default=None, init=False)
    # The command a commit records as its history's created_by, when the main process is not
    # ``run=``'s (a detached container's supervisor spawns `sandkit run -d`'s itself).
    history_command: tuple[str, ...] = attrs.field(default=(), init=False)

    # -- detached containers (``detach=True``; the work is in attached.py) --------------------

    def __new__(  # noqa: PYI034 - with detach=True it is not an instance of cls
        cls, image: ImageSource = "host", **options: Any
    ) -> AsyncContainer:
        """With ``detach=True``: the handle of a container a supervisor process will run (an
        `AsyncAttachedContainer`, which Python does not __init__ again)."""
        if options.get("detach"):
            from .attached import AsyncAttachedContainer

            return cast(AsyncContainer, AsyncAttachedContainer.create(image, **options))
        return super().__new__(cls)

    @classmethod
    async def attach(cls, name_or_id: str) -> AsyncContainer:
        """The running detached container ``name_or_id`` (its name, id or unique id prefix),
        made by any process of this user: ``detach=True`` or `sandkit run -d`. Leaving its
        ``async with`` block leaves it running; `remove()` ends it. `NoSuchContainerError`
        when there is none, `ContainerNotRunningError` (with its exit code) when it ended."""
        from .attached import AsyncAttachedContainer

        return cast(AsyncContainer, await AsyncAttachedContainer.attach(name_or_id))

    def __init__(self, image: ImageSource = "host", **options: Unpack[ContainerOptions]) -> None:
        check_option_names(options)
        if options.get("name") is not None:
            raise errors.ContainerError(
                "name= names a detached container: add detach=True (a container that lives "
                "with its process needs no name)"
            )
        container_id = secrets.token_hex(32)
        hostname = options.get("hostname")
        self.__attrs_init__(
            image, options, container_id[:12] if hostname is None else hostname, container_id
        )
        _check_hostname(self.hostname)
        # Found here: an unknown network fails before anything is made.
        self._network_record = network_of(self._network)
        self._aliases = tuple(options.get("aliases", ()))
        if self._network_record is not None:
            net_protocol.check_name(self.hostname, "host name")
            for alias in self._aliases:
                net_protocol.check_name(alias, "alias")
        elif self._aliases:
            raise errors.NetworkSpecError(
                f"aliases= needs a network to be reached on: network={self._network!r} has "
                "none (use network='bridge' or a user network)"
            )
        # Checked here (syntax only): a malformed policy fails before anything is made.
        self._egress_policy = net_egress.EgressPolicy.parse(options.get("egress"))
        if self._network_record is None and options.get("egress") is not None:
            raise errors.NetworkSpecError(
                f"egress= applies to a container on a network: network={self._network!r} has "
                "none (use network='bridge' or a user network)"
            )
        self._port_specs = parse_ports(options.get("ports"))
        if self._port_specs and self._network == "host":
            raise errors.PortSpecError(
                "ports= cannot be used with network='host': the container's ports are the host's "
                "already (Docker ignores -p there with a warning; sandkit refuses it)"
            )
        self._output_limit(None)
        self._service_spec = service.ServiceSpec.from_options(options)
        # Checked here, so that bad limits or security options fail before anything is made.
        self._limits = Limits(
            memory=options.get("memory"),
            memory_swap=options.get("memory_swap"),
            cpus=options.get("cpus"),
            cpu_shares=options.get("cpu_shares"),
            pids=options.get("pids_limit"),
        )
        self._caps = capabilities.resolve_caps(
            options.get("cap_add", ()), options.get("cap_drop", ())
        )
        self._seccomp_program = seccomp_profiles.resolve_seccomp(
            options.get("seccomp", "default"), self._caps
        )
        healthcheck = options.get("healthcheck")
        if healthcheck is not None:
            health.from_option(healthcheck)  # a malformed one fails before anything is made
        if options.get("persist") and (options.get("disk_size") or options.get("disk_inodes")):
            # A limit the user asked for must hold, not be dropped without a word.
            raise errors.LimitsError(
                "disk_size and disk_inodes limit the tmpfs writable layer; a persistent one "
                "(persist=True) is on the host's disk, which they cannot bound: leave them out, "
                "or leave out persist"
            )

    @property
    def _network(self) -> str:
        return network_name(self.options.get("network", "none"))

    @property
    def _own_network(self) -> bool:
        """Whether the container gets a network namespace of its own (every mode but host)."""
        return self._network != "host"

    @property
    def name(self) -> str:
        """A detached container's name; "" for this one, which lives with this process (only a
        detached container, ``detach=True``, takes ``name=``)."""
        return ""

    @property
    def networks(self) -> dict[str, str]:
        """The container's address on each network it is on, by network name (empty with
        network="none" or "host")."""
        return dict(self._addresses)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start` and `stop`, while the container's init is alive; with a main
        process (``run=``), until it ended for good (then the container has stopped)."""
        return (
            self._channel is not None
            and not self._stopped
            and not self._channel.dead
            and not (self._service is not None and self._service.final)
        )

    @property
    def rootless(self) -> bool:
        """True when this process is not root: the container then gets a user namespace of its
        own."""
        return os.geteuid() != 0

    async def start(self) -> Self:
        """Create the container (or take a spare made ahead with the same setup) and return it,
        ready for `exec`; ``async with`` calls this. Raises `ContainerStartError` when it cannot
        be set up, `ImageNotFoundError` for an unknown image, and `ContainerError` when it was
        started before: a container starts once. Nothing is left behind on failure."""
        if self._channel is not None:
            raise errors.ContainerError("this container is running already")
        if self._stopped:
            if not self.options.get("persist"):
                raise errors.ContainerError(
                    "this container was already started; make a new one, or pass persist=True "
                    "for a container that starts again with its files"
                )
            self._stopped, self._service, self._health_state = False, None, None
        try:
            self._resolved = resolve_image(await built_image(self.image))
            main_argv = self._main_argv()  # before anything is made: an image with no command
            if isinstance(self._resolved, Image) and self._resolved.id:
                # A shared lock on the image for the container's life: `image.remove()` refuses
                # to delete layers a running container has mounted, in any process.
                self._lease = self._resolved.lease()
                self._lease.__enter__()
            # Likewise for its named volumes: `volume rm` refuses them while it runs.
            self._volume_leases = lease_volumes(self.options.get("mounts", ()))
            setup = self._setup = self._setup_message(self._resolved)
            if self.options.get("persist"):
                from .layer import layer_home

                _check_layered(setup, "persist=True")
                setup = self._setup = attrs.evolve(setup, layer=str(layer_home(self.id)))
            # Bound before the container is made: a port in use fails the start at no cost.
            self._forwarder = PortForwarder(self._connect_blocking)
            self._forwarder.bind(self._port_specs)
            accounting = self.options.get("accounting") or not self._limits.empty
            plan = ResourcePlan.decide(
                self._limits, accounting=accounting, rlimits=self.options.get("rlimits")
            )
            if self._network_record is not None:
                # Imported here: the keeper's netlink and DNS libraries cost 0.1 s to import,
                # which containers without a network need not pay.
                from ..net import client as net_client

                # Blocking (host names looked up, a new keeper takes a moment to start), so
                # off the event loop.
                self._egress = await anyio.to_thread.run_sync(self._egress_policy.resolve)
                self._denied = await anyio.to_thread.run_sync(denied_destinations)
                self._membership = await anyio.to_thread.run_sync(
                    net_client.join, self._network_record
                )
                # Rootless: the keeper can give the container an interface only if its user
                # namespace owns the container's.
                self._parent_userns = self._membership.userns_fd
            if not await self._start_from_spare(setup, plan):
                self._resources = plan.resources(plan.make_cgroup(self.id))
                await self._start_fresh(setup)
            self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self._forwarder.start()
            if self._membership is not None and self._network_record is not None:
                self._joined[self._network_record.name] = Joined(self._membership, "eth0")
                self._next_iface = 1
            if main_argv is not None:
                await self._start_main(main_argv)
                self._start_health_checks()
        except BaseException as exc:
            await self._teardown(kill=True)
            if isinstance(exc, errors.ContainerDiedError):  # a spare that died, taken
                raise startup.init_exited() from None
            raise
        return self

    def _recipe(self, setup: Setup, plan: ResourcePlan) -> prespawn.Recipe | None:
        """How a spare for this container is made, if it may use one."""
        if not self._spares:
            return None
        if (
            self.options.get("lifetime")
            or self._network_record is not None
            or self.options.get("persist")  # a spare's layer is a tmpfs of its own
        ):
            # A spare on a network would hold an address and a name; and it is made in a user
            # namespace of its own, where the network's keeper has no say.
            return None
        if self._volume_leases is not None:
            return None  # a spare would mount (and fill) its volumes before holding their leases
        return prespawn.recipe_for(
            setup, user_namespace=self.rootless, network=self._own_network, resources=plan
        )

    async def _start_from_spare(self, setup: Setup, plan: ResourcePlan) -> bool:
        recipe = self._recipe_used = self._recipe(setup, plan)
        if recipe is None:
            return False
        spare = prespawn.take(recipe)
        waited = False
        # One being made is ready sooner than one made now, which would compete for the cores.
        for _ in range(_SPARE_POLLS):
            if spare is not None or not prespawn.making(recipe):
                break
            waited = True
            await anyio.sleep(_SPARE_POLL_INTERVAL)
            spare = prespawn.take(recipe)
        if spare is None:
            return False
        if waited or time.monotonic() - spare.made_at < _BACK_TO_BACK:
            # Containers come back to back: have the next one made while this one runs, on the
            # other core (at the price of some contention), rather than after it stops.
            prespawn.request(recipe)
        if isinstance(self._resolved, Image) and not all(
            d.is_dir() for d in self._resolved.layer_dirs
        ):
            spare.discard()  # its image was removed after the spare was made
            return False
        self._init = spare.init
        self._resources = plan.resources(spare.cgroup)
        self._channel = spare.channel
        # Not waited for: the init serves requests in order, so whatever comes next sees the
        # name, and a name checked here (see _check_hostname) cannot fail there.
        rename = Hostname(id=self._channel.protocol.next_id(), name=setup.hostname)
        self._channel.send(rename)
        self._channel.forget(rename.id)
        return True

    async def _start_fresh(self, setup: Setup) -> None:
        assert self._resources is not None
        membership = self._membership
        layer_fds = []
        if setup.layer:
            from .layer import open_persistent_layer

            layer_fds.append(open_persistent_layer(self.id))
        try:
            self._init, self._channel = startup.spawn_with_setup(
                encode(setup) if membership is None else functools.partial(self._join, setup),
                user_namespace=self.rootless,
                network=self._own_network,
                cgroup=self._resources.cgroup,
                parent_userns=self._parent_userns,
                fds=layer_fds,
            )
        finally:
            for fd in layer_fds:
                os.close(fd)
        await startup.await_ready(self._channel, rootless=self.rootless)

    def _join(self, setup: Setup, init: SpawnedInit) -> bytes:
        """The setup of a container on a network: attach the new init's network namespace,
        then tell the init its interface, /etc/hosts and /etc/resolv.conf."""
        assert self._membership is not None and self._network_record is not None
        config = self._attach_interface(
            init.pid, self._membership, "eth0", self._aliases, self._egress, self._denied
        )
        self._addresses[self._network_record.name] = config["address"]
        files = (
            File(HOSTS_FILE, etcfiles.hosts(self.hostname, config["address"], self._aliases)),
            File(RESOLV_CONF, etcfiles.resolv_conf(config["gateway"])),
        )
        return encode(attrs.evolve(setup, net=Interface(**config), files=files))

    def _setup_message(self, image: Image | str) -> Setup:
        options = self.options
        disk_size = options.get("disk_size")
        disk_bytes = default_disk_size() if disk_size is None else parse_size(disk_size)
        return plan.setup_message(
            image,
            scratch=scratch_mountpoint(sandkit_home()),
            hostname=self.hostname,
            mounts=[Mount.parse(m) for m in options.get("mounts", ())],
            read_only=options.get("read_only", False),
            rootless=self.rootless,
            masked=security_paths.MASKED_PATHS,
            readonly_paths=security_paths.READONLY_PATHS,
            scratch_size=disk_bytes,
            scratch_inodes=options.get("disk_inodes") or _default_inodes(disk_bytes),
            loopback=self._own_network,
            lifetime=options.get("lifetime"),
            workdir=options.get("workdir")
            or (image.config.working_dir if isinstance(image, Image) else None),
            caps=self._caps,
            seccomp=self._seccomp_program,
            files_to_come=NETWORK_FILES if self._network_record is not None else (),
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop every process in the container and remove all trace of it. Idempotent.

        With a main process (``run=``), as ``docker stop``: its image's StopSignal (SIGTERM
        by default) goes to it first, and it has ``timeout`` seconds (default 10) to end."""
        try:
            if self._service is not None and not self._stopped:
                await self._service.stop(timeout)
        finally:
            await self._teardown(kill=False)

    async def kill(self) -> None:
        """Like `stop`, but SIGKILLs the init at once instead of letting it kill its processes."""
        await self._teardown(kill=True)

    async def _teardown(self, *, kill: bool) -> None:
        self._stopped = True
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.close()  # before the channel: its accepting thread may be using it
        monitor, self._health_monitor = self._health_monitor, None
        if monitor is not None:
            monitor.close()  # likewise: its thread may be running a check
        sessions, self._code_sessions = self._code_sessions, None
        if sessions is not None:
            sessions.close()  # their interpreters end with the container: close our pipe ends
        if self._channel is not None:
            self._channel.close()  # the init sees EOF: it kills everything and exits
            self._channel = None
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
        spawned, self._init = self._init, None
        resources, self._resources = self._resources, None
        with anyio.CancelScope(shield=True):
            if spawned is not None:
                if not kill:
                    with anyio.move_on_after(_STOP_GRACE):
                        await anyio.wait_readable(spawned.pidfd)
                # The init's pid namespace dies with it, taking every process of the container,
                # stopped or traced ones too.
                if kill or spawned.poll() is None:
                    spawned.kill()
                await anyio.wait_readable(spawned.pidfd)
                spawned.wait()
                spawned.close()
            if resources is not None:
                resources.destroy()
            if self._service is not None:
                await self._service.close()  # its thread takes the last output and ends
        membership, self._membership = self._membership, None
        if membership is not None:
            membership.close()  # the keeper detaches it (and ends with the last container)
        joined, self._joined = self._joined, {}
        for network in joined.values():
            network.connection.close()
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.__exit__(None, None, None)
        volume_leases, self._volume_leases = self._volume_leases, None
        if volume_leases is not None:
            volume_leases.close()
        if self._recipe_used is not None and spawned is not None:
            prespawn.request(self._recipe_used)  # the next container like this one is ready sooner

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- networks of a running container ----------------------------------------------------

    async def set_egress(self, egress: str | Sequence[str] | None) -> None:
        """Replace the running container's egress policy (as ``egress=``: "all", or a list of
        CIDRs, addresses and host names; host names are resolved now, on the host) on every
        network it is on. The swap is atomic and immediate: a connection the new policy denies
        is refused from then on, and its resolver follows the new policy too."""
        self._live_channel()
        policy = net_egress.EgressPolicy.parse(egress)
        async with self._network_changes():
            if not self._joined:
                raise errors.NetworkSpecError(
                    f"container {self.id[:12]} is on no network, so it has no egress to set: "
                    "start it with network='bridge' (or a user network), or connect() it to one"
                )
            resolved = await anyio.to_thread.run_sync(policy.resolve)
            denied = await anyio.to_thread.run_sync(denied_destinations)
            for joined in list(self._joined.values()):
                await anyio.to_thread.run_sync(joined.connection.set_egress, resolved, denied)
            self._egress_policy, self._egress, self._denied = policy, resolved, denied

    def _network_changes(self) -> anyio.Lock:
        """One change of the container's networks at a time (connect, disconnect, set_egress):
        each checks what the container is on, waits for the keeper, then records the change."""
        if self._networks_lock is None:
            self._networks_lock = anyio.Lock()
        return self._networks_lock

    async def connect(self, network: object, aliases: Sequence[str] = ()) -> None:
        """Put the running container on one more network (``docker network connect``): a new
        interface (eth1, eth2, ...) with an address there, reachable by its host name and
        ``aliases``, under its egress policy. The first network of a container that had none
        also gets the default route, /etc/resolv.conf and /etc/hosts. Rootless, a container
        can only be on the network it started on (see `_check_connectable`)."""
        channel = self._live_channel()
        names = tuple(aliases)
        for name in (self.hostname, *names):
            net_protocol.check_name(name, "alias" if name in names else "host name")
        async with self._network_changes():
            record = await anyio.to_thread.run_sync(self._network_to_connect, network)
            await self._join_running(channel, record, names)

    async def _join_running(
        self, channel: ControlChannel, record: net_store.NetworkRecord, aliases: tuple[str, ...]
    ) -> None:
        from ..net import client as net_client  # the keeper's libraries: see start()

        policy = self._egress or await anyio.to_thread.run_sync(self._egress_policy.resolve)
        denied = await anyio.to_thread.run_sync(denied_destinations)
        membership = await anyio.to_thread.run_sync(net_client.join, record)
        index = self._free_interface_index()
        iface = f"eth{index}"
        try:
            assert self._init is not None
            config = await anyio.to_thread.run_sync(
                self._attach_interface, self._init.pid, membership, iface, aliases, policy, denied
            )
            first = not self._joined
            await self._configure_interface(channel, config, aliases, default_route=first)
            # stopped meanwhile: its teardown closed the connections it knew of, not this one
            self._live_channel()
        except BaseException:
            membership.close()  # the keeper takes the interface away again
            raise
        self._next_iface = index + 1
        self._joined[record.name] = Joined(membership, iface)
        self._addresses[record.name] = config["address"]

    def _free_interface_index(self) -> int:
        """The next interface's number: the one after the last given that is free, wrapping
        around, so that disconnects and connects never run out of names."""
        taken = {joined.iface for joined in self._joined.values()}
        for step in range(net_protocol.MAX_INTERFACES):
            index = (self._next_iface + step) % net_protocol.MAX_INTERFACES
            if f"eth{index}" not in taken:
                return index
        raise errors.NetworkError(
            f"container {self.id[:12]} is on {len(taken)} networks, as many as it may be: "
            "disconnect one first"
        )

    def _network_to_connect(self, network: object) -> net_store.NetworkRecord:
        name = network_name(network)
        record = network_of(name)
        if record is None:
            raise errors.NetworkSpecError(
                f"network {name!r} cannot be connected to a running container: give 'bridge' "
                "or a user network"
            )
        self._check_connectable(record)
        return record

    def _check_connectable(self, record: net_store.NetworkRecord) -> None:
        """NetworkError when this container cannot join ``record`` now, saying why."""
        if not self._own_network:
            raise errors.NetworkError(
                f"container {self.id[:12]} uses the host's network (network='host'): it cannot "
                "be connected to other networks"
            )
        if record.name in self._joined:
            raise errors.NetworkError(
                f"container {self.id[:12]} is already connected to network {record.name!r}"
            )
        started_on = self._network_record
        if self.rootless and (started_on is None or started_on.id != record.id):
            # The keeper of a network can move an interface only into a network namespace its
            # own user namespace owns; rootless, the container's user namespace was made under
            # the keeper of its first network, or under none.
            raise errors.NetworkError(
                f"a rootless container cannot join network {record.name!r} once it runs: its "
                f"user namespace belongs to {self._network!r}, and only the keeper of a "
                "network it was started on can give it an interface; start the container "
                f"with network={record.name!r} instead (or run as root)"
            )

    def _attach_interface(
        self,
        pid: int,
        membership: KeeperConnection,
        iface: str,
        aliases: tuple[str, ...],
        policy: net_egress.ResolvedEgress | None,
        denied: list[ipaddress.IPv4Network] | None,
    ) -> dict[str, Any]:
        """Have the keeper put interface ``iface`` into the network namespace of ``pid`` (the
        container's init), blocking; its configuration for the init."""
        if membership.userns_fd is not None and not _userns_parent_is(pid, membership.userns_fd):
            raise errors.NetworkError(
                f"container {self.id[:12]} cannot rejoin its network: the keeper it was started "
                "under has ended (it had no other container on the network), and rootless only "
                "that keeper can give it an interface. Restart the container on the network; "
                "keep another container on it to disconnect and connect this one"
            )
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return membership.attach(
                netns,
                self.hostname,
                list(aliases),
                iface=iface,
                policy=policy,
                denied=denied,
                container_id=self.id,
            )
        finally:
            os.close(netns)

    async def _configure_interface(
        self,
        channel: ControlChannel,
        config: dict[str, Any],
        aliases: tuple[str, ...],
        *,
        default_route: bool,
    ) -> None:
        """Have the init configure the interface the keeper made; with ``default_route`` (the
        container's only network) also the route, /etc/hosts and /etc/resolv.conf."""
        interface = Interface(**{**config, "gateway": config["gateway"] if default_route else None})
        request = Netif(id=channel.protocol.next_id(), net=interface)
        reply, _ = await self._request(channel, request)
        if isinstance(reply, Error):
            raise errors.NetworkError(
                f"the container could not configure its interface: {reply.msg}"
            )
        if not isinstance(reply, Ok):
            raise errors.ProtocolError(f"expected 'ok', got {reply!r}")
        if default_route:
            hosts = etcfiles.hosts(self.hostname, config["address"], aliases)
            for path, data in (
                (HOSTS_FILE, hosts),
                (RESOLV_CONF, etcfiles.resolv_conf(config["gateway"])),
            ):
                try:
                    await self.write_file(path, data)
                except errors.ContainerError as exc:
                    raise errors.NetworkError(
                        f"the container cannot take the network's {path}: {exc} (the host "
                        "image binds the host's own read-only: start it on the network instead)"
                    ) from None

    async def disconnect(self, network: object) -> None:
        """Take the running container off ``network`` (``docker network disconnect``): its
        interface there goes, and with it its address and names on that network. Returns once
        the keeper has taken the interface away."""
        self._live_channel()
        name = network_name(network)
        async with self._network_changes():
            record = await anyio.to_thread.run_sync(net_store.get_network, name)
            joined = self._joined.pop(record.name, None)
            if joined is None:
                raise errors.NetworkError(
                    f"container {self.id[:12]} is not connected to network {record.name!r}"
                )
            if joined.connection is self._membership:
                self._membership = None
            self._addresses.pop(record.name, None)
            joined.connection.close()  # the keeper deletes the interface: the container lives on
            await self._interface_gone(joined.iface)

    async def _interface_gone(self, iface: str) -> None:
        """Wait until ``iface`` has left the container's network namespace (as the init's
        /proc/PID/net/dev shows it); NetworkError after `DETACH_TIMEOUT`."""
        assert self._init is not None
        deadline = time.monotonic() + DETACH_TIMEOUT
        path = f"/proc/{self._init.pid}/net/dev"
        # (an init that died takes the namespace with it; its pid may be someone else's then)
        while self.running and await anyio.to_thread.run_sync(_has_interface, path, iface):
            if time.monotonic() > deadline:
                raise errors.NetworkError(
                    f"the network's keeper did not take interface {iface} away within "
                    f"{DETACH_TIMEOUT:g} s"
                )
            await anyio.sleep(_DETACH_POLL)

    # -- running commands -----------------------------------------------------------------

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        stdin: bool = True,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        seccomp: seccomp_profiles.SeccompSpec = "default",
    ) -> AsyncProcess:
        """Start ``argv`` and return at once; its output streams while it runs.

        ``seccomp`` replaces the container's profile for this process only ("default" keeps it).
        """
        channel = self._live_channel()
        request = self._exec_request(
            argv,
            env=env,
            workdir=workdir,
            user=user,
            tty=tty,
            rows=rows,
            cols=cols,
            seccomp=seccomp,
            stdio="pty" if tty else "fds",
        )
        assert self._resources is not None
        accounting = self._resources.exec_cgroup(request.id)
        if accounting is not None:
            request = attrs.evolve(request, cgroups=len(accounting.fds()))
        host_ends: list[int] = []
        child_ends: list[int] = []
        try:
            if not tty:  # a pty exec gets its terminal from the init instead of pipes
                if stdin:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    child_ends.append(r)
                    host_ends.append(w)
                else:
                    child_ends.append(self._devnull)
                for _ in range(2):
                    r, w = os.pipe2(os.O_CLOEXEC)
                    host_ends.append(r)
                    child_ends.append(w)
            cgroup_fds = accounting.fds() if accounting else []
            process = await self._start_process(
                channel, request, child_ends + cgroup_fds, argv, host_ends
            )
            process.accounting = accounting
            return process
        except BaseException:
            for fd in host_ends:
                os.close(fd)
            if accounting is not None:
                accounting.close()
            raise
        finally:
            for fd in child_ends:
                if fd != self._devnull:
                    os.close(fd)

    async def _start_process(
        self,
        channel: ControlChannel,
        request: Exec,
        child_fds: Sequence[int],
        argv: Sequence[str],
        host_fds: Sequence[int],
    ) -> AsyncProcess:
        channel.send(request, child_fds)
        try:
            reply, fds = await channel.reply(request.id)
        except BaseException:
            channel.forget(request.id)
            raise
        if isinstance(reply, Error):
            channel.forget(request.id)
            raise exec_failure(reply, argv)
        if not isinstance(reply, Started):
            raise errors.ProtocolError(f"expected 'started', got {reply!r}")
        if request.pty:
            (master,) = fds
            set_nonblocking(master)
            return AsyncProcess(
                self,
                request.id,
                reply.pid,
                tuple(argv),
                stdin=AsyncInput(master, owns_fd=False),
                stdout=AsyncOutput(master),
                stderr=None,
                tty=True,
                link=ProcessLink(self),
            )
        for fd in host_fds:
            set_nonblocking(fd)
        stdin_fd = host_fds[0] if len(host_fds) == 3 else None
        out_fd, err_fd = host_fds[-2:]
        return AsyncProcess(
            self,
            request.id,
            reply.pid,
            tuple(argv),
            stdin=AsyncInput(stdin_fd) if stdin_fd is not None else None,
            stdout=AsyncOutput(out_fd),
            stderr=AsyncOutput(err_fd),
            link=ProcessLink(self),
        )

    def _exec_request(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        workdir: str | None,
        user: str | None,
        tty: bool,
        rows: int,
        cols: int,
        seccomp: seccomp_profiles.SeccompSpec,
        stdio: str,
        input: bytes | None = None,
        limit: int | None = None,
    ) -> Exec:
        check_argv(argv)
        channel = self._live_channel()
        config = self._resolved.config if isinstance(self._resolved, Image) else None
        merged_env = environment.merge(
            image_env=config.env if config else (),
            container_env=self.options.get("env"),
            exec_env=env,
            hostname=self.hostname,
            tty=tty,
        )
        if seccomp == "default":  # the container's own profile (or none, if it has none)
            program = self._seccomp_program
        else:
            program = seccomp_profiles.resolve_seccomp(seccomp, self._caps)
        shared = seccomp == "default" and program is not None
        if program is None and self._seccomp_program is not None:  # the init carries it
            raise errors.SecurityConfigError(
                "seccomp=None for one exec is not possible in a container with a seccomp profile "
                "(its init carries the profile, and filters only stack): create the container "
                "with seccomp=None instead"
            )
        return Exec(
            id=channel.protocol.next_id(),
            argv=tuple(argv),
            env=merged_env,
            cwd=workdir
            or self.options.get("workdir")
            or (config.working_dir if config else "")
            or "/",
            user=user or self.options.get("user") or (config.user if config else None) or None,
            stdio=stdio,
            input=input,
            limit=limit,
            rows=rows,
            cols=cols,
            caps=self._caps,
            seccomp=program,
            seccomp_shared=shared,
            rlimits=self._resources.rlimits if self._resources else (),
        )

    async def exec(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        check: bool = False,
        max_output: int | None = None,
        seccomp: seccomp_profiles.SeccompSpec = "default",
    ) -> ExecResult:
        """Run ``argv`` to completion and collect its output.

        A ``timeout`` (seconds) kills the process and everything it started. ``check=True``
        raises `ExecError` when the command fails or times out. Each of stdout and stderr keeps
        at most ``max_output`` bytes (None: the container's, 16 MiB by default); the rest is
        read and dropped and the result says ``output_truncated``. `spawn` streams instead.
        """
        started = time.monotonic()
        limit = self._output_limit(max_output)
        options = {"env": env, "workdir": workdir, "user": user, "seccomp": seccomp}
        if input is not None and len(input) > _INLINE_INPUT:
            outcome = await self._exec_piped(argv, input, limit, timeout, **options)
        else:
            outcome = await self._drive(self._captured_exec(argv, input, limit, timeout, **options))
        return finished(outcome, argv, timeout, check, started)

    def _output_limit(self, max_output: int | None) -> int:
        """Bytes an exec keeps per stream: its own ``max_output``, else the container's, else
        `DEFAULT_MAX_OUTPUT`; never unbounded, so that no exec fills this process's memory."""
        for limit in (max_output, self.options.get("max_output")):
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise errors.LimitsError(
                    f"max_output={limit!r} is not valid: give the bytes to keep per stream, an int "
                    f">= 0 (default {DEFAULT_MAX_OUTPUT}); use spawn() to stream larger output"
                )
            return limit
        return DEFAULT_MAX_OUTPUT

    def _captured_exec(
        self,
        argv: Sequence[str],
        input: bytes | None,
        limit: int | None,
        timeout: float | None,
        **options: Any,
    ) -> _ExecFlow:
        """The init collects the output and sends it with the exit event: for a short command,
        one packet each way."""
        channel = self._live_channel()
        request = self._exec_request(
            argv,
            tty=False,
            rows=0,
            cols=0,
            stdio="capture",
            input=input or None,
            limit=limit,
            **options,
        )
        assert self._resources is not None
        accounting = self._resources.exec_cgroup(request.id)
        if accounting is not None:
            request = attrs.evolve(request, cgroups=len(accounting.fds()))
        replies = CapturedReplies(argv, CapturedOutput(limit), CapturedOutput(limit))
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        try:
            channel.send(request, accounting.fds() if accounting else [])
            while True:
                reply = yield request.id, deadline
                if reply is None:  # timed out: kill it all, then take what it printed
                    timed_out, deadline = True, None
                    kill = Signal(
                        id=channel.protocol.next_id(),
                        target=request.id,
                        sig=signals.SIGKILL,
                        tree=True,
                    )
                    channel.send(kill)
                    signalled = yield kill.id, None
                    channel.forget(kill.id)
                    if isinstance(signalled, Error):
                        raise errors.ContainerError(f"could not kill the command: {signalled.msg}")
                elif (exited := replies.take(reply)) is not None:
                    break
            usage = accounting.finish() if accounting is not None else None
        except errors.ExecStartError:
            raise
        except BaseException:
            self._abandon(channel, request.id)
            raise
        finally:
            channel.forget(request.id)
            if accounting is not None:
                accounting.close()
        return ExecOutcome(exited, usage, replies.out, replies.err, timed_out)

    async def _drive(self, flow: _ExecFlow) -> ExecOutcome:
        channel = self._live_channel()
        try:
            wanted = next(flow)
            while True:
                request_id, deadline = wanted
                reply = None
                with anyio.move_on_after(
                    math.inf if deadline is None else deadline - time.monotonic()
                ):
                    reply, _ = await self._reply_or_stopped(channel, request_id)
                wanted = flow.send(reply)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    def _drive_blocking(self, channel: ControlChannel, flow: _ExecFlow) -> ExecOutcome:
        try:
            wanted = next(flow)
            while True:
                try:
                    answer = channel.reply_blocking(*wanted)
                except errors.ContainerDiedError:
                    self._raise_if_stopped()
                    raise
                wanted = flow.send(answer[0] if answer else None)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    def _abandon(self, channel: ControlChannel, exec_id: int) -> None:
        """An exec given up on (cancelled, or the container failed): kill what it started,
        without waiting, and drop whatever the init still sends about it."""
        channel.forget(exec_id)
        if channel.dead:
            return
        request = Signal(
            id=channel.protocol.next_id(), target=exec_id, sig=signals.SIGKILL, tree=True
        )
        with contextlib.suppress(errors.ContainerDiedError):
            channel.send(request)
        channel.forget(request.id)

    async def _exec_piped(
        self,
        argv: Sequence[str],
        input: bytes,
        limit: int | None,
        timeout: float | None,
        **options: Any,
    ) -> ExecOutcome:
        """Input too large to travel inline goes through a pipe the host feeds."""
        process = await self.spawn(argv, stdin=True, **options)
        timed_out = False
        out, err = CapturedOutput(limit), CapturedOutput(limit)
        async with process:
            with anyio.move_on_after(timeout) as deadline:
                await communicate(process, input, out, err)
            if deadline.cancelled_caught:
                timed_out = True
                await process.kill()
                with anyio.move_on_after(_DRAIN_AFTER_KILL):
                    await communicate(process, None, out, err)
            await process.wait()
        assert process.exit is not None
        return ExecOutcome(process.exit, process.usage, out, err, timed_out=timed_out)

    # -- code sessions and function calls (issue 19) ----------------------------------------
    # (the work is in sandkit/sessions/; an attached container shares these methods)

    def _sessions(self) -> ContainerSessions:
        with _SESSIONS_MADE:  # once, though threads ask at once
            if self._code_sessions is None:
                self._code_sessions = ContainerSessions(self)
            return self._code_sessions

    def session(
        self,
        *,
        python: str = "python3",
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        max_output: int | None = None,
    ) -> AsyncCodeSession:
        """A Python interpreter of its own in this container (started on first use): state
        persists between its calls. ``max_output``: bytes of stdout and of stderr a result keeps
        (default: the container's ``max_output`` if set, else 1 MiB)."""
        options = {"env": env, "workdir": workdir, "user": user, "max_output": max_output}
        return AsyncCodeSession(self._sessions().new(python=python, **options))

    def _default_session(self) -> AsyncCodeSession:
        return AsyncCodeSession(self._sessions().default_core())

    async def start_python(self) -> None:
        """Start the default session's interpreter now, so that the first `run_code` or `call`
        does not wait for it."""
        await self._default_session().start()

    async def run_code(
        self,
        code: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Callable[[str], object] | None = None,
        on_stderr: Callable[[str], object] | None = None,
    ) -> CodeResult:
        """Run Python ``code`` in the container's default session; see
        `AsyncCodeSession.run_code`."""
        session = self._default_session()
        return await session.run_code(
            code, timeout=timeout, env=env, on_stdout=on_stdout, on_stderr=on_stderr
        )

    def run_code_stream(
        self, code: str, *, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[OutputChunk | CodeResult]:
        """`OutputChunk` s as the snippet writes them, then its `CodeResult`."""
        return self._default_session().run_code_stream(code, timeout=timeout, env=env)

    async def call(
        self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Import and call ``target`` in the default session; see `AsyncCodeSession.call`."""
        return await self._default_session().call(target, *args, timeout=timeout, **kwargs)

    def call_iter(
        self, target: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Iterate over a generator function's items; see `AsyncCodeSession.call_iter`."""
        return self._default_session().call_iter(target, *args, timeout=timeout, **kwargs)

    # -- files ----------------------------------------------------------------------------

    async def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a file inside the container (seen through the container's root)."""
        write_to(await self._open(path, "w", mode), path, data, mode)

    async def read_file(self, path: str, *, max_size: int = DEFAULT_MAX_READ) -> bytes:
        """A file's whole content; one over ``max_size`` bytes (64 MiB by default) is refused
        with `FileTooLargeError` before it is read: stream those with `open_file`."""
        check_max_size(max_size)
        return read_from(await self._open(path, "r"), path, max_size)

    async def open_file(self, path: str) -> anyio.AsyncFile[bytes]:
        """Open a file of the container for reading, in binary: a file object to stream from,
        for files too large to hold at once (``async with``; ``await f.read(n)``)."""
        return anyio.wrap_file(await self._open_for_reading(path))

    async def _open_for_reading(self, path: str) -> BinaryIO:
        return os.fdopen(await self._open(path, "r"), "rb")

    async def listdir(self, path: str = "/") -> list[str]:
        """The names in directory ``path`` of the container, sorted (without ``.`` and ``..``).
        Raises `ContainerError` when it is missing or not a directory."""
        return list_from(await self._open(path, "dir"), path)

    async def _open(self, path: str, mode: str, perm: int = 0o644, *, raw: bool = False) -> int:
        """An fd the init opened; its refusal a `ContainerError` (``raw``: an `OSError` with
        the init's errno, which copy.py tells apart)."""
        if not path.startswith("/"):
            workdir = self.options.get("workdir")
            path = "/" + path if workdir is None else os.path.join(workdir, path)
        channel = self._live_channel()
        request = Open(id=channel.protocol.next_id(), path=path, mode=mode, perm=perm)
        reply, fds = await self._request(channel, request)
        if isinstance(reply, Error):
            if raw:
                raise OSError(reply.errno, reply.msg, path)
            raise file_error(reply, path)
        if not isinstance(reply, Opened):
            raise errors.ProtocolError(f"expected 'opened', got {reply!r}")
        return fds[0]

    # -- copying (`docker cp`'s job; the work is in copy.py, on a worker thread) --------------
    # (copy.py is imported by each method: ~10 ms of imports a program that never copies
    # need not pay)

    async def copy_in(
        self,
        source: copy.CopySource,
        container_path: str,
        *,
        archive: bool = False,
        follow_link: bool = False,
    ) -> None:
        """Copy into the container, by `docker cp`'s rules: ``source`` a host path (file or
        tree), bytes (one file's content) or a tar stream (a binary file object, extracted
        into directory ``container_path``). ``archive`` keeps the owners (``cp -a``; else the
        container's root owns it all); ``follow_link`` copies what a symlink source points to.
        Raises `CopyError` (nothing written) when a path is missing or refused."""
        from . import copy

        side = self._copy_side(anyio.from_thread.run)
        await anyio.to_thread.run_sync(
            lambda: copy.copy_in(
                side, source, container_path, archive=archive, follow_link=follow_link
            )
        )

    async def copy_out(
        self,
        container_path: str,
        host_path: str | os.PathLike[str],
        *,
        archive: bool = False,
        follow_link: bool = False,
    ) -> None:
        """Copy a file or tree of the container to the host, by `docker cp`'s rules; what lands
        belongs to the caller unless ``archive``. Nothing half-made is left on failure."""
        from . import copy

        side = self._copy_side(anyio.from_thread.run)
        await anyio.to_thread.run_sync(
            lambda: copy.copy_out(
                side, container_path, host_path, archive=archive, follow_link=follow_link
            )
        )

    async def get_archive(self, path: str, *, follow_link: bool = False) -> AsyncIterator[bytes]:
        """The file or tree at ``path`` as a tar stream (Docker's archive API), in chunks."""
        from . import copy

        chunks = copy.archive(self._copy_side(anyio.from_thread.run), path, follow_link=follow_link)
        try:
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk
        finally:
            await anyio.to_thread.run_sync(chunks.close)

    async def stat(self, path: str) -> copy.PathStat:
        """Docker's ``PathStat`` of ``path`` (a symlink at its last name is not followed)."""
        from . import copy

        side = self._copy_side(anyio.from_thread.run)
        return await anyio.to_thread.run_sync(lambda: copy.stat_path(side, path))

    async def remove(self, path: str | None = None, *, recursive: bool = False) -> None:
        """Remove a file, symlink or empty directory of the container (``recursive``: a tree).
        Without a path: remove the container itself (`stop`; a detached one's state and a
        persistent one's writable layer too)."""
        if path is None:
            await self.stop()
            if self.options.get("persist"):
                from .layer import remove_persistent_layer

                await anyio.to_thread.run_sync(remove_persistent_layer, self.id)
            return
        await remove_path(self._copy_side(anyio.from_thread.run), path, recursive)

    # -- the writable layer: diff, commit, export (the work is in layer.py, on a thread) ------

    async def diff(self) -> list[Change]:
        """What the container changed in its filesystem, as `docker diff` lists it: `Change`s
        of kind "A" (added), "C" (changed) or "D" (deleted), sorted by path. What sandkit
        itself writes there (/etc/hosts, mount points) is left out, as Docker leaves it."""
        from . import layer

        setup = self._running_setup()
        upper = await self._open("/", "upper")
        try:
            return await anyio.to_thread.run_sync(layer.diff, upper, setup, self._userns_pid())
        finally:
            os.close(upper)

    async def commit(
        self,
        tag: str | None = None,
        *,
        changes: Sequence[str] = (),
        message: str = "",
        author: str = "",
    ) -> Image:
        """A new image in the store: the container's image plus one layer with its changes
        (`diff`), as `docker commit`. ``changes``: Dockerfile lines for the new config (CMD,
        ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL); ``tag``: a name
        for it. The container goes on running; a file it writes meanwhile may fail the commit
        (`ImageError`: try again). Nothing is left in the store on failure."""
        from ..images.commit import commit_image
        from . import layer

        setup = self._running_setup()
        base = self._resolved
        if not isinstance(base, Image) or base.store is None or not base.id:
            raise errors.ImageError(
                "only a container of an image from the store can be committed (its layers are "
                "the new image's): load or pull the image, or build one, and run that"
            )
        store, argv = base.store, self._main_argv() or list(self.history_command)
        upper = await self._open("/", "upper")
        try:
            write = layer.layer_writer(upper, setup, self._userns_pid())
            record = await anyio.to_thread.run_sync(
                lambda: commit_image(
                    store,
                    store.record(base.id),
                    write,
                    tags=[tag] if tag else [],
                    changes=changes,
                    message=message,
                    author=author,
                    created_by=" ".join(argv),
                )
            )
        finally:
            os.close(upper)
        return await anyio.to_thread.run_sync(Image.from_record, store, record, tag or "")

    async def export(self, path: str | os.PathLike[str]) -> None:
        """Write the container's whole filesystem (its image and its changes, flattened) to
        the tar file ``path``, as `docker export`: mounted filesystems (/proc, volumes) show
        as empty directories. An existing file is replaced; a failed export leaves none."""
        from . import layer

        with layer.replacing(path) as out_fd:
            await self._export_into(out_fd)

    async def _export_into(self, out_fd: int) -> None:
        """`export` into the file open as ``out_fd`` (a detached container's supervisor writes
        its client's file)."""
        from . import layer

        self._running_setup()
        root = await self._open("/", "dir")
        try:
            await anyio.to_thread.run_sync(layer.export_into, root, out_fd, self._userns_pid())
        finally:
            os.close(root)

    def _running_setup(self) -> Setup:
        """The setup of the running container, whose root must have a writable layer."""
        self._live_channel()
        assert self._setup is not None
        _check_layered(self._setup, "diff, commit and export")
        return self._setup

    def _userns_pid(self) -> int | None:
        """The init's pid when its files' ids are a user namespace's (rootless), else None."""
        assert self._init is not None
        return self._init.pid if self.rootless else None

    def _copy_side(self, call: Callable[..., Any]) -> copy.ContainerSide:
        """The container as copy.py reaches it; ``call`` runs a coroutine function from the
        thread that copies (anyio's from_thread.run, or the sync API's portal)."""
        from . import copy

        self._live_channel()
        assert self._init is not None
        ids = copy.IdMap.of_process(self._init.pid) if self.rootless else copy.IdMap()

        # As `docker cp`: a relative path is taken from the container's root, not its workdir.
        def opener(path: str, mode: str) -> int:
            return call(open_for_copy, self, path if path.startswith("/") else "/" + path, mode)

        # rootless with a range, the container's users own files we may not touch: see copy.py
        userns = self._init.pid if len(ids.uids) > 1 else None
        return copy.ContainerSide(opener, ids, userns=userns)

    def stats(self) -> CgroupStats:
        """Current and peak memory, cpu time and number of processes of the whole container.

        Needs a cgroup: set a limit (memory, cpus, pids_limit...) or ``accounting=True``.
        """
        self._live_channel()
        cgroup = self._resources.cgroup if self._resources else None
        if cgroup is None:
            raise errors.ContainerError(
                "stats() needs the container to have a cgroup: create it with a limit "
                "(memory=, cpus=, pids_limit=) or accounting=True (root, or cgroup v2 delegation)"
            )
        return cgroup.stats()

    @property
    def ports(self) -> dict[str, list[Binding]]:
        """The published ports, by container port as Docker names them ("80/tcp"), each with
        the host address and port it is published on."""
        published: dict[str, list[Binding]] = {}
        for binding in self._forwarder.bindings if self._forwarder else ():
            published.setdefault(binding.spec.key, []).append(binding)
        return published

    def port(self, container_port: int | str) -> tuple[str, int]:
        """The host address and port that ``container_port`` (80, "80/tcp", "53/udp") is
        published on: ``host, port = c.port(80)``."""
        return published_on(self.ports, container_port, self._live_channel)

    def _connect_blocking(self, proto: str, port: int) -> socket.socket:
        """A socket connected to ``port`` on the container's loopback, made by its init (for
        the thread that serves published ports); OSError when that fails."""
        channel = self._live_channel()
        request = Connect(id=channel.protocol.next_id(), proto=proto, port=port)
        got = channel.request_from_thread(request, CONNECT_TIMEOUT)
        if got is None:
            raise TimeoutError(
                errno.ETIMEDOUT, f"the container did not connect to port {port} in time"
            )
        reply, fds = got
        if isinstance(reply, Error):
            raise OSError(reply.errno, reply.msg)
        if not isinstance(reply, Connected):
            raise errors.ProtocolError(f"expected 'connected', got {reply!r}")
        return socket.socket(fileno=fds[0])

    async def ping(self) -> float:
        """Round trip to the init, in seconds."""
        channel = self._live_channel()
        started = time.perf_counter()
        reply, _ = await self._request(channel, Ping(id=channel.protocol.next_id()))
        if not isinstance(reply, Pong):
            raise errors.ProtocolError(f"expected 'pong', got {reply!r}")
        return time.perf_counter() - started

    # -- the main process (run=; the work is in service.py) --------------------------------

    def _image_config(self) -> ImageConfig:
        resolved = self._resolved
        return resolved.config if isinstance(resolved, Image) else ImageConfig()

    def _main_argv(self) -> list[str] | None:
        """The main process's argv by Docker's rules, or None without ``run``."""
        if self._service_spec is None:
            return None
        return self._service_spec.argv(self._image_config())

    async def _start_main(self, argv: list[str]) -> None:
        assert self._service_spec is not None and self._init is not None and self._channel
        main = service.Service(
            self._service_spec,
            argv,
            stop_signal(self._image_config()),
            self._channel,
            self._main_request,
            self._init.pid,
            self._init.pidfd,
        )
        await main.start()
        self._service = main

    def _main_request(self, argv: Sequence[str]) -> Exec:
        # The container's env, workdir and user over the image's, as for any exec (Docker's).
        return self._exec_request(
            argv,
            env=None,
            workdir=None,
            user=None,
            tty=False,
            rows=0,
            cols=0,
            seccomp="default",
            stdio="fds",
        )

    def _raise_if_main_ended(self) -> None:
        reason = None if self._stopped or self._service is None else self._service.stopped_reason()
        if reason is not None:
            raise errors.ContainerNotRunningError(
                f"container {self.id[:12]} has stopped: {reason}"
            ) from None

    def _main_process(self) -> service.Service:
        if self._service is None:
            if self._service_spec is not None:
                self._live_channel()  # not started (or its start failed): says so
            raise errors.ContainerError(
                f"container {self.id[:12]} has no main process, so no logs or exit status: "
                "start it with run=True (the image's Entrypoint and Cmd) or run=[...]"
            )
        return self._service

    async def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> bytes:
        """What the main process (``run=``) printed so far, as far as the ring keeps it
        (``log_size``, 1 MiB by default): stdout and/or stderr, each line after its RFC 3339
        time with ``timestamps`` (as ``docker logs -t``), only the last ``tail`` lines."""
        view = service.log_view(stdout=stdout, stderr=stderr, timestamps=timestamps, tail=tail)
        return self._main_process().logs(view, tail)

    async def logs_stream(
        self,
        *,
        follow: bool = True,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[bytes]:
        """`logs` as chunks, then (``follow``) what the main process prints, as it comes, until
        it has ended (for good: restarts go on) and all of it was given: ``async for chunk in
        c.logs_stream(): ...``. Stop iterating to stop following."""
        view = service.log_view(stdout=stdout, stderr=stderr, timestamps=timestamps, tail=tail)
        async for chunk in self._main_process().astream(view, tail, follow):
            yield chunk

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for the main process to end for good (no restart follows) and return its exit
        status: its code, or 128 + N when signal N ended it (Docker's). `TimeoutError` after
        ``timeout`` seconds (it keeps running)."""
        return await self._main_process().wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the main process's output (both streams), decoded, for
        error messages; "" when the container has no main process."""
        return "" if self._service is None else self._service.tail(lines)

    @property
    def restart_count(self) -> int:
        """How many times the restart policy (``restart=``) started the main process again."""
        return 0 if self._service is None else self._service.restart_count

    # -- readiness and health (issue 18 item 2; the work is in readiness.py and health.py) -----

    async def wait_for_port(self, port: int, *, timeout: float = 30.0, proto: str = "tcp") -> None:
        """Wait until something in the container listens on ``port`` ("tcp" or "udp"), seen from
        inside (its /proc/net tables): works with network="none" and unpublished ports.

        Raises `WaitTimeoutError` (its message ends with the service's last log lines) after
        ``timeout`` seconds, and `ContainerNotRunningError` as soon as the container or its main
        process has ended."""
        await readiness.wait_for_port(self, port, timeout=timeout, proto=proto)

    async def wait_for_log(
        self, pattern: str | bytes | re.Pattern[Any], *, timeout: float = 30.0, times: int = 1
    ) -> None:
        """Wait until the main process's output (stdout and stderr, as kept by `logs`) matches
        the regular expression ``pattern`` (str or bytes; multi-line mode) ``times`` times,
        counted from its start. Errors as `wait_for_port`."""
        await readiness.wait_for_log(self, pattern, timeout=timeout, times=times)

    async def wait_for_http(
        self,
        path: str = "/",
        *,
        port: int,
        status: int | Callable[[int], bool] = 200,
        timeout: float = 30.0,
    ) -> None:
        """Wait until an HTTP/1.1 ``GET path`` to ``port`` on the container's 127.0.0.1 answers
        ``status`` (an int, or a callable that accepts a status). The connection is made by the
        container's init, so no port needs to be published. Errors as `wait_for_port`."""
        await readiness.wait_for_http(self, path, port=port, status=status, timeout=timeout)

    async def wait_for_exec(self, argv: Sequence[str], *, timeout: float = 30.0) -> None:
        """Wait until ``argv``, run in the container, exits 0 (each try gets what is left of
        ``timeout``). Errors as `wait_for_port`."""
        await readiness.wait_for_exec(self, argv, timeout=timeout)

    async def wait_for_healthy(self, *, timeout: float = 60.0) -> None:
        """Wait until the health check (the image's HEALTHCHECK, or ``healthcheck=``) says
        "healthy". `ReadinessSpecError` at once when the container has none; otherwise errors
        as `wait_for_port`."""
        await readiness.wait_for_healthy(self, timeout=timeout)

    @property
    def health(self) -> str | None:
        """The health check's state, as Docker's: "starting", "healthy" or "unhealthy"; None
        when the container has no health check (the image has none, it is ["NONE"], or the
        container has no main process: see ``healthcheck=``)."""
        return None if self._health_state is None else self._health_state.status

    def health_report(self) -> dict[str, Any] | None:
        """State.Health as `docker inspect` shows it (Status, FailingStreak, the last 5 checks
        in Log), or None without a health check."""
        return None if self._health_state is None else self._health_state.to_docker()

    def _start_health_checks(self) -> None:
        """Start the health check's thread beside the main process (Docker checks only
        containers whose main process runs)."""
        if self._service is not None:
            start_health_checks(self)

    # -- plumbing (also used by the internal interface at the end of this module) ------------

    async def _request(
        self, channel: ControlChannel, request: Open | Ping | Signal | Netif
    ) -> tuple[Reply, list[int]]:
        """Send a request that has exactly one reply, and wait for it."""
        channel.send(request)
        try:
            return await channel.reply(request.id)
        finally:
            channel.forget(request.id)

    async def _reply_or_stopped(
        self, channel: ControlChannel, exec_id: int
    ) -> tuple[Reply, list[int]]:
        try:
            return await channel.reply(exec_id)
        except errors.ContainerDiedError:
            self._raise_if_stopped()
            raise

    def _raise_if_stopped(self) -> None:
        if self._stopped:
            because = f" ({self._stop_reason})" if self._stop_reason else ""
            raise errors.ContainerNotRunningError(
                f"the container was stopped while this process was running{because}"
            ) from None
        self._raise_if_main_ended()

    def _live_channel(self) -> ControlChannel:
        self._raise_if_main_ended()
        if self._channel is None or self._stopped:
            state = "has been stopped" if self._stopped else "is not started"
            if self._stop_reason:
                raise errors.ContainerNotRunningError(
                    f"container {self.id[:12]} has been stopped: {self._stop_reason}"
                )
            raise errors.ContainerNotRunningError(
                f"container {self.id[:12]} {state}: use it inside `with Container(...)` "
                "or call start() first"
            )
        if self._channel.dead:
            raise errors.ContainerDiedError(
                f"container {self.id[:12]}'s init has exited (killed from outside?): "
                "its processes are gone; start a new container"
            )
        return self._channel


# -- the internal interface of this module --------------------------------------------------
# What the sync API (api.py) and `AsyncProcess` (process.py) need of a container beyond its
# public methods. Not public API: named here so that no private name crosses a module and
# `AsyncContainer` shows its users only what they may call.


def without_spares(container: AsyncContainer) -> AsyncContainer:
    """Have ``container`` neither take a spare nor have one made when it stops (a warm pool's:
    the pool starts its successors itself, counted within its limits)."""
    container._spares = False
    return container


def stopped_because(container: AsyncContainer, reason: str) -> None:
    """Say why ``container`` is about to be stopped by someone other than its user (a warm pool's
    close): its user's next call fails with that reason."""
    container._stop_reason = reason


def _check_layered(setup: Setup, what: str) -> None:
    """`ContainerError` unless the container's root is an image's layers under a writable
    layer of its own (not "host", whose root is the host's directories, or a plain tmpfs)."""
    if setup.rootfs.get("kind") != "overlay":
        raise errors.ContainerError(
            f"{what} needs a container of an image (its layers under a writable layer), not "
            "the 'host' image: run an image from the store or a directory"
        )


def exec_on_this_thread(
    container: AsyncContainer,
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = False,
    max_output: int | None = None,
    **options: Any,
) -> ExecResult | None:
    """`exec` for the sync API, done on the caller's thread with blocking I/O: no hand-off
    to the loop thread and back. None when it cannot be done so (large input, or the loop is
    reading this container's socket for another caller): then use `exec`."""
    started = time.monotonic()
    if input is not None and len(input) > _INLINE_INPUT:
        return None
    channel = container._live_channel()
    limit = container._output_limit(max_output)
    with channel.thread_reader() as mine:
        if not mine:
            return None
        flow = container._captured_exec(argv, input, limit, timeout, **options)
        outcome = container._drive_blocking(channel, flow)
    return finished(outcome, argv, timeout, check, started)


def check_argv(argv: Sequence[str]) -> None:
    """`ExecStartError` for a command that is no list of arguments (a str would run as its
    letters)."""
    if isinstance(argv, str | bytes) or not argv:
        raise errors.ExecStartError(
            "argv must be a non-empty list of strings, e.g. ['sh', '-c', 'echo hi']"
        )


def main_process(container: AsyncContainer) -> service.Service:
    """The container's main process (``run=``), for the sync API's logs and wait, which block
    the caller's thread rather than the loop; `ContainerError` when it has none."""
    return container._main_process()


def main_command(container: AsyncContainer) -> list[str]:
    """The argv of the container's main process (``run=``), [] without one."""
    return list(container._service.argv) if container._service is not None else []


def copy_side(container: AsyncContainer, call: Callable[..., Any]) -> copy.ContainerSide:
    """The container as copy.py reaches it from a thread of the caller's (``call``: the sync
    API's portal), for the sync `get_archive`, a generator run on the caller's thread."""
    return container._copy_side(call)


async def open_for_copy(container: AsyncContainer, path: str, mode: str, perm: int = 0o644) -> int:
    """An fd on ``path`` ("dir", "r", or "w" made with ``perm``) resolved in the container's
    root, for a copy made by another process (``sandkit cp``, an attached container, through
    a detached container's supervisor); `OSError` with the init's errno when it is refused."""
    if mode not in ("dir", "r", "w"):
        raise OSError(errno.EINVAL, f"a copy opens directories or files, not {mode!r}")
    return await container._open(path, mode, perm & 0o7777, raw=True)


def published_on(
    ports: dict[str, list[Binding]], container_port: int | str, check_running: Callable[[], object]
) -> tuple[str, int]:
    """`port()`'s answer from a container's ``ports``; for a port not among them,
    ``check_running`` raises first if the container has stopped, else `PortSpecError`."""
    number, proto = container_side(str(container_port), container_port)
    bindings = ports.get(f"{number}/{proto}")
    if not bindings:
        check_running()
        raise errors.PortSpecError(
            f"port {number}/{proto} of the container is not published: publish it with "
            f'ports=["{number}/{proto}"] (published: {", ".join(ports) or "none"})'
        )
    return bindings[0].host_ip, bindings[0].host_port


async def remove_path(side: copy.Side, path: str, recursive: bool) -> None:
    """`remove(path)`'s work, on a worker thread, for any container copy.py reaches."""
    from . import copy

    await anyio.to_thread.run_sync(lambda: copy.remove(side, path, recursive=recursive))


# -- files, through an fd the init opened (here, or in a detached container's supervisor) ------


def write_to(fd: int, path: str, data: bytes | str, mode: int) -> None:
    """`write_file`'s work on the fd the init opened for it (closed here)."""
    if isinstance(data, str):
        data = data.encode()
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:  # a full writable layer, mostly
        raise errors.ContainerError(
            f"cannot write {path!r} in the container: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)


def check_max_size(max_size: int) -> None:
    """`read_file`'s ``max_size``: an int >= 0, else `LimitsError`."""
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise errors.LimitsError(
            f"max_size={max_size!r} is not valid: give the most bytes to read, an int >= 0 "
            f"(default {DEFAULT_MAX_READ}); use open_file() to stream a larger file"
        )


def read_from(fd: int, path: str, max_size: int) -> bytes:
    """`read_file`'s work on the fd the init opened for it (closed here)."""
    try:
        with os.fdopen(fd, "rb") as f:
            _check_size(path, os.fstat(f.fileno()).st_size, max_size)
            # st_size can lie (a file that grows, procfs): never read past the limit.
            data = f.read(max_size + 1)
            _check_size(path, len(data), max_size)
            return data
    except OSError as exc:
        raise errors.ContainerError(
            f"cannot read {path!r} in the container: {exc.strerror}"
        ) from None


def list_from(fd: int, path: str) -> list[str]:
    """`listdir`'s work on the directory fd the init opened for it (closed here)."""
    try:
        return sorted(os.listdir(fd))
    except OSError as exc:
        raise errors.ContainerError(
            f"cannot list {path!r} in the container: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)


async def init_exited(container: AsyncContainer) -> None:
    """Until the running container's init has ended (its ``lifetime`` was up, or it was killed):
    what a detached container without a main process waits on."""
    assert container._init is not None
    await anyio.wait_readable(container._init.pidfd)


def init_alive(container: AsyncContainer) -> bool:
    """Whether the running container's init is still there (`running` learns of a death only
    when the channel is next used): a warm pool checks it before handing the container out."""
    return container.running and container._init is not None and container._init.poll() is None


@attrs.frozen
class ProcessLink:
    """What an `AsyncProcess` asks of the container that started it: its exit, signals, and
    whether the container's socket is gone."""

    container: AsyncContainer

    async def wait_exit(self, exec_id: int) -> Exit:
        """The exec's exit event; ContainerNotRunningError if the container is stopped first."""
        channel = self.container._live_channel()
        reply, _ = await self.container._reply_or_stopped(channel, exec_id)
        channel.forget(exec_id)
        if not isinstance(reply, Exit):
            raise errors.ProtocolError(f"expected 'exit', got {reply!r}")
        return reply

    async def signal(self, exec_id: int, sig: int, *, tree: bool) -> None:
        """Send ``sig`` to the exec's process, or with ``tree`` to everything it started too."""
        channel = self.container._live_channel()
        request = Signal(id=channel.protocol.next_id(), target=exec_id, sig=sig, tree=tree)
        reply, _ = await self.container._request(channel, request)
        if isinstance(reply, Error):
            raise errors.ContainerError(f"could not signal the process: {reply.msg}")

    def channel_dead(self) -> bool:
        """True when the container's control socket is gone (never opened, closed, or its init
        died)."""
        channel = self.container._channel
        return channel is None or channel.dead


# -- for readiness.py and health.py ------------------------------------------------------------


def main_ended(container: AsyncContainer | AsyncAttachedContainer) -> str | None:
    """Why the container no longer runs when its main process has ended for good (its exit
    status and last output), else None."""
    if not isinstance(container, AsyncContainer):  # an attached one: its supervisor knows
        return container._ended_reason()
    main = container._service
    return None if main is None or container._stopped else main.stopped_reason()


async def open_in_container(container: AsyncContainer | AsyncAttachedContainer, path: str) -> int:
    """An fd the init opened for reading on ``path`` (absolute) in the container's root; OSError
    with the init's errno when it cannot."""
    return await container._open(path, "r", raw=True)


async def connect_in_container(
    container: AsyncContainer | AsyncAttachedContainer, proto: str, port: int
) -> socket.socket:
    """A non-blocking socket the init connected to ``port`` on the container's 127.0.0.1;
    OSError (ECONNREFUSED: nothing listens) when it cannot. (A detached container's supervisor
    answers its clients' ``dial`` request with this.)"""
    if not isinstance(container, AsyncContainer):  # an attached one: through its supervisor
        return await container._dial(proto, port)
    channel = container._live_channel()
    request = Connect(id=channel.protocol.next_id(), proto=proto, port=port)
    channel.send(request)
    try:
        reply, fds = await container._reply_or_stopped(channel, request.id)
    finally:
        channel.forget(request.id)
    if isinstance(reply, Error):
        for fd in fds:
            os.close(fd)
        raise OSError(reply.errno, reply.msg)
    if not isinstance(reply, Connected) or len(fds) != 1:
        raise errors.ProtocolError(f"expected 'connected', got {reply!r}")
    return socket.socket(fileno=fds[0])


def start_health_checks(
    container: AsyncContainer,
    on_change: Callable[[health.HealthState], None] | None = None,
) -> None:
    """Start the container's health check (the image's, under ``healthcheck=``), if it has one,
    until it stops; ``on_change`` is called on the checking thread after each result. For a
    container whose main process is started by another part (the detached supervisor); for one
    started with ``run=``, whose checks run already, it only sets ``on_change``."""
    image = container._resolved
    config = health.resolve(
        image.config.healthcheck if isinstance(image, Image) else None,
        container.options.get("healthcheck"),
    )
    if config is None:
        return
    if container._health_monitor is not None:  # started with the container's own run=
        if on_change is not None:
            container._health_monitor.on_change = on_change
            on_change(container._health_monitor.state)
        return
    container._health_state = health.HealthState(config)
    container._health_monitor = health.HealthMonitor(
        container._health_state, functools.partial(probe_from_thread, container), on_change
    )
    if on_change is not None:  # "starting" now, not once the thread runs: a detached
        on_change(container._health_state)  # container's clients may ask at once
    container._health_monitor.start()


def probe_from_thread(
    container: AsyncContainer, argv: Sequence[str], timeout: float, stop: threading.Event
) -> health.ProbeOutcome:
    """Run a health check's command to completion on the calling thread (the health thread:
    neither the loop's nor a sync caller's), killing it after ``timeout`` s, or as soon as
    ``stop`` is set (then ContainerNotRunningError)."""
    channel = container._live_channel()
    flow = container._captured_exec(
        argv,
        None,
        health.MAX_OUTPUT + 1,
        timeout,
        env=None,
        workdir=None,
        user=None,
        seccomp="default",
    )
    try:
        wanted = next(flow)
        while True:
            request_id, deadline = wanted
            got = channel.reply_from_thread(request_id, deadline, stop)
            if got is None and stop.is_set():
                raise errors.ContainerNotRunningError("the health check was stopped")
            wanted = flow.send(got[0] if got else None)
    except StopIteration as done:
        outcome: ExecOutcome = done.value
    finally:
        flow.close()
    result = exec_result(outcome, duration=0.0)
    return health.ProbeOutcome(
        result.exit_code, result.stdout + result.stderr, timed_out=result.timed_out
    )
