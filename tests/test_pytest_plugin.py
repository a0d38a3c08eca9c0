"""The pytest fixtures sandkit installs, used by a test suite of their own."""

import os

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


# --- services: readiness waits, wider scopes, xdist --------------------------------------------


def _processes_running(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (a container's processes are host
    processes too, in their own pid namespace)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_the_marker_waits_for_a_served_port_and_publishes_it(pytester, busybox_dir):
    """A service started from the marker is handed to the test only once its port answers
    HTTP; the test reaches it from the host through the published port."""
    pytester.makepyfile(f"""
        import httpx
        import pytest
        import sandkit

        BUSYBOX = sandkit.Image.from_directory({str(busybox_dir)!r})
        SERVE = ["sh", "-c", "sleep 0.5; echo hello > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]

        @pytest.mark.sandkit(BUSYBOX, run=SERVE, ports=[8080], wait_for_port=8080,
                             wait_for_http="/index.html")
        def test_served(sandkit_container):
            host, port = sandkit_container.port(8080)
            assert httpx.get(f"http://{{host}}:{{port}}/index.html").text == "hello\\n"
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=1)


def test_a_failed_wait_fails_the_test_with_the_log_and_stops_the_service(pytester, busybox_dir):
    marker = "sleep 86391"
    pytester.makepyfile(f"""
        import pytest
        import sandkit

        BUSYBOX = sandkit.Image.from_directory({str(busybox_dir)!r})

        def test_never_ready(sandkit_factory):
            sandkit_factory(BUSYBOX, run=["sh", "-c", "echo starting up, slowly; {marker}"],
                            wait_for_log="never printed", wait_timeout=1)
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*WaitTimeoutError*", "*starting up, slowly*"])
    assert _processes_running(marker) == []


def test_a_session_container_is_started_once_and_stopped_at_the_end(pytester, busybox_dir):
    """`container_fixture(scope="session")`: every test of the session gets the same
    container (one start), and it is stopped when the session ends."""
    marker = "sleep 86392"
    pytester.makeconftest(f"""
        import sandkit
        from sandkit.pytest_plugin import container_fixture

        service = container_fixture(
            sandkit.Image.from_directory({str(busybox_dir)!r}),
            run=["sh", "-c", "touch /tmp/ready; {marker}"],
            wait_for_exec=["test", "-f", "/tmp/ready"],
        )
    """)
    pytester.makepyfile(
        test_one="""
        def test_first(service):
            service.write_file("/tmp/seen", "first")
    """,
        test_two="""
        def test_second(service):
            assert service.read_file("/tmp/seen") == b"first"
    """,
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert _processes_running(marker) == []


def test_each_xdist_worker_has_its_own_session_containers(pytester, busybox_dir):
    """Under pytest-xdist the session fixture starts once per worker, and the workers' named
    containers do not collide."""
    pytest.importorskip("xdist")
    pytester.makeconftest(f"""
        import sandkit
        from sandkit.pytest_plugin import container_fixture

        service = container_fixture(
            {str(busybox_dir)!r}, name="svc", detach=True, run=["sleep", "86393"],
        )
    """)
    pytester.makepyfile(
        "\n".join(
            f"""
def test_{i}(service, worker_id):
    assert service.name == "svc-" + worker_id
    service.exec(["sh", "-c", "echo {i} >> /tmp/tests"])
    assert service.exec(["cat", "/tmp/tests"]).exit_code == 0
"""
            for i in range(6)
        )
    )
    result = pytester.runpytest_subprocess("-q", "-n", "2")
    result.assert_outcomes(passed=6)
    assert _processes_running("sleep 86393") == []


def test_a_detached_fixture_waits_for_its_service(pytester, busybox_dir):
    """The fixtures' waits on a detached container (what a session-wide service shared by
    several processes is): they run through its supervisor."""
    marker = "18395"  # the port, and what tells its process apart
    pytester.makeconftest(f"""
        from sandkit.pytest_plugin import container_fixture

        service = container_fixture(
            {str(busybox_dir)!r}, name="web", detach=True,
            run=["sh", "-c", "echo ready; exec nc -l -p {marker}"],
            wait_for_log="ready", wait_for_port={marker}, wait_timeout=60,
        )
    """)
    pytester.makepyfile("""
def test_it(service):
    assert service.running and service.name == "web"
""")
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
    assert _processes_running(f"nc -l -p {marker}") == []


def test_the_session_factory_serves_module_fixtures(pytester, busybox_dir):
    """`sandkit_session_factory`: a module-scoped fixture of the user's own builds its
    container from it, and it is removed when the session ends, not with the first test."""
    marker = "sleep 86394"
    pytester.makepyfile(f"""
        import pytest
        import sandkit

        @pytest.fixture(scope="module")
        def cache(sandkit_session_factory):
            return sandkit_session_factory(
                sandkit.Image.from_directory({str(busybox_dir)!r}), run=["{marker.split()[0]}", "{marker.split()[1]}"]
            )

        def test_one(cache):
            cache.write_file("/tmp/x", "1")

        def test_two(cache):
            assert cache.read_file("/tmp/x") == b"1"
            assert cache.running
    """)
    result = pytester.runpytest_inprocess("-q")
    result.assert_outcomes(passed=2)
    assert _processes_running(marker) == []
