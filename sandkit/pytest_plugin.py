"""pytest fixtures for tests that need an isolated environment (where testcontainers would be).

Installed with sandkit (a ``pytest11`` entry point), so any test can ask for them::

    @pytest.mark.sandkit(image="postgres:16", env={"POSTGRES_PASSWORD": "x"})
    def test_query(sandkit_container):
        r = sandkit_container.exec(["psql", "-c", "select 1"])

    def test_two(sandkit_factory):
        a, b = sandkit_factory("host"), sandkit_factory("host", network="none")

Every container a fixture started is stopped when its test ends, whatever the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .api import Container, Image


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandkit(image='host', **options): the image and sandkit.Container options of the "
        "sandkit_container fixture",
    )


@pytest.fixture
def sandkit_factory() -> Iterator[Callable[..., Container]]:
    """Call it as ``sandkit_factory(image="host", **options)`` to start containers."""
    started: list[Container] = []

    def start(image: Image | str = "host", **options: Any) -> Container:
        container = Container(image, **options).start()
        started.append(container)
        return container

    yield start
    for container in reversed(started):
        container.stop()


@pytest.fixture
def sandkit_container(request: pytest.FixtureRequest, sandkit_factory: Callable[..., Container]) -> Container:
    """One started container, made from the test's ``@pytest.mark.sandkit(...)`` (default: the
    ``host`` image with sandkit's defaults)."""
    marker = request.node.get_closest_marker("sandkit")
    options = dict(marker.kwargs) if marker else {}
    return sandkit_factory(options.pop("image", "host"), **options)
