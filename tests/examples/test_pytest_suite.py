"""examples/pytest_suite: a user's test suite on sandkit's pytest fixtures, run by pytest."""

from __future__ import annotations

import pytest

from .conftest import EXAMPLES, run_example

pytestmark = pytest.mark.slow


def test_the_example_suite_passes_with_its_fixtures(example_env):
    done = run_example(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(EXAMPLES / "pytest_suite")],
        example_env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout  # (the plot too: the test image has matplotlib)
    assert "skipped" not in done.stdout
