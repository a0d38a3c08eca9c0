"""The examples of examples/ run as a newcomer runs them: each as its own program (python or
pytest in a subprocess), against the python test image (tests/service_images.py), which each
finds by its tag in the tests' store through SANDKIT_EXAMPLE_IMAGE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import service_images
from services.conftest import python_archive, python_image  # noqa: F401 (fixtures)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def example_env(python_image) -> dict[str, str]:
    """The environment of an example's process: the tests' store (SANDKIT_HOME) holding the
    python image, named by its tag."""
    return {**os.environ, "SANDKIT_EXAMPLE_IMAGE": service_images.PYTHON.tag}


def run_example(
    argv: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """Runs `python ARGV...` to its end (text output); fails the test past `timeout` s."""
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
