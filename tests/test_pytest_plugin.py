"""The pytest fixtures sandkit installs, used by a test suite of their own."""

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow


def test_the_fixtures_start_and_stop_containers(pytester, busybox_dir):
    pytester.makepyfile(f"""
        import pytest
        import sandkit

        seen = []

        @pytest.mark.sandkit(image=sandkit.Image.from_directory({str(busybox_dir)!r}), hostname="box")
        def test_marked(sandkit_container):
            seen.append(sandkit_container)
            assert sandkit_container.exec(["hostname"]).stdout == b"box\\n"

        def test_default_is_the_host_image(sandkit_container):
            seen.append(sandkit_container)
            assert sandkit_container.exec(["python3", "-c", "print(1)"]).stdout == b"1\\n"

        def test_factory(sandkit_factory):
            a, b = sandkit_factory(), sandkit_factory(network="none")
            seen.extend([a, b])
            assert a.id != b.id

        def test_everything_was_stopped():
            assert len(seen) == 4 and not any(c.running for c in seen)
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=4)
