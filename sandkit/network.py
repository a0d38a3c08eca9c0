"""User networks in the public API: `Network` (sync) and `AsyncNetwork` (its async twin).

    with sandkit.Network() as net:
        with sandkit.Container(image, network=net, aliases=["db"]) as db, \\
             sandkit.Container(image, network=net) as app:
            app.exec(["wget", "-qO-", "http://db:8080/"])

A network is a definition (a name, an id, an IPv4 subnet) that containers join with
``network=``; containers on one network reach each other by name and alias, and nothing on
another network. What makes it work (a network namespace with a bridge, a resolver, rules and a
user-mode stack for outbound traffic, held by one keeper process) exists only while containers
are on it, so a network with no container costs nothing but its file.
"""

from __future__ import annotations

import ipaddress
from types import TracebackType
from typing import Self

import anyio.to_thread

from ._owned import OwnedResource
from .errors import NetworkInUseError
from .net import store
from .net.store import NetworkRecord

__all__ = ["AsyncNetwork", "Network"]


class Network(OwnedResource[NetworkRecord]):
    """A user network: ``Network(name=None, subnet=None, internal=False, labels=None)``.

    Entering the ``with`` block (or `create`) records the network; leaving it removes the
    network again (`remove`), which must come after the containers on it have stopped.
    ``name=None`` picks a unique name; ``subnet=None`` a free /24 of 10.89.0.0/16;
    ``internal=True`` gives no outbound access at all (containers reach only each other).
    `Network.get` returns a network that exists already (made by the CLI, say), which the
    ``with`` block then does not remove.
    """

    _kind = "network"
    _in_use = NetworkInUseError

    def __init__(
        self,
        name: str | None = None,
        *,
        subnet: str | ipaddress.IPv4Network | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
    ) -> None:
        """Describes the network; nothing is made until `create` (or the ``with`` block)."""
        if name is not None:
            store.check_name(name)
        self._wanted_name = name
        self._subnet = subnet
        self._internal = internal
        self._labels = dict(labels or {})
        self._record: NetworkRecord | None = None
        self._owned = False

    @classmethod
    def get(cls, name_or_id: str) -> Network:
        """The existing network of that name or id (NetworkNotFoundError if none)."""
        network = cls.__new__(cls)
        network._record = store.get_network(name_or_id)
        network._owned = False
        return network

    @classmethod
    def all(cls) -> list[Network]:
        """Every network, the built-in ``bridge`` first."""
        networks = []
        for record in store.list_networks():
            network = cls.__new__(cls)
            network._record = record
            network._owned = False
            networks.append(network)
        return networks

    def create(self) -> Self:
        """Records the network (NetworkExistsError if the name is taken) and returns it."""
        if self._record is None:
            self._record = store.create_network(
                self._wanted_name,
                subnet=self._subnet,
                internal=self._internal,
                labels=self._labels,
            )
            self._owned = True
        return self

    def remove(self) -> None:
        """Removes the network; NetworkInUseError while containers are on it."""
        record = self._created()
        store.remove_network(record.id)
        self._owned = False

    @property
    def id(self) -> str:
        """The network's id: 64 hex digits."""
        return self._created().id

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """The network's IPv4 subnet; containers get addresses from it."""
        return self._created().subnet

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The network's gateway: also where its containers' resolver answers."""
        return self._created().gateway

    @property
    def internal(self) -> bool:
        """True when the network has no outbound access."""
        return self._created().internal

    def __repr__(self) -> str:
        state = f"{self._record.subnet}" if self._record else "not created"
        return f"<sandkit.Network {self.name!r} {state}>"


class AsyncNetwork(Network):
    """`Network` for async code: ``async with sandkit.AsyncNetwork() as net: ...``.

    The definition lives in files under a lock, so the few blocking calls run on a worker
    thread."""

    async def acreate(self) -> Self:
        """`create`, off the event loop."""
        return await anyio.to_thread.run_sync(self.create)

    async def aremove(self) -> None:
        """`remove`, off the event loop."""
        await anyio.to_thread.run_sync(self.remove)

    async def __aenter__(self) -> Self:
        return await self.acreate()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.__exit__, exc_type, exc, tb)
