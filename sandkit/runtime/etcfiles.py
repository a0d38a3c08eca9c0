"""The /etc/hosts and /etc/resolv.conf of a container on a sandkit network, as Docker writes them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .. import errors

# Docker's lines for the loopback and the IPv6 multicast names, before the container's own.
_STANDARD_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def hosts(hostname: str, address: str, aliases: Iterable[str] = ()) -> bytes:
    """/etc/hosts: the standard names, then ``address`` with ``hostname`` and ``aliases``."""
    names = [_name(hostname), *(_name(a) for a in aliases)]
    lines = [*_STANDARD_HOSTS, (_address(address), " ".join(names))]
    return "".join(f"{addr}\t{text}\n" for addr, text in lines).encode()


def resolv_conf(nameserver: str, search: Iterable[str] = ()) -> bytes:
    """/etc/resolv.conf that sends every query to ``nameserver``, with ``search`` domains."""
    domains = [_name(d) for d in search]
    lines = [f"search {' '.join(domains)}\n"] if domains else []
    lines.append(f"nameserver {_address(nameserver)}\n")
    return "".join(lines).encode()


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise errors.ContainerStartError(f"{text!r} is not an IP address") from None


def _name(text: str) -> str:
    # One token of a line: whitespace, a comment sign or a NUL would make it several, or none.
    if not text or any(c.isspace() or c in "#\0" for c in text):
        raise errors.ContainerStartError(
            f"{text!r} cannot be a host name or domain in /etc/hosts or /etc/resolv.conf"
        )
    return text
