"""Tests that run code in containers, with the fixtures sandkit installs into pytest.

    pip install sandkit pytest
    sandkit pull python:3.12-slim       # any image with python3 (3.8 or later); or set
                                        # SANDKIT_EXAMPLE_IMAGE to one in your store
    pytest examples/pytest_suite

`python` is one container for the whole session (started when a test first asks for it, removed
at the end): its interpreter keeps its state between tests, as a notebook does, so tests that
share it must not depend on each other's variables. A test that needs a clean container takes
`sandkit_container` (one per test, configured by the `sandkit` marker) or `sandkit_factory`
(as many as it likes). Every container is removed when its fixture's scope ends, pass or fail.
"""

import os

import pytest

from sandkit.pytest_plugin import container_fixture

IMAGE = os.environ.get("SANDKIT_EXAMPLE_IMAGE", "python:3.12-slim")

python = container_fixture(IMAGE, scope="session", network="none")


def test_state_persists_between_snippets(python):
    python.run_code("import statistics\nsamples = [3, 1, 4, 1, 5]")
    result = python.run_code("statistics.median(samples)")
    assert result.value == "3"
    assert result.error is None


def test_an_exception_is_part_of_the_result(python):
    result = python.run_code("print('before')\n1 / 0")
    assert result.stdout == "before\n"
    assert result.error.name == "ZeroDivisionError"
    assert "line 2" in result.error.traceback  # (of the snippet)


def test_a_plot_comes_back_as_png(python):
    if python.run_code("import matplotlib").error:
        pytest.skip(f"{IMAGE} has no matplotlib")
    result = python.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])")
    assert len(result.figures) == 1
    assert result.figures[0].startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.sandkit(IMAGE, network="none", memory="64m")
def test_a_snippet_cannot_reach_the_network(sandkit_container):
    result = sandkit_container.run_code(
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)"
    )
    assert result.error.name == "OSError"  # network unreachable: there is only loopback


def test_each_container_starts_clean(sandkit_factory):
    first = sandkit_factory(IMAGE)
    first.run_code("open('/tmp/left-behind', 'w').write('state')")
    second = sandkit_factory(IMAGE)
    assert second.run_code("import os\nos.path.exists('/tmp/left-behind')").value == "False"
    assert first.exec(["cat", "/tmp/left-behind"]).stdout == b"state"
