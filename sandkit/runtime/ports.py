"""Published ports: Docker's ``-p`` syntax and meaning, parsed into `PortSpec` values.

Where the bytes go is `forward`'s business; this module only says which host address and port
stand for which container port. One difference from Docker, on purpose: a port without a host
address is bound on 127.0.0.1 (Docker binds 0.0.0.0, every interface of the host).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias, cast

import attrs

from ..errors import PortSpecError

# A port published without a host address is reachable from this machine only.
DEFAULT_HOST_IP = "127.0.0.1"
PROTOCOLS = ("tcp", "udp")

# What `ports=` takes: Docker's strings or bare container ports (5432: an ephemeral host port,
# as "5432"), or a mapping of container port ("80", "53/udp", 80) to
# host port (int), None (an ephemeral port) or (host address, host port).
HostSide: TypeAlias = int | tuple[str, int | None] | None
PortsOption: TypeAlias = Sequence[str | int] | Mapping[int | str, HostSide]

_FIX = (
    'use Docker\'s syntax: "80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", with '
    '"/tcp" or "/udp" after the container port'
)


@attrs.frozen
class PortSpec:
    """One published port: ``host_ip:host_port`` on the host carries ``container_port/proto``."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = DEFAULT_HOST_IP
    host_port: int = 0  # 0: an ephemeral port, chosen by the kernel when bound

    @property
    def key(self) -> str:
        """How Docker names the container side: "80/tcp"."""
        return f"{self.container_port}/{self.proto}"


def _port_number(text: str, spec: object, *, allow_zero: bool = False) -> int:
    if not text.isdigit():
        if "-" in text:
            raise PortSpecError(
                f"port ranges are not supported ({spec!r}): publish each port on its own"
            )
        raise PortSpecError(f"invalid port {text!r} in {spec!r}: {_FIX}")
    number = int(text)
    if not (0 if allow_zero else 1) <= number <= 65535:
        raise PortSpecError(f"port {number} in {spec!r} is out of range: ports are 1 to 65535")
    return number


def _host_ip(text: str, spec: object) -> str:
    address = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise PortSpecError(
            f"invalid host address {text!r} in {spec!r}: an IPv4 or [IPv6] address"
        ) from None


def container_side(text: str, spec: object) -> tuple[int, str]:
    """ "80" or "53/udp" -> (80, "tcp") or (53, "udp")."""
    port, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOCOLS:
        raise PortSpecError(
            f"invalid protocol {proto!r} in {spec!r}: use tcp or udp (sctp is not supported)"
        )
    return _port_number(port, spec), proto


def parse_port(spec: str) -> PortSpec:
    """One of Docker's ``-p`` values: [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTO]."""
    if not isinstance(spec, str) or not spec:
        raise PortSpecError(f"invalid port {spec!r}: {_FIX}")
    host, sep, container = spec.rpartition(":")
    container_port, proto = container_side(container, spec)
    host_ip, host_port = DEFAULT_HOST_IP, 0
    if sep:
        ip_text, sep_ip, port_text = host.rpartition(":")
        if sep_ip:
            host_ip = _host_ip(ip_text, spec)
        if port_text:
            host_port = _port_number(port_text, spec)
        elif not sep_ip:
            raise PortSpecError(f"invalid port {spec!r}: no host port before ':' ({_FIX})")
    return PortSpec(container_port, proto, host_ip, host_port)


def _from_mapping(container: int | str, host: HostSide) -> PortSpec:
    spec = {container: host}
    container_port, proto = container_side(str(container), spec)
    host_ip, host_port = DEFAULT_HOST_IP, host
    if isinstance(host, tuple):
        if len(host) != 2:
            raise PortSpecError(
                f"invalid port {spec!r}: the host side is a port, None or (address, port)"
            )
        host_ip, host_port = _host_ip(str(host[0]), spec), host[1]
    if host_port is not None and (isinstance(host_port, bool) or not isinstance(host_port, int)):
        raise PortSpecError(f"invalid host port {host_port!r} in {spec!r}: an int, or None for any")
    port = 0 if host_port is None else _port_number(str(host_port), spec, allow_zero=True)
    return PortSpec(container_port, proto, host_ip, port)


def _as_text(spec: str | int) -> str:
    """A bare container port (an int, not a bool) as the string Docker would take for it."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return str(spec)
    return cast(str, spec)  # a string, or a wrong value that parse_port refuses by name


def parse_ports(ports: PortsOption | None) -> tuple[PortSpec, ...]:
    """The ``ports=`` option as `PortSpec` values; PortSpecError names what is wrong."""
    if not ports:
        return ()
    if isinstance(ports, str | int):
        raise PortSpecError(
            f"ports={ports!r} must be a list of strings (ports=[{str(ports)!r}]) or a dict"
        )
    if isinstance(ports, Mapping):
        specs = tuple(_from_mapping(container, host) for container, host in ports.items())
    elif isinstance(ports, Iterable):
        specs = tuple(parse_port(_as_text(spec)) for spec in ports)
    else:
        raise PortSpecError(f"ports={ports!r} must be a list of strings or a dict")
    _refuse_twice_bound(specs)
    return specs


def _refuse_twice_bound(specs: Sequence[PortSpec]) -> None:
    seen: set[tuple[str, int, str]] = set()
    for spec in specs:
        where = (spec.host_ip, spec.host_port, spec.proto)
        if spec.host_port and where in seen:
            raise PortSpecError(
                f"host port {spec.host_ip}:{spec.host_port}/{spec.proto} is published twice: "
                "give each published port its own host port"
            )
        seen.add(where)
