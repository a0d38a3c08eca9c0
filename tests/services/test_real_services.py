"""Real services from their images (tests/service_images.py), as a testcontainers user runs
them: PostgreSQL and Redis started with `run=True` from the image's own command, waited for,
queried from the host through a published port with their client libraries (psycopg, redis-py),
and gone afterwards; the image's HEALTHCHECK going healthy, unhealthy and back; the log ring
under a flood of lines; PostgreSQL's data kept by a named volume across two containers.

Every scenario runs as root and rootless (the unprivileged test user, whose containers need a
subordinate id range for the image's users postgres and redis: conftest.rootless_image_users).
A scenario returns where its container was (its PID namespace, its host port) and the test
checks from the host, as root, that nothing is left there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
import redis
from conftest import run_unprivileged
from polling import wait_until
from proctable import in_namespace

import sandkit
from sandkit import errors

pytestmark = pytest.mark.slow

PG_USER, PG_PASSWORD, PG_DB = "tester", "a password for tests", "app"
PG_ENV = {"POSTGRES_USER": PG_USER, "POSTGRES_PASSWORD": PG_PASSWORD, "POSTGRES_DB": PG_DB}
PG_DATA = "/var/lib/postgresql/data"
# What PostgreSQL logs once it takes connections (and not before, nor during initdb).
PG_READY = r"database system is ready to accept connections"
REDIS_READY = r"Ready to accept connections"
# The first line Redis logs when it starts, gone from a ring that overflowed.
REDIS_FIRST_LINE = b"Redis is starting"
START_TIMEOUT = 60.0  # (a first start of PostgreSQL runs initdb)
HEALTH_TIMEOUT = 30.0  # the images' checks: every 1 s, 2 s each, 3 failures make unhealthy


class Whereabouts(NamedTuple):
    """Where a container was: its PID namespace's inode (None: not known, the container having
    ended before anything could look) and its published port on the host."""

    pid_namespace: int | None
    address: tuple[str, int]


@pytest.fixture(params=["root", "rootless"])
def run_as(request):
    """Runs a scenario `fn(image_or_archive)` for the image named: as root (with the session's
    loaded image, and no leak allowed) or as the unprivileged user (loading the archive into its
    own store). Returns what `fn` returns."""
    if request.param == "root":

        def as_root(fn, name: str):
            image = request.getfixturevalue(f"{name}_image")
            request.getfixturevalue("no_leaks")
            return fn(image)

        return as_root
    request.getfixturevalue("rootless_image_users")

    def rootless(fn, name: str):
        return run_unprivileged(fn, request.getfixturevalue(f"{name}_archive"))

    return rootless


def _image(source: sandkit.Image | Path) -> sandkit.Image:
    return source if isinstance(source, sandkit.Image) else sandkit.Image.load(source)


def _whereabouts(c: sandkit.Container, port: int) -> Whereabouts:
    link = c.exec(["readlink", "/proc/self/ns/pid"], timeout=10, check=True).stdout.decode()
    inode = int(link.strip().removeprefix("pid:[").removesuffix("]"))
    return Whereabouts(inode, c.port(port))


def assert_gone(where: Whereabouts) -> None:
    """No process is left in the container's PID namespace and its host port is closed."""
    if where.pid_namespace is not None:
        assert in_namespace("pid", where.pid_namespace) == set()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(where.address, 5):
        pass


def _pg_connect(address: tuple[str, int], password: str = PG_PASSWORD) -> psycopg.Connection:
    host, port = address
    return psycopg.connect(
        host=host, port=port, user=PG_USER, password=password, dbname=PG_DB, connect_timeout=10
    )


def _redis_client(address: tuple[str, int]) -> redis.Redis:
    host, port = address
    return redis.Redis(host=host, port=port, socket_timeout=10)


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_answers_a_query(source) -> Whereabouts:
    with sandkit.Container(_image(source), run=True, ports=["5432"], env=PG_ENV) as c:
        c.wait_for_log(PG_READY, timeout=START_TIMEOUT)
        where = _whereabouts(c, 5432)
        if os.geteuid() == 0:  # (the check below sees it while it runs: it sees rightly)
            assert in_namespace("pid", where.pid_namespace)
        with _pg_connect(where.address) as db:
            db.execute("CREATE TABLE numbers (n int)")
            db.execute("INSERT INTO numbers SELECT generate_series(1, 100)")
            row = db.execute("SELECT sum(n), current_user, current_database() FROM numbers")
            assert row.fetchone() == (5050, PG_USER, PG_DB)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _pg_connect(where.address, password="wrong")
        # The server runs as the image's user, who owns the cluster the entrypoint made.
        owner = c.exec(["stat", "-c", "%U %a", PG_DATA], timeout=10, check=True).stdout
        assert owner == b"postgres 700\n"
        wait_until(lambda: c.health == "healthy", "the healthcheck (pg_isready)", HEALTH_TIMEOUT)
    return where


def test_postgres_from_its_image_answers_the_host_and_is_gone_afterwards(run_as):
    assert_gone(run_as(postgres_answers_a_query, "postgres"))


def postgres_without_a_password_stops_and_says_why(source) -> Whereabouts:
    with sandkit.Container(_image(source), run=True, ports=["5432"]) as c:
        where = Whereabouts(None, c.port(5432))  # (it may have ended already: no exec)
        with pytest.raises(errors.ContainerError) as failed:
            c.wait_for_log(PG_READY, timeout=START_TIMEOUT)
        assert "POSTGRES_PASSWORD is empty" in str(failed.value)  # the log's last lines
        assert c.wait(timeout=START_TIMEOUT) == 1
    return where


