"""A running container's networks: `set_egress`, `connect` and `disconnect`, root and
rootless, against real connections (the attacker script's "connect" says what a program in the
container gets: "connected ...", "refused" at once, or "timeout")."""

from __future__ import annotations

import os

import pytest
import trio

import sandkit
from sandkit import errors

from .helpers import greeting_server, host_address
from .test_attacks import (  # noqa: F401 - fixtures
    ask,
    in_mode,
    resolve_allowed_example,
    run,
    upstream,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes networks as root and as another user"),
]

GREETED = "connected hello from the host"


def _connect_before_and_after_swaps(address: str, port: int) -> list[str]:
    seen = []
    with sandkit.Container("host", network="bridge", egress=[address]) as c:
        seen.append(run(c, "connect", address, port))
        c.set_egress([])
        seen.append(run(c, "connect", address, port))
        c.set_egress([f"{address}:{port}/tcp"])
        seen.append(run(c, "connect", address, port))
    return seen


def test_set_egress_takes_effect_at_once_both_ways(in_mode):
    address = host_address()
    with greeting_server(address) as port:
        assert in_mode(_connect_before_and_after_swaps, address, port) == [
            GREETED,
            "refused",
            GREETED,
        ]


def _async_swap(address: str, port: int) -> list[str]:
    async def main() -> list[str]:
        async with sandkit.AsyncContainer("host", network="bridge", egress=[]) as c:
            connect = ["/usr/bin/python3", "-c", _CONNECT, address, str(port)]
            before = (await c.exec(connect)).stdout.decode().strip()
            await c.set_egress([address])
            return [before, (await c.exec(connect)).stdout.decode().strip()]

    return trio.run(main)


_CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("connected", s.recv(100).decode())
except ConnectionRefusedError:
    print("refused")
"""


def test_set_egress_async(in_mode):
    address = host_address()
    with greeting_server(address) as port:
        assert in_mode(_async_swap, address, port) == ["refused", GREETED]


def _dns_follows_the_policy() -> list[str]:
    with sandkit.Container("host", network="bridge", egress=[]) as c:
        answers = [ask(c, "allowed.example")]
        c.set_egress(["allowed.example:443"])
        answers.append(ask(c, "allowed.example"))
        c.set_egress([])
        answers.append(ask(c, "allowed.example"))
    return answers


def test_the_resolver_follows_set_egress(in_mode, upstream, monkeypatch):
    resolve_allowed_example(monkeypatch)
    assert in_mode(_dns_follows_the_policy) == ["REFUSED", "NOERROR 192.0.2.99", "REFUSED"]


def test_a_bad_policy_is_refused_and_the_old_one_stays():
    address = host_address()
    with (
        greeting_server(address) as port,
        sandkit.Container("host", network="bridge", egress=[address]) as c,
    ):
        with pytest.raises(errors.EgressError, match="accepted forms"):
            c.set_egress(["10.0.0.1/8"])
        with pytest.raises(errors.EgressError):
            c.set_egress(["no-such-host.invalid"])
        assert run(c, "connect", address, port) == GREETED


def test_set_egress_without_a_network_says_what_to_do():
    with sandkit.Container("host") as c:
        with pytest.raises(errors.NetworkSpecError, match=r"on no network.*connect"):
            c.set_egress([])
        assert c.exec(["true"]).exit_code == 0
    with pytest.raises(errors.ContainerNotRunningError):
        c.set_egress([])
