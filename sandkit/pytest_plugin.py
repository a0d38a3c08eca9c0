"""pytest fixtures for tests that need an isolated environment (where testcontainers would be).

Installed with sandkit (a ``pytest11`` entry point), so any test can ask for them:

    @pytest.mark.sandkit("redis-test", run=True, ports=[6379], wait_for_port=6379)
    def test_cache(sandkit_container):
        host, port = sandkit_container.port(6379)

    def test_two(sandkit_factory):
        a, b = sandkit_factory("host"), sandkit_factory("host", network="none")

    def test_linked(sandkit_factory, sandkit_network):
        db = sandkit_factory(image, network=sandkit_network, aliases=["db"])
        app = sandkit_factory(image, network=sandkit_network)   # reaches "db" by name

    # one database for the whole session (or module, package, class), started on first use:
    postgres = sandkit.pytest_plugin.container_fixture(
        "postgres-test", scope="session", run=True, ports=[5432], wait_for_port=5432
    )

The marker, the factory and `container_fixture` take what `sandkit.Container` takes (the image,
then `sandkit.ContainerOptions` as keywords; annotate the factory with `ContainerFactory` to have
them checked), plus the readiness waits of `Readiness`: the container is returned only once
they passed, and a wait that fails stops it and fails the test with the service's last log
lines. Every container a fixture started is removed when its scope ends, whatever the outcome.

Under pytest-xdist each worker is a process of its own, so it has its own containers (and
sessions: a session-scoped container is started once per worker); a detached container's
`name=` is made unique per worker by appending the worker's id (``db`` becomes ``db-gw1``).
Containers are removed at the end of their scope, detached ones too (`Container.remove`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, Unpack

import pytest

from .api import Container, ContainerOptions, ImageSource
from .network import Network


class Readiness(TypedDict, total=False):
    """What a fixture waits for after starting a container, before handing it to the test
    (each is the argument of the `Container` method of the same name)."""

    #: a port listening inside the container (`Container.wait_for_port`)
    wait_for_port: int
    #: a regular expression in the main process's output (`Container.wait_for_log`)
    wait_for_log: str | bytes
    #: an HTTP path answering 200 (`Container.wait_for_http`); its port is ``wait_for_port``'s,
    #: or the first of ``ports``
    wait_for_http: str
    #: a command that must exit with 0 (`Container.wait_for_exec`)
    wait_for_exec: Sequence[str]
    #: wait until the image's HEALTHCHECK (or ``healthcheck=``) reports "healthy"
    wait_for_healthy: bool
    #: seconds each wait may take (default 60)
    wait_timeout: float


class FixtureOptions(ContainerOptions, Readiness, total=False):
    """The keywords of the marker, the factory and `container_fixture`."""


_READINESS = frozenset(Readiness.__annotations__)
DEFAULT_WAIT_TIMEOUT = 60.0


class ContainerFactory(Protocol):
    """The ``sandkit_factory`` fixture: call it as `sandkit.Container` is called, with the
    readiness waits of `Readiness` besides."""

    def __call__(
        self, image: ImageSource = "host", **options: Unpack[FixtureOptions]
    ) -> Container: ...


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``sandkit`` marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        "sandkit(image='host', **options): the image (positional or image=), the "
        "sandkit.ContainerOptions and the readiness waits (wait_for_port=, wait_for_log=, "
        "wait_for_http=, wait_for_exec=, wait_for_healthy=, wait_timeout=) of the "
        "sandkit_container fixture",
    )


def start_ready(image: ImageSource = "host", **options: Unpack[FixtureOptions]) -> Container:
    """A started container that passed the readiness waits in ``options``; on a failed wait it
    is stopped again and the wait's error (with the service's last log lines) propagates."""
    container_options: dict[str, Any] = {}
    waits: dict[str, Any] = {}
    for key, value in options.items():
        (waits if key in _READINESS else container_options)[key] = value
    name = container_options.get("name")
    if isinstance(name, str):
        container_options["name"] = worker_unique(name)
    container = Container(image, **container_options).start()
    try:
        _wait_until_ready(container, waits, container_options.get("ports"))
    except BaseException:
        container.remove()
        raise
    return container


def worker_unique(name: str) -> str:
    """``name`` made unique per pytest-xdist worker (unchanged outside xdist): the workers
    share the user's container names, and each starts the same fixtures."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{name}-{worker}" if worker else name