def test_postgres_without_a_password_exits_and_the_wait_shows_its_log(run_as):
    assert_gone(run_as(postgres_without_a_password_stops_and_says_why, "postgres"))


def postgres_keeps_its_data_in_a_volume(source) -> Whereabouts:
    image = _image(source)
    with sandkit.Volume() as volume:
        mounts = [f"{volume.name}:{PG_DATA}"]
        with sandkit.Container(image, run=True, ports=["5432"], env=PG_ENV, mounts=mounts) as c:
            # The empty volume started as a copy of the image's PGDATA: postgres's, mode 0700
            # (else postgres could not write there).
            owner = c.exec(["stat", "-c", "%U %a", PG_DATA], timeout=10, check=True).stdout
            assert owner == b"postgres 700\n"
            c.wait_for_log(PG_READY, timeout=START_TIMEOUT)
            with _pg_connect(c.port(5432)) as db:
                db.execute("CREATE TABLE kept (words text)")
                db.execute("INSERT INTO kept VALUES ('across containers')")
        # No password this time: had the volume lost the cluster, the entrypoint would stop
        # and say that it needs one to make a new cluster.
        with sandkit.Container(image, run=True, ports=["5432"], mounts=mounts) as c:
            c.wait_for_log(PG_READY, timeout=START_TIMEOUT)
            where = _whereabouts(c, 5432)
            with _pg_connect(where.address) as db:
                assert db.execute("SELECT words FROM kept").fetchall() == [("across containers",)]
            assert b"initialised" not in c.logs()
    return where


def test_a_named_volume_keeps_postgres_data_across_two_containers(volumes_made_once, run_as):
    assert_gone(run_as(postgres_keeps_its_data_in_a_volume, "postgres"))


# --- Redis -----------------------------------------------------------------------------------


def redis_answers_a_query(source) -> Whereabouts:
    with sandkit.Container(_image(source), run=True, ports=["6379"]) as c:
        c.wait_for_port(6379, timeout=START_TIMEOUT)
        where = _whereabouts(c, 6379)
        with _redis_client(where.address) as client:
            assert client.ping()
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
            assert client.info("server")["redis_version"].startswith("7.")
    return where


def test_redis_from_its_image_answers_the_host_and_is_gone_afterwards(run_as):
    assert_gone(run_as(redis_answers_a_query, "redis"))


# Sends SIGNAL to redis-server (from an exec as the image's user redis, who may): SIGSTOP
# freezes it, so the healthcheck's `redis-cli ping` gets no answer and times out.
SIGNAL_REDIS = (
    "for p in /proc/[0-9]*; do "
    '[ "$(cat $p/comm 2>/dev/null)" = redis-server ] && kill -{signal} "${{p#/proc/}}"; '
    "done; true"
)


def redis_health_follows_the_server(source) -> Whereabouts:
    with sandkit.Container(_image(source), run=True, ports=["6379"]) as c:
        assert c.health in ("starting", "healthy")
        wait_until(lambda: c.health == "healthy", "healthy", HEALTH_TIMEOUT)
        where = _whereabouts(c, 6379)
        c.exec(["sh", "-c", SIGNAL_REDIS.format(signal="STOP")], timeout=10, check=True)
        wait_until(lambda: c.health == "unhealthy", "unhealthy once frozen", HEALTH_TIMEOUT)
        report = c.health_report()
        assert report is not None and report["FailingStreak"] >= 3  # the image's Retries
        assert all(check["ExitCode"] != 0 for check in report["Log"][-3:])
        c.exec(["sh", "-c", SIGNAL_REDIS.format(signal="CONT")], timeout=10, check=True)
        wait_until(lambda: c.health == "healthy", "healthy once thawed", HEALTH_TIMEOUT)
        assert c.health_report()["FailingStreak"] == 0
    return where


def test_the_image_healthcheck_goes_healthy_unhealthy_and_back(run_as):
    assert_gone(run_as(redis_health_follows_the_server, "redis"))


LOG_RING = 64 * 1024
CONNECTIONS = 1000  # Redis logs two lines per connection at loglevel verbose: ~6x the ring


def redis_logs_stay_bounded_under_load(source) -> Whereabouts:
    argv = ["redis-server", "--loglevel", "verbose"]  # (through the image's entrypoint)
    with sandkit.Container(_image(source), run=argv, ports=["6379"], log_size=LOG_RING) as c:
        c.wait_for_log(REDIS_READY, timeout=START_TIMEOUT)
        assert REDIS_FIRST_LINE in c.logs()
        where = _whereabouts(c, 6379)
        for n in range(CONNECTIONS):
            with _redis_client(where.address) as client:
                client.set(f"key:{n}", n)
        with _redis_client(where.address) as client:
            assert client.dbsize() == CONNECTIONS
        wait_until(
            lambda: REDIS_FIRST_LINE not in c.logs(), "the first lines to leave the ring", 10
        )
        logs = c.logs()
        assert len(logs) <= LOG_RING
        assert logs.count(b"Accepted") > 50  # the newest lines are kept
    return where


def test_logs_under_a_flood_of_connections_stay_within_the_ring(run_as):
    assert_gone(run_as(redis_logs_stay_bounded_under_load, "redis"))
