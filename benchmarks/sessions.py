"""Python snippets through code sessions, warm pools and the web example, side by side with
`docker run`.

    python benchmarks/sessions.py [--runs N] [--clients N] [--seconds S] [--no-docker]

Everything runs on the python test image (tests/service_images.py: Debian's Python 3.11 with
matplotlib; built first if the cache lacks it, which needs root and the Debian mirror), loaded
into sandkit's store and, with `docker load`, into a private dockerd that this run starts
(tests/dockerd.py; `--pull never`: Docker never fetches anything). One run measures, in turn:

- `1+1` in a running session: `Container.run_code("1+1")`, back to back (target: at most
  1 ms round trip, as the median);
- a fresh isolated snippet: `with pool.container() as c: c.run_code("1+1")` from a
  `sandkit.Pool(image, python=True)` (each container started, its interpreter running, used
  once and destroyed off the caller's path), one request every PACE seconds, a rate at which
  the pool keeps up (targets: at most 5 ms p50 and 20 ms p99);
- the same snippet in a fresh container without a pool: `Container(image)`, `exec python3 -c`,
  stop (what a user did before sessions and pools: Python's own start-up is most of it);
- the same via `docker run --rm --pull never --network none IMAGE python3 -c 1+1`;
- examples/code_service.py (uvicorn, its own process) under N concurrent clients, each POSTing
  `1+1` again as soon as it has its answer, for S seconds: requests per second, p50 and p99.

Needs root (the private dockerd, the image's build).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dockerd
import service_images
from polling import wait_until
from registry.server import free_port

import sandkit

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = "1+1"
PACE = 0.05  # seconds between the pooled requests
POOL_SIZE = 8
SERVICE_START_TIMEOUT = 120.0
TARGET_SESSION_P50 = 0.001
TARGET_POOL_P50, TARGET_POOL_P99 = 0.005, 0.020


class Figures(NamedTuple):
    """Percentiles of one measurement, in seconds."""

    p50: float
    p99: float
    runs: int


def figures(samples: list[float]) -> Figures:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Figures(statistics.median(samples), cuts[98], len(samples))


def timed(runs: int, once: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        once()
        samples.append(time.perf_counter() - started)
    return samples


def expect_two(result: sandkit.CodeResult) -> None:
    if result.value != "2":
        raise RuntimeError(f"{SNIPPET} gave {result!r}")


# --- sandkit ---------------------------------------------------------------------------------


def in_running_session(image: sandkit.Image, runs: int) -> Figures:
    with sandkit.Container(image, network="none") as c:
        c.start_python()
        timed(50, lambda: c.run_code(SNIPPET))  # warm-up
        return figures(timed(runs, lambda: expect_two(c.run_code(SNIPPET))))


def from_pool(image: sandkit.Image, runs: int) -> tuple[Figures, sandkit.PoolStats]:
    with sandkit.Pool(image, size=POOL_SIZE, python=True, network="none") as pool:
        pool.wait_ready(timeout=120)

        def one() -> None:
            with pool.container(timeout=60) as c:
                expect_two(c.run_code(SNIPPET))

        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            one()
            samples.append(time.perf_counter() - started)
            time.sleep(max(0.0, PACE - (time.perf_counter() - started)))  # (pacing, not sync)
        return figures(samples), pool.stats


def fresh_container_exec(image: sandkit.Image, runs: int) -> Figures:
    def one() -> None:
        with sandkit.Container(image, network="none") as c:
            c.exec(["python3", "-c", SNIPPET], timeout=30, check=True)

    one()  # warm-up
    return figures(timed(runs, one))


# --- Docker ----------------------------------------------------------------------------------


def docker_run(daemon: dockerd.Daemon, archive: Path, runs: int) -> Figures:
    dockerd.run(daemon.env, "load", "-i", str(archive))
    argv = ["docker", "run", "--rm", "--pull", "never", "--network", "none"]
    argv += [service_images.PYTHON.tag, "python3", "-c", SNIPPET]

    def one() -> None:
        subprocess.run(argv, env=daemon.env, check=True, capture_output=True, timeout=120)

    one()  # warm-up
    return figures(timed(runs, one))


# --- the web example -------------------------------------------------------------------------


class Load(NamedTuple):
    requests_per_second: float
    latency: Figures
    failed: int


@contextmanager
def code_service(port: int) -> Iterator[str]:
    """examples/code_service.py on `port`, in a process of its own; its URL. Ended by SIGINT,
    as Ctrl-C ends it. Its log (a line per request) goes to a temporary file, shown should it
    end early."""
    env = {**os.environ, "SANDKIT_EXAMPLE_IMAGE": service_images.PYTHON.tag}
    argv = [sys.executable, str(ROOT / "examples" / "code_service.py"), str(port)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: answers(url) or server.poll() is not None, "the service", 120)
            if server.poll() is not None:
                log.seek(0)
                tail = log.read()[-3000:].decode(errors="replace")
                raise RuntimeError(f"{argv[1]} ended ({server.returncode}):\n{tail}")
            yield url
        finally:
            stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def answers(url: str) -> bool:
    try:
        httpx.post(f"{url}/run", json={"code": SNIPPET}, timeout=30)
    except httpx.TransportError:
        return False
    return True


async def load(url: str, clients: int, seconds: float) -> Load:
    """`clients` clients, each POSTing the snippet again as soon as it is answered."""
    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        end = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal failed
            while time.perf_counter() < end:
                started = time.perf_counter()
                response = await client.post("/run", json={"code": SNIPPET})
                if response.status_code != 200 or response.json()["value"] != "2":
                    failed += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        took = time.perf_counter() - started
    return Load(len(latencies) / took, figures(latencies), failed)


# --- the run ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def row(what: str, f: Figures, note: str = "") -> None:
    print(f"{what:46} {ms(f.p50)} {ms(f.p99)} {f.runs:6}  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="round trips in the session")
    parser.add_argument("--pooled", type=int, default=200, help="snippets from the pool")
    parser.add_argument("--fresh", type=int, default=30, help="fresh containers, docker runs")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the private dockerd and the image's build need it")
    archive = service_images.ensure("python")
    image = sandkit.Image.load(archive)

    session = in_running_session(image, args.runs)
    pooled, stats = from_pool(image, args.pooled)
    fresh = fresh_container_exec(image, args.fresh)
    docker = None
    if not args.no_docker:
        with dockerd.private_dockerd() as daemon:
            docker = docker_run(daemon, archive, args.fresh)
    with code_service(free_port()) as url:
        web = asyncio.run(load(url, args.clients, args.seconds))

    print(f"\n`{SNIPPET}`, milliseconds; the python test image ({service_images.PYTHON.tag})")
    print(f"{'':46} {'p50':>8} {'p99':>8} {'runs':>6}")
    met = "target met" if session.p50 <= TARGET_SESSION_P50 else "(target p50 1 ms)"
    row("in a running session (run_code)", session, met)
    met = pooled.p50 <= TARGET_POOL_P50 and pooled.p99 <= TARGET_POOL_P99
    row(
        f"fresh, from a Pool(python=True), every {PACE * 1000:g} ms",
        pooled,
        ("target met" if met else "(targets p50 5 ms, p99 20 ms)")
        + f"; pool: {stats.hits} hits, {stats.misses} misses, {stats.waits} waits",
    )
    row("fresh Container + exec python3 -c", fresh, f"pool/this {pooled.p50 / fresh.p50:.3f}")
    if docker is not None:
        row(
            "docker run --rm python3 -c",
            docker,
            f"pool/docker {pooled.p50 / docker.p50:.4f}, "
            f"fresh container/docker {fresh.p50 / docker.p50:.3f}",
        )
    print(
        f"\nexamples/code_service.py, {args.clients} clients for {args.seconds:g} s: "
        f"{web.requests_per_second:.0f} requests/s, p50 {web.latency.p50 * 1000:.1f} ms, "
        f"p99 {web.latency.p99 * 1000:.1f} ms ({web.latency.runs} answered, {web.failed} failed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
