"""Benchmark: a warm pool's hand-out, next to a container started per request.

    python benchmarks/pool.py [--image host] [--requests 300] [--size 8] [--back-to-back]

Each request is ``with pool.container() as c: c.exec(["true"])`` (enter, exec, leave; the
container's teardown and its replacement's start happen in the background, not timed; the
entering and leaving alone are shown too), and with
``python=True`` ``c.run_code("1+1")`` instead of the exec. By default the pool is let refill
before each request (``pool.wait_ready()``, not timed): the hand-out a service sees while its
requests come slower than the pool refills. ``--back-to-back`` sends them without that pause:
then the pool refills no faster than the host starts containers, and most requests wait for one.
The last line of each group: the same request with a container started for it
(``with sandkit.Container(image) as c``), spares off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandkit


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1e3:6.2f} ms   p99 {p99 * 1e3:6.2f} ms"


def timed(request: Callable[[], None], count: int, pause: Callable[[], None]) -> list[float]:
    samples = []
    for _ in range(count):
        pause()
        began = time.perf_counter()
        request()
        samples.append(time.perf_counter() - began)
    return samples


def work(python: bool) -> Callable[[sandkit.Container], object]:
    if python:
        return lambda c: c.run_code("1+1")
    return lambda c: c.exec(["true"], check=True)


def from_pool(args: argparse.Namespace, python: bool) -> str:
    use = work(python)
    with sandkit.Pool(args.image, size=args.size, python=python) as pool:
        pool.wait_ready()

        handouts: list[float] = []  # the pool's own part: entering and leaving the block

        def request() -> None:
            began = time.perf_counter()
            with pool.container() as c:
                entered = time.perf_counter()
                use(c)
                used = time.perf_counter()
            handouts.append(entered - began + time.perf_counter() - used)

        pause = (lambda: None) if args.back_to_back else pool.wait_ready
        samples = timed(request, args.requests, pause)
        stats = pool.stats
    return (
        f"{percentiles(samples)}   (hits {stats.hits}, misses {stats.misses})\n"
        f"    of which enter + leave  {percentiles(handouts)}"
    )


def fresh(args: argparse.Namespace, python: bool) -> str:
    use = work(python)

    def request() -> None:
        with sandkit.Container(args.image) as c:
            use(c)

    return percentiles(timed(request, max(20, args.requests // 5), lambda: None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="host")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--back-to-back", action="store_true")
    args = parser.parse_args()
    os.environ["SANDKIT_PRESPAWN"] = "0"  # the fresh starts' peer: no spare made between them
    for python, what in ((False, 'exec(["true"])'), (True, 'run_code("1+1"), python=True')):
        print(f"{what}:")
        print(f"  pool (size {args.size})   {from_pool(args, python)}")
        print(f"  fresh container  {fresh(args, python)}")


if __name__ == "__main__":
    main()