def _wait_until_ready(container: Container, waits: Mapping[str, Any], ports: object) -> None:
    timeout = float(waits.get("wait_timeout", DEFAULT_WAIT_TIMEOUT))
    port = waits.get("wait_for_port")
    if port is not None:
        container.wait_for_port(port, timeout=timeout)
    pattern = waits.get("wait_for_log")
    if pattern is not None:
        container.wait_for_log(pattern, timeout=timeout)
    path = waits.get("wait_for_http")
    if path is not None:
        http_port = port if port is not None else _first_port(ports)
        container.wait_for_http(path, port=http_port, timeout=timeout)
    argv = waits.get("wait_for_exec")
    if argv is not None:
        container.wait_for_exec(list(argv), timeout=timeout)
    if waits.get("wait_for_healthy"):
        container.wait_for_healthy(timeout=timeout)


def _first_port(ports: object) -> int:
    """The container port of the first of ``ports`` (as `ContainerOptions.ports` takes them:
    a list of ports or "host:container/proto" strings, or a mapping keyed by container port)."""
    first: object = None
    if isinstance(ports, Mapping):
        first = next(iter(ports), None)
    elif isinstance(ports, Sequence) and not isinstance(ports, str) and ports:
        first = ports[0]
    if isinstance(first, int):
        return first
    if isinstance(first, str):
        container_side = first.rsplit(":", 1)[-1].split("/", 1)[0]
        if container_side.isdigit():
            return int(container_side)
    raise pytest.UsageError(
        "wait_for_http needs a port: give wait_for_port=, or publish the port with ports=[...]"
    )


class _Factory:
    """The value of the factory fixtures: starts containers, and stops them all at the end of
    its scope (or earlier, for ``sandkit_network``, whose network must outlive them)."""

    def __init__(self) -> None:
        self._started: list[Container] = []

    def __call__(self, image: ImageSource = "host", **options: Unpack[FixtureOptions]) -> Container:
        container = start_ready(image, **options)
        self._started.append(container)
        return container

    def stop_all(self) -> None:
        while self._started:
            self._started.pop().remove()  # stop(), and a detached one's state goes too


@pytest.fixture
def sandkit_factory() -> Iterator[ContainerFactory]:
    """Call it as ``sandkit_factory(image="host", **options)`` to start containers; they are
    stopped when the test ends."""
    factory = _Factory()
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def sandkit_session_factory() -> Iterator[ContainerFactory]:
    """As ``sandkit_factory``, but its containers live until the test session ends (per xdist
    worker): for fixtures of a wider scope that share a service between tests."""
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
    ``host`` image with sandkit's defaults) and ready as its waits say."""
    marker = request.node.get_closest_marker("sandkit")
    if marker is None:
        return sandkit_factory()
    if len(marker.args) > 1 or (marker.args and "image" in marker.kwargs):
        raise pytest.UsageError(
            f"@pytest.mark.sandkit takes one image, positionally or as image=, then keyword "
            f"options: not args={marker.args!r} with {sorted(marker.kwargs)}"
        )
    return sandkit_factory(*marker.args, **marker.kwargs)


Scope = Literal["session", "package", "module", "class", "function"]


def container_fixture(
    image: ImageSource = "host",
    *,
    scope: Scope = "session",
    fixture_name: str | None = None,
    **options: Unpack[FixtureOptions],
) -> Callable[..., Any]:
    """A fixture, to assign to a name in a test module or conftest.py, whose value is one
    container started from ``image`` with ``options`` (and ready as its waits say) when the
    first test of ``scope`` asks for it, and stopped when that scope ends: a database started
    once per test session. ``fixture_name`` is the fixture's name (default: the variable it is
    assigned to, as for any pytest fixture)."""

    def fixture() -> Iterator[Container]:
        container = start_ready(image, **options)
        try:
            yield container
        finally:
            container.remove()

    return pytest.fixture(scope=scope, name=fixture_name)(fixture)
