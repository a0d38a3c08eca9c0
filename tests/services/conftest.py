"""The test images of real services (tests/service_images.py), loaded into the tests' store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import service_images


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
def postgres_image(postgres_archive):
    import sandkit

    return sandkit.Image.load(postgres_archive)


@pytest.fixture(scope="session")
def redis_image(redis_archive):
    import sandkit

    return sandkit.Image.load(redis_archive)
