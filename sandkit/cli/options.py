"""The flags of `run` and `exec`, and how Docker reads their values.

Everything here is checked in the CLI process, before anything is started, so that a bad value
costs nothing but a message and exit code 125.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .. import errors
from ..sizes import parse_size

if TYPE_CHECKING:
    from ._runtime import Mount


class UsageError(errors.SandkitError):
    """A flag's value cannot be used (exit 125, like Docker's flag errors)."""


def add_process_options(p: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `exec`: how the one process is started."""
    p.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run in the background and print the container ID (see `sandkit ps`)",
    )
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="keep STDIN open and pass it to the command",
    )
    p.add_argument(
        "-t", "--tty", action="store_true", help="allocate a pseudo-TTY (use with -i for a shell)"
    )
    p.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable (KEY alone passes the caller's value)",
    )
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read environment variables from a file of KEY=VALUE lines",
    )
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] or uid[:gid] to run as")


def add_container_options(p: argparse.ArgumentParser) -> None:
    """Flags of `run` that shape the container itself."""
    # -h means --hostname here, as in `docker run`: the parser is made with add_help=False.
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("--rm", action="store_true", help="remove the container's state when it exits")
    p.add_argument("--hostname", "-h", dest="hostname", help="container host name")
    p.add_argument("--entrypoint", help="override the image's ENTRYPOINT ('' clears it)")
    p.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="SRC:DST[:ro]",
        help="mount a named volume or bind-mount an absolute host path",
    )
    p.add_argument(
        "--tmpfs",
        action="append",
        default=[],
        metavar="DST[:size=N,mode=M]",
        help="mount a fresh tmpfs",
    )
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument(
        "--network",
        "--net",
        default="none",
        metavar="NETWORK",
        help="'none' (loopback only, the default), 'bridge' (an address of its own, outbound "
        "subject to --egress), a user network's name (sandkit network create), or 'host' "
        "(not isolated)",
    )
    p.add_argument(
        "--network-alias",
        "--net-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the container is reached by on its network",
    )
    p.add_argument(
        "--egress",
        action="append",
        default=[],
        metavar="TARGET[:PORT[/PROTO]]",
        help="on a network, what the container may reach outside it: 'all' (the default), "
        "'none', or one CIDR, address or host name per flag (sandkit's own flag)",
    )
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:][HOST_PORT:]PORT[/PROTO]",
        help="publish a container port on the host (on 127.0.0.1 unless an IP is given)",
    )
    p.add_argument(
        "-P",
        "--publish-all",
        action="store_true",
        help="publish every port the image exposes on an ephemeral host port",
    )
    p.add_argument("-m", "--memory", help="memory limit, e.g. 256m")
    p.add_argument("--memory-swap", help="memory plus swap limit; -1 for unlimited swap")
    p.add_argument("--cpus", type=float, help="number of CPUs, e.g. 1.5")
    p.add_argument("-c", "--cpu-shares", type=int, help="relative CPU weight")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument(
        "--storage-opt",
        action="append",
        default=[],
        metavar="size=N",
        help="size of the writable layer, e.g. size=4g (default 1g, or a quarter of RAM if less)",
    )
    p.add_argument(
        "--ulimit",
        action="append",
        default=[],
        metavar="NAME=SOFT[:HARD]",
        help="set a resource limit, e.g. nofile=1024:2048",
    )
    p.add_argument(
        "--cap-add", action="append", default=[], metavar="CAP", help="add a Linux capability"
    )
    p.add_argument(
        "--cap-drop", action="append", default=[], metavar="CAP", help="drop a Linux capability"
    )
    p.add_argument(
        "--security-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="seccomp=PROFILE.json|unconfined, or no-new-privileges (always on)",
    )
    _add_health_options(p)


# --- health checks (issue 18 item 2) ----------------------------------------------------------

# Docker's --health-* flags that take a duration, and the healthcheck= key each one sets.
_HEALTH_DURATIONS = {
    "--health-interval": "interval",
    "--health-timeout": "timeout",
    "--health-start-period": "start_period",
    "--health-start-interval": "start_interval",
}


def _add_health_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--health-cmd", metavar="STRING", help="command to run to check health")
    helps = {
        "interval": "time between running the check (ms|s|m|h) (default 0s: the image's, or 30s)",
        "timeout": "maximum time to allow one check to run (ms|s|m|h) (default 0s: 30s)",
        "start_period": "start period for the container to initialize before starting "
        "health-retries countdown (ms|s|m|h) (default 0s)",
        "start_interval": "time between running the check during the start period "
        "(ms|s|m|h) (default 0s: 5s)",
    }
    for flag, key in _HEALTH_DURATIONS.items():
        p.add_argument(flag, metavar="DURATION", default="0s", help=helps[key])
    p.add_argument(
        "--health-retries",
        type=int,
        default=0,
        metavar="INT",
        help="consecutive failures needed to report unhealthy (default 0: the image's, or 3)",
    )
    p.add_argument(
        "--no-healthcheck", action="store_true", help="disable any container-specified HEALTHCHECK"
    )


def healthcheck(args: argparse.Namespace) -> dict[str, object] | None:
    """The ``healthcheck=`` option of the --health-* flags, read as ``docker run`` reads them
    (Go durations; none given: None, the image's check as it is)."""
    from ._runtime import parse_go_duration

    wanted: dict[str, object] = {}
    for flag, key in _HEALTH_DURATIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise UsageError(f'invalid argument "{value}" for "{flag}" flag: {exc}') from None
        if seconds < 0:
            raise UsageError(f"{flag} cannot be negative")
        if seconds:
            wanted[key] = seconds
    if args.health_retries < 0:
        raise UsageError("--health-retries cannot be negative")
    if args.health_retries:
        wanted["retries"] = args.health_retries
    if args.health_cmd:
        wanted["test"] = ["CMD-SHELL", args.health_cmd]
    if args.no_healthcheck:
        if wanted:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"test": ["NONE"]}
    return wanted or None


