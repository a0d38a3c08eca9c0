"""Time from `Container(...)` to the first successful query of a real service, sandkit vs Docker.

    python benchmarks/services.py [--rounds N] [--services redis,postgres,postgres-data]

The services are the test images of tests/service_images.py (PostgreSQL 15, Redis 7 from
Debian's packages; built first if the cache lacks them, which needs root and the Debian mirror),
loaded into sandkit's store and, with `docker load`, into a private dockerd that this run starts
in namespaces of its own (tests/dockerd.py: its bridge and published ports stay off the host).
Needs root.

One round of either side: start the image's own command with its port published on 127.0.0.1
(sandkit: `Container(image, run=True, ports=[...])`; Docker: `docker run -d --pull never -p`),
then query it from the host's side with the client library (redis-py PING, psycopg `SELECT 1`)
every 5 ms until a query succeeds: the same wait for both. The clock stops at that first
answer; the container is then removed, off the clock. Docker's queries run on a thread that
entered the daemon's network namespace, where its published ports are. The "postgres" rounds
include a first start (the entrypoint's initdb, in both); the "postgres-data" rounds start on
the data a named volume kept from the round before (a database kept between test sessions),
each side its own volume. Rounds alternate between the two sides; printed are the medians and
the ratios (target: sandkit at most a tenth of Docker's), of the time to the first answer and
of the time until the container runs (`start()` returned, `docker run -d` returned): what is
left between the two is mostly the service's own start, the same program in both.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dockerd
import psycopg
import redis
import service_images

import sandkit
from sandkit.runtime import prespawn

POLL_INTERVAL = 0.005
QUERY_DEADLINE = 120.0
CLONE_NEWNET = 0x40000000
PG_PASSWORD = "benchmark"
TARGET_RATIO = 0.1


class Service(NamedTuple):
    image: str  # the tests' recipe name
    port: int
    env: dict[str, str]
    query: Callable[[str, int], object]  # raises until the service answers
    # A named volume mounted here, made once for all rounds of each side: each round but the
    # warm-up's finds the data of the one before (a database kept between test sessions).
    data: str | None = None


def redis_ping(host: str, port: int) -> object:
    with redis.Redis(host=host, port=port, socket_connect_timeout=2, socket_timeout=2) as client:
        return client.ping()


def postgres_select(host: str, port: int) -> object:
    with psycopg.connect(
        host=host, port=port, user="postgres", password=PG_PASSWORD, connect_timeout=2
    ) as db:
        return db.execute("SELECT 1").fetchone()


SERVICES = {
    "redis": Service("redis", 6379, {}, redis_ping),
    "postgres": Service("postgres", 5432, {"POSTGRES_PASSWORD": PG_PASSWORD}, postgres_select),
    "postgres-data": Service(
        "postgres",
        5432,
        {"POSTGRES_PASSWORD": PG_PASSWORD},
        postgres_select,
        data="/var/lib/postgresql/data",
    ),
}
# What a query raises while the service is not up yet (refused, reset, "starting up").
NOT_YET = (OSError, redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError)


def until_answered(query: Callable[[str, int], object], host: str, port: int) -> None:
    deadline = time.monotonic() + QUERY_DEADLINE
    while True:
        try:
            query(host, port)
            return
        except NOT_YET:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_INTERVAL)


# --- sandkit ---------------------------------------------------------------------------------


class Round(NamedTuple):
    """Seconds from the start of a round until the container runs (`start()` or `docker run -d`
    returned) and until the first answered query."""

    running: float
    answered: float


def sandkit_round(image: sandkit.Image, service: Service, volume: str | None) -> Round:
    mounts = [f"{volume}:{service.data}"] if volume else []
    started = time.perf_counter()
    container = sandkit.Container(
        image, run=True, ports=[str(service.port)], env=service.env, mounts=mounts
    )
    try:
        container.start()
        running = time.perf_counter() - started
        until_answered(service.query, *container.port(service.port))
        return Round(running, time.perf_counter() - started)
    finally:
        container.stop()
        prespawn.drain()  # no spare made in the background slows Docker's next round


# --- Docker ----------------------------------------------------------------------------------


class InNetns:
    """A thread inside another network namespace: `call(fn, ...)` runs fn there (setns moves
    the calling thread only)."""

    def __init__(self, netns: Path) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, initializer=self._enter, initargs=(netns,)
        )

    @staticmethod
    def _enter(netns: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., object], *args: object) -> object:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown()


def docker_round(
    daemon: dockerd.Daemon, netns: InNetns, tag: str, service: Service, volume: str | None
) -> Round:
    name = f"sandkit-bench-{uuid.uuid4().hex[:12]}"
    host_port = free_port_in(netns)
    env_flags = [flag for key, value in service.env.items() for flag in ("-e", f"{key}={value}")]
    if volume:
        env_flags += ["-v", f"{volume}:{service.data}"]
    argv = ["docker", "run", "-d", "--pull", "never", "--name", name, *env_flags]
    argv += ["-p", f"127.0.0.1:{host_port}:{service.port}", tag]
    started = time.perf_counter()
    try:
        subprocess.run(argv, env=daemon.env, check=True, capture_output=True, timeout=120)
        running = time.perf_counter() - started
        netns.call(until_answered, service.query, "127.0.0.1", host_port)
        return Round(running, time.perf_counter() - started)
    finally:
        # Stopped with the image's StopSignal first, as sandkit's stop does: a database then
        # shuts down cleanly and its next start on the same data needs no recovery.
        for command in (["stop", name], ["rm", "-f", name]):
            subprocess.run(["docker", *command], env=daemon.env, capture_output=True, check=False)


def free_port_in(netns: InNetns) -> int:
    """A port nothing listens on in the daemon's namespace (the kernel's pick, then closed)."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port = netns.call(pick)
    assert isinstance(port, int)
    return port


