"""`ContainerOptions`: every option of a container, defined and documented once.

`Container`, `AsyncContainer`, the pytest marker and factory take them as keywords, typed with
``**options: Unpack[ContainerOptions]`` (so an IDE completes them and mypy checks them), and
`sandkit run` builds them from its flags. A new option is a new key here, read where it is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypedDict

from ..security.seccomp import SeccompSpec
from .mounts import Mount
from .ports import PortsOption


class NamedNetwork(Protocol):
    """What ``network=`` takes besides a string: anything with a network's ``name``
    (`sandkit.Network`)."""

    @property
    def name(self) -> str:
        """The network's name."""
        ...


class ContainerOptions(TypedDict, total=False):
    """The keyword options of a container; each may be left out (its default is given below).

    Sizes take an int (bytes) or a Docker-style string ("256m", "1.5g"). Limits are checked when
    the container object is made, so bad ones fail before anything starts.
    """

    env: Mapping[str, str] | None
    """Environment variables of every process, over the image's (an exec's ``env`` wins)."""
    workdir: str | None
    """The working directory of every process, made if missing (default: the image's, or /)."""
    user: str | None
    """Who processes run as: name, uid, name:group or uid:gid, looked up in the image's
    /etc/passwd and /etc/group (default: the image's user, or root)."""
    hostname: str | None
    """The container's host name, 1 to 64 bytes (default: the first 12 characters of its id)."""
    mounts: Sequence[Mount | str]
    """Bind mounts and tmpfs: `Mount` objects, or "SRC:DST", "SRC:DST:ro" as ``docker -v``."""
    read_only: bool
    """Mount the image's root filesystem read-only (default False: a writable layer on top)."""
    network: str | NamedNetwork
    """"none" (the default): a network namespace of its own with only loopback; "host": the
    host's network, not isolated; "bridge": sandkit's default network (an address of its own in
    10.88.0.0/16, outbound through pasta); or a user network (a `sandkit.Network`, or its
    name): containers on it reach each other by host name and ``aliases``."""
    aliases: Sequence[str]
    """More names the container is reached by on its network (DNS and /etc/hosts), as
    ``docker run --network-alias``."""
    egress: str | Sequence[str]
    """What a container on a network may reach outside it: "all" (the default), or a list of
    CIDRs, addresses and host names, each with an optional port and protocol
    (``["10.1.0.0/16", "pypi.org:443", "1.2.3.4:53/udp"]``; ``[]``: nothing). The host's own
    addresses, loopback and 169.254.0.0/16 stay denied unless named literally."""
    ports: PortsOption | None
    """Published ports, as ``docker run -p``: ``["8080:80", "127.0.0.1::5432", "53/udp"]``
    ([[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]), or ``{80: 8080, "53/udp": None,
    5432: ("127.0.0.1", 15432)}``. A bare port (``[5432]``) or a missing host port is an
    ephemeral one; a missing address is 127.0.0.1 (Docker's is 0.0.0.0). Works with
    network="none" (the init carries connections in); refused with "host". See
    `AsyncContainer.port` for where each one landed."""
    memory: int | str | None
    """Memory limit of the whole container (cgroup; at least 6m). Default: none."""
    memory_swap: int | str | None
    """Memory plus swap, as Docker's ``--memory-swap``: -1 is unlimited swap, equal to
    ``memory`` is no swap. Default: twice ``memory``. Needs ``memory``."""
    cpus: float | None
    """How many cpus' worth of time the container may use (CFS quota). Default: no limit."""
    cpu_shares: int | None
    """Relative cpu weight, as Docker's ``--cpu-shares`` (2 to 262144). Default: the kernel's."""
    pids_limit: int | None
    """Most processes and threads the container may have at once. Default: no limit."""
    disk_size: int | str | None
    """Size of the writable layer (a tmpfs: the host's memory). Default: 1 GiB, or a quarter
    of RAM on a smaller host. Refused with ``persist``, whose layer is on disk."""
    persist: bool
    """Keep the writable layer on disk, in ``$SANDKIT_HOME/containers/<id>/``, instead of the
    tmpfs: the container may then be stopped and started again with its files, as Docker's
    are, until `remove()`. Default False (the tmpfs, faster and gone with the container)."""
    disk_inodes: int | None
    """Most files the writable layer may hold. Default: one per 4 KiB of ``disk_size``
    (between 4096 and 1048576)."""
    rlimits: Mapping[str, int | tuple[int, int]] | None
    """Per-process rlimits by name, a value or (soft, hard): ``{"nofile": 1024}``."""
    lifetime: float | None
    """Seconds after which the init kills everything and the container ends. Default: none."""
    max_output: int | None
    """Bytes an exec keeps of each of stdout and stderr, unless the exec says otherwise
    (default 16 MiB; the rest is read and dropped)."""
    accounting: bool
    """Give the container a cgroup even without limits, for `stats()` and per-exec usage
    (any limit implies it). Default False."""
    cap_add: Sequence[str]
    """Capabilities added to Docker's default set ("NET_ADMIN", "ALL", ...)."""
    cap_drop: Sequence[str]
    """Capabilities removed from Docker's default set ("NET_RAW", "ALL", ...)."""
    # -- the main process (service.py) --
    run: bool | Sequence[str]
    """Start the image's program as the container's main process (True: its Entrypoint + Cmd,
    by Docker's rules; a list: that Cmd instead), with the image's Env, WorkingDir and User
    (``env``, ``workdir``, ``user`` override them). Its output is kept (``logs()``), its end
    waited for (``wait()``), and the container stops when it ends. Default False: no main
    process, only what ``exec``/``spawn`` start."""
    entrypoint: str | Sequence[str] | None
    """Replaces the image's Entrypoint (as ``docker run --entrypoint``; then the image's Cmd
    is dropped too); "" or [] clears it. Needs ``run``."""
    restart: str
    """What happens when the main process ends, as ``docker run --restart``: "no" (the
    default: the container stops), "on-failure" or "on-failure:N" (a non-zero exit starts it
    again, at most N times), "always" and "unless-stopped" (every end does), after Docker's
    delays (100 ms, doubling, at most a minute)."""
    log_size: int | str
    """Bytes of the main process's latest output kept for ``logs()`` (a ring: older output
    goes). Default "1m"."""
    # -- readiness and health (issue 18 item 2) --
    healthcheck: Mapping[str, object] | None
    """The health check, over the image's HEALTHCHECK key by key, as ``docker run --health-*``:
    ``{"test": ["CMD", "pg_isready"]}`` (or ``["CMD-SHELL", "cmd"]``, or a str: a shell
    command), ``interval``, ``timeout``, ``start_period``, ``start_interval`` (seconds) and
    ``retries``; a key left out or 0 takes the image's, then Docker's default (30, 30, 0, 5, 3).
    ``{"test": ["NONE"]}`` turns the image's off. Checks run only in a container with a main
    process (``run=``); see `AsyncContainer.health`."""
    seccomp: SeccompSpec
    """The seccomp profile: "default" (the default, at least as strict as Docker's), None or
    "unconfined" (no filter), a Docker JSON profile (a dict, JSON text or a file path), or a
    `sandkit.security.SeccompProfile`."""

    # -- detached containers (issue 18 item 7) --
    detach: bool
    """Hand the container to a supervisor process of its own (as ``sandkit run -d``): it lives
    on after this process exits, until it is removed (`remove()`, ``sandkit rm -f``) or its
    ``lifetime`` is up, and any process of the same user reaches it with
    ``Container.attach(name)``. Default False: the container ends with this process."""
    name: str | None
    """The detached container's name, unique among this user's (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``);
    taken: `NameInUseError`. Default: a generated one, as Docker's (``c.name`` says which).
    Needs ``detach=True``."""


def check_option_names(options: Mapping[str, object]) -> None:
    """Refuse a keyword that is no option, as a signature would (TypeError), naming the ones
    there are: ``**options`` alone would take a misspelt limit silently."""
    unknown = sorted(options.keys() - ContainerOptions.__optional_keys__)
    if unknown:
        raise TypeError(
            f"{unknown[0]!r} is not a container option; the options are: "
            f"{', '.join(ContainerOptions.__annotations__)}"
        )