# --- environment ---------------------------------------------------------------------------------


def environment(
    env_files: Sequence[str], entries: Sequence[str], caller: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """Docker's order: --env-file files first, then -e, later values win."""
    env: dict[str, str] = {}
    for path in env_files:
        env.update(_env_pairs(_read_env_file(path), caller))
    env.update(_env_pairs(entries, caller))
    return env


def _read_env_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the env file {path!r}: {exc.strerror}") from None
    # Docker takes each line literally (no quotes, no expansion), skipping blanks and comments.
    return [line for line in (raw.lstrip() for raw in lines) if line and not line.startswith("#")]


def _env_pairs(entries: Iterable[str], caller: Mapping[str, str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable {entry!r}: write KEY=VALUE")
        if sep:
            pairs[key] = value
        elif key in caller:  # `-e NAME` passes the caller's value; unset names are left out
            pairs[key] = caller[key]
    return pairs


# --- mounts --------------------------------------------------------------------------------------


def volume(spec: str) -> Mount:
    """`-v SRC:DST[:ro|rw]`: SRC a volume name, or an absolute (or ./relative) host path."""
    from ._runtime import Mount

    if ":" not in spec:
        raise UsageError(
            f"invalid volume {spec!r}: anonymous volumes are not supported; "
            "write NAME:/container/path or /host/path:/container/path (or use --tmpfs for "
            "scratch space)"
        )
    mount = Mount.parse(spec)
    if mount.type == "volume":
        return mount
    if not mount.source.startswith(("/", ".")):
        raise UsageError(
            f"invalid volume {spec!r}: {mount.source!r} is neither a volume name (2 to 128 "
            "letters, digits, '_', '.' or '-') nor a host path: give an absolute host path"
        )
    # Absolute now: a detached container is started from another working directory.
    return Mount.bind(os.path.abspath(mount.source), mount.target, read_only=mount.read_only)


def tmpfs(spec: str) -> Mount:
    """`--tmpfs DST[:size=64m,mode=1777,rw]`."""
    from ._runtime import Mount

    target, _, opts = spec.partition(":")
    size, mode = 0, 0o1777
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            size = parse_size(value)
        elif key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise UsageError(
                    f"invalid tmpfs mode {value!r}: write octal, e.g. mode=1777"
                ) from None
        elif key != "rw":  # noexec, nosuid, ro...: refused rather than silently not applied
            raise UsageError(f"tmpfs option {opt!r} is not supported: use size=N, mode=OCTAL or rw")
    return Mount.tmpfs(target, size=size, mode=mode)


# --- limits and security ------------------------------------------------------------------------


def storage_size(storage_opts: Sequence[str]) -> str | None:
    """The writable layer's size in `--storage-opt size=N` values (Docker's option)."""
    size = None
    for opt in storage_opts:
        key, sep, value = opt.partition("=")
        if key != "size" or not sep:
            raise UsageError(f"storage option {opt!r} is not supported: use size=N, e.g. size=4g")
        parse_size(value)  # a bad size is a usage error here, not at start
        size = value
    return size


def ulimits(entries: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``--ulimit`` entries (``NAME=SOFT[:HARD]``) as a dict of (soft, hard); `UsageError` for a
    malformed one."""
    limits: dict[str, tuple[int, int]] = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        soft, _, hard = values.partition(":")
        try:
            limits[name] = (int(soft), int(hard or soft))
        except ValueError:
            raise UsageError(
                f"invalid ulimit {entry!r}: write NAME=SOFT[:HARD], e.g. nofile=1024:2048"
            ) from None
        if not sep or not name:
            raise UsageError(f"invalid ulimit {entry!r}: write NAME=SOFT[:HARD]")
    return limits


def published_ports(specs: Sequence[str]) -> list[str]:
    """`-p` values, checked now (a malformed one is exit 125 before anything starts)."""
    from ._runtime import parse_port

    for spec in specs:
        parse_port(spec)
    return list(specs)


def seccomp(security_opts: Sequence[str]) -> str:
    """The seccomp choice in `--security-opt` values: "default", "unconfined" or a profile path."""
    profile = "default"
    for opt in security_opts:
        key, sep, value = opt.replace(":", "=", 1).partition("=")  # Docker also takes `seccomp:x`
        if key == "no-new-privileges" and value in ("", "true"):
            continue  # sandkit always sets no_new_privs
        if key != "seccomp" or not sep or not value:
            raise UsageError(
                f"security option {opt!r} is not supported: use seccomp=PROFILE.json, "
                "seccomp=unconfined or no-new-privileges"
            )
        profile = value if value == "unconfined" else os.path.abspath(value)
    return profile


def egress(values: Sequence[str]) -> str | list[str] | None:
    """``--egress`` flags as the ``egress=`` option: none given = the default, ``none`` = an
    empty allowlist, ``all`` alone = "all", anything else = the list."""
    if not values:
        return None
    if list(values) == ["none"]:
        return []
    if list(values) == ["all"]:
        return "all"
    return list(values)


# --- labels --------------------------------------------------------------------------------------


def labels(pairs: Iterable[str], error: type[errors.SandkitError]) -> dict[str, str]:
    """``--label KEY=VALUE`` flags (a bare ``KEY`` has an empty value, as in Docker); a pair
    without a key raises ``error``, the error type of the command's area."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key:
            raise error(f"invalid label {pair!r}: use KEY=VALUE")
        found[key] = value if sep else ""
    return found
