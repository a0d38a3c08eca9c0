"""The test images of real services and of Python (tests/service_images.py), loaded into the
tests' store; tests/examples/ takes the python image's fixtures from here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import service_images
from conftest import UNPRIVILEGED_USER


def archive_of(name: str) -> Path:
    """The cached archive of test image `name`, built first where it can be (as root, with
    debootstrap and the mirror: a minute or two, once per machine). Where it cannot, the test
    is skipped with the reason, or fails when SANDKIT_TEST_IMAGES_REQUIRED is set (CI)."""
    path = service_images.cached(name)
    if path is not None:
        return path
    reason = service_images.why_not_buildable()
    if reason is None:
        return service_images.ensure(name)
    message = (
        f"no {name} test image in {service_images.cache_dir()} and none can be built here: "
        f"{reason}; build them as root with `python -m tests.service_images build`"
    )
    if os.environ.get(service_images.REQUIRED_ENV):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_archive() -> Path:
    return archive_of("postgres")


@pytest.fixture(scope="session")
def redis_archive() -> Path:
    return archive_of("redis")


@pytest.fixture(scope="session")
def python_archive() -> Path:
    return archive_of("python")


def loaded(archive: Path):
    """The archive loaded into the tests' store, leased once: the lease's lock file stays for
    the session, and would otherwise count as a leak of the first test that uses the image."""
    import sandkit

    image = sandkit.Image.load(archive)
    with image.lease():
        pass
    return image


@pytest.fixture(scope="session")
def postgres_image(postgres_archive):
    return loaded(postgres_archive)


@pytest.fixture(scope="session")
def redis_image(redis_archive):
    return loaded(redis_archive)


@pytest.fixture(scope="session")
def python_image(python_archive):
    """Python 3.11 with matplotlib (numpy, Pillow): code sessions and examples/ run on it."""
    return loaded(python_archive)


@pytest.fixture
def rootless_image_users() -> Iterator[None]:
    """Rootless containers that run as the image's own users (postgres, redis): the
    unprivileged test user gets a subordinate id range for the test, which sandkit maps with
    newuidmap/newgidmap (issue 18 item 6)."""
    try:  # (item 6's tests, which come with it, give the test user its range)
        from test_subid import START, _subid_entries
    except ImportError:
        pytest.skip(
            "this sandkit maps only the caller's uid in rootless containers, so the image's own "
            "users cannot run: that is issue 18 item 6 (branch svc-subid), not merged here"
        )
    with _subid_entries(f"{UNPRIVILEGED_USER}:{START}:65536"):
        yield


@pytest.fixture(scope="session")
def volumes_made_once() -> None:
    """The tests' home has its volumes/ directory (made by the first volume, kept after it),
    so that a test's first volume is not counted as a leak."""
    import sandkit

    with sandkit.Volume():
        pass