@contextlib.contextmanager
def volumes(daemon: dockerd.Daemon, service: Service) -> Iterator[tuple[str | None, str | None]]:
    """A new named volume on each side for the block (None, None without ``service.data``)."""
    if service.data is None:
        yield None, None
        return
    name = f"sandkit-bench-{uuid.uuid4().hex[:12]}"
    dockerd.run(daemon.env, "volume", "create", name)
    try:
        with sandkit.Volume(name) as ours:
            yield ours.name, name
    finally:
        dockerd.run(daemon.env, "volume", "rm", "-f", name, check=False)


# --- the run ---------------------------------------------------------------------------------


def measure(names: list[str], rounds: int) -> dict[str, tuple[Round, Round]]:
    """The medians of each service's sandkit and Docker rounds, alternated."""
    archives = {name: service_images.ensure(SERVICES[name].image) for name in names}
    results = {}
    with dockerd.private_dockerd(netns=True) as daemon:
        assert daemon.netns is not None
        netns = InNetns(daemon.netns)
        try:
            for name in names:
                service = SERVICES[name]
                archive = archives[name]
                image = sandkit.Image.load(archive)
                tag = service_images.RECIPES[service.image].tag
                dockerd.run(daemon.env, "load", "-i", str(archive))
                with volumes(daemon, service) as (our_volume, their_volume):
                    # warm-up of each: caches, lazy imports (and the volume's first data)
                    sandkit_round(image, service, our_volume)
                    docker_round(daemon, netns, tag, service, their_volume)
                    ours, theirs = [], []
                    for _ in range(rounds):
                        ours.append(sandkit_round(image, service, our_volume))
                        theirs.append(docker_round(daemon, netns, tag, service, their_volume))
                results[name] = (median(ours), median(theirs))
        finally:
            netns.close()
    return results


def median(rounds: list[Round]) -> Round:
    return Round(*(statistics.median(column) for column in zip(*rounds, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args()
    names = args.services.split(",")
    unknown = sorted(set(names) - SERVICES.keys())
    if unknown:
        parser.error(f"no service {unknown[0]!r}: the services are {', '.join(SERVICES)}")
    if os.geteuid() != 0:
        parser.error("run as root: the private dockerd and the images' build need it")
    results = measure(names, args.rounds)
    print(f"\nmilliseconds from the start of a round, median of {args.rounds} rounds")
    print(
        f"{'service':14} {'first answer: sandkit':>21} {'docker':>8} {'ratio':>6}"
        f"   {'container running: sandkit':>26} {'docker':>8} {'ratio':>6}"
    )
    for name, (ours, theirs) in results.items():
        answered = ours.answered / theirs.answered
        running = ours.running / theirs.running
        met = "target met" if answered <= TARGET_RATIO else f"(target {TARGET_RATIO:g})"
        print(
            f"{name:14} {ours.answered * 1000:21.1f} {theirs.answered * 1000:8.1f} "
            f"{answered:6.3f}   {ours.running * 1000:26.1f} {theirs.running * 1000:8.1f} "
            f"{running:6.3f}  {met}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
