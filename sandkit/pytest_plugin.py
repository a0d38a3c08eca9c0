"""pytest fixtures for tests that need an isolated environment (where testcontainers would be).

Installed with sandkit (a ``pytest11`` entry point), so any test can ask for them:

    @pytest.mark.sandkit("postgres:16", env={"POSTGRES_PASSWORD": "x"})
    def test_query(sandkit_container):
        r = sandkit_container.exec(["psql", "-c", "select 1"])

    def test_two(sandkit_factory):
        a, b = sandkit_factory("host"), sandkit_factory("host", network="none")

    def test_linked(sandkit_factory, sandkit_network):
        db = sandkit_factory(image, network=sandkit_network, aliases=["db"])
        app = sandkit_factory(image, network=sandkit_network)   # reaches "db" by name

The marker and the factory take what `sandkit.Container` takes: the image, then
`sandkit.ContainerOptions` as keywords (annotate the factory with `ContainerFactory` to have them
checked). Every container a fixture started is stopped when its test ends, whatever the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, Unpack

import pytest

from .api import Container, ContainerOptions, ImageSource
from .network import Network


class ContainerFactory(Protocol):
    """The ``sandkit_factory`` fixture: call it as `sandkit.Container` is called."""

    def __call__(
        self, image: ImageSource = "host", **options: Unpack[ContainerOptions]
    ) -> Container: ...


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``sandkit`` marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        "sandkit(image='host', **options): the image (positional or image=) and the "
        "sandkit.ContainerOptions of the sandkit_container fixture",
    )


class _Factory:
    """The ``sandkit_factory`` fixture's value: starts containers, and stops them all at the
    end of the test (or earlier, for ``sandkit_network``, whose network must outlive them)."""

    def __init__(self) -> None:
        self._started: list[Container] = []

    def __call__(
        self, image: ImageSource = "host", **options: Unpack[ContainerOptions]
    ) -> Container:
        container = Container(image, **options).start()
        self._started.append(container)
        return container

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().stop()


@pytest.fixture
def sandkit_factory() -> Iterator[ContainerFactory]:
    """Call it as ``sandkit_factory(image="host", **options)`` to start containers."""
    factory = _Factory()
    yield factory
    factory.stop_all()


@pytest.fixture
def sandkit_network(sandkit_factory: ContainerFactory) -> Iterator[Network]:
    """A user network of the test's own (`sandkit.Network`), removed when the test ends, after
    the containers ``sandkit_factory`` started (it stops them first: pytest would tear this
    fixture down before the factory it depends on)."""
    with Network() as network:
        yield network
        assert isinstance(sandkit_factory, _Factory)
        sandkit_factory.stop_all()


@pytest.fixture
def sandkit_container(
    request: pytest.FixtureRequest, sandkit_factory: ContainerFactory
) -> Container:
    """One started container, made from the test's ``@pytest.mark.sandkit(...)`` (default: the
    ``host`` image with sandkit's defaults)."""
    marker = request.node.get_closest_marker("sandkit")
    if marker is None:
        return sandkit_factory()
    if len(marker.args) > 1 or (marker.args and "image" in marker.kwargs):
        raise pytest.UsageError(
            f"@pytest.mark.sandkit takes one image, positionally or as image=, then keyword "
            f"options: not args={marker.args!r} with {sorted(marker.kwargs)}"
        )
    return sandkit_factory(*marker.args, **marker.kwargs)
