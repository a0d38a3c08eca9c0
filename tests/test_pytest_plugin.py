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


def test_the_marker_takes_the_image_positionally_as_container_does(pytester, busybox_dir):
    pytester.makepyfile(f"""
        import pytest
        import sandkit

        BUSYBOX = sandkit.Image.from_directory({str(busybox_dir)!r})

        @pytest.mark.sandkit(BUSYBOX, hostname="box")
        def test_positional(sandkit_container):
            # the busybox root has no /usr: the host image (the default) has one
            assert sandkit_container.exec(["test", "-d", "/usr"]).exit_code == 1
            assert sandkit_container.exec(["hostname"]).stdout == b"box\\n"

        @pytest.mark.sandkit(BUSYBOX, image="host")
        def test_two_images(sandkit_container):
            pass

        @pytest.mark.sandkit("host", memroy="1g")
        def test_a_misspelt_option(sandkit_container):
            pass
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*UsageError: @pytest.mark.sandkit takes one image, positionally or as image=*",
            "*TypeError: 'memroy' is not a container option; the options are: env, workdir,*",
        ]
    )


@pytest.mark.root
def test_a_network_per_test_with_names(pytester, busybox_dir):
    """`sandkit_network`: containers of the factory reach each other by alias on it, and the
    network is gone after the test, its containers first."""
    pytester.makepyfile(f"""
        import sandkit
        from sandkit.net import store

        BUSYBOX = sandkit.Image.from_directory({str(busybox_dir)!r})
        names = []

        def test_linked(sandkit_factory, sandkit_network):
            names.append(sandkit_network.name)
            db = sandkit_factory(BUSYBOX, network=sandkit_network, aliases=["db"])
            app = sandkit_factory(BUSYBOX, network=sandkit_network)
            address = db.networks[sandkit_network.name]
            found = app.exec(["nslookup", "db"]).stdout.decode()
            assert found.rstrip().endswith(f"Address: {{address}}")
            assert app.exec(["ping", "-c1", "-W2", "db"]).exit_code == 0

        def test_the_network_is_gone():
            assert names and names[0] not in [r.name for r in store.list_networks()]
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=2)
