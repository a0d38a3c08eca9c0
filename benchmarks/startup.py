"""Container start-up and exec latency, side by side with bwrap and Docker.

    python benchmarks/startup.py [--runs N] [--no-assert] [--no-docker]

Docker is measured through the daemon `docker` reaches or, as root with docker.io installed, a
private dockerd this run starts and stops (its own data root and socket); otherwise it is skipped.

Everything runs in one process, on one busybox root filesystem built from Debian's
busybox-static, so the peers do the same work: new user (rootless only)/mount/pid/net/ipc/uts
namespaces over the same directory, run `true`, tear down. Prints medians and ratios and, unless
--no-assert, fails when sandkit's lifecycle is not faster than bwrap's or its exec round trip
takes twice as long as starting the same `true` on the host with subprocess.run (a ratio, since
this VM's absolute timings drift by 20% and more from hour to hour).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dockerd
from rootfs import make_busybox_rootfs

import sandkit
from sandkit.runtime import prespawn


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    return interleaved_medians({"": fn}, runs, warmup)[""]


def interleaved_medians(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int = 5, chunk: int = 20
) -> dict[str, float]:
    """Median milliseconds of each function, run in alternating chunks so that each sees the
    same machine (a busy moment slows all of them, not only the one that ran then). Between
    chunks sandkit's spare containers are stopped, so that the work it does in the background
    is charged to sandkit's own runs and never slows a peer's."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(values) < runs for values in samples.values()):
        for name, fn in fns.items():
            for _ in range(min(chunk, runs - len(samples[name]))):
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
            prespawn.drain()
            time.sleep(0.05)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def sandkit_lifecycle(image: sandkit.Image) -> Callable[[], object]:
    def run() -> None:
        with sandkit.Container(image) as c:
            c.exec(["true"])

    return run


def sandkit_start_after_a_pause(image: sandkit.Image, runs: int, **options: object) -> float:
    """Median ms from `Container(...)` to the first exec's result, when starts come with a pause
    between them (a web app serving requests): the container made ahead of need is used."""
    samples = []
    for _ in range(runs):
        time.sleep(0.02)
        started = time.perf_counter()
        with sandkit.Container(image, **options) as c:
            c.exec(["true"])
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def async_exec_median(image: sandkit.Image, runs: int) -> float:
    async with sandkit.AsyncContainer(image) as c:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            await c.exec(["true"])
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def bwrap_lifecycle(rootfs: Path) -> Callable[[], object]:
    argv = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        str(rootfs),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--hostname",
        "bench",
        "/bin/true",
    ]
    return lambda: subprocess.run(argv, check=True)


def docker_image(rootfs: Path, env: dict[str, str]) -> str:
    tag = "sandkit-bench-busybox:latest"
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        subprocess.run(
            ["docker", "import", str(archive), tag], check=True, capture_output=True, env=env
        )
    return tag


def docker_rows(rootfs: Path, runs: int) -> dict[str, float]:
    """`docker run --rm` and `docker exec` of the same `true`, through the daemon `docker`
    reaches or (as root) a private dockerd started for this run; none if neither is possible."""
    rows: dict[str, float] = {}
    try:
        with dockerd.docker_env() as env:
            tag = docker_image(rootfs, env)
            runs = max(10, runs // 10)
            rows["docker run --rm"] = median_ms(
                lambda: subprocess.run(
                    ["docker", "run", "--rm", "--network", "none", tag, "/bin/true"],
                    check=True,
                    env=env,
                ),
                runs,
                warmup=2,
            )
            name = subprocess.run(
                ["docker", "run", "-d", "--rm", "--network", "none", tag, "sleep", "600"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout.strip()
            try:
                rows["docker exec"] = median_ms(
                    lambda: subprocess.run(
                        ["docker", "exec", name, "/bin/true"], check=True, env=env
                    ),
                    runs,
                    warmup=2,
                )
            finally:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=env)
    except dockerd.DockerUnavailable as e:
        print(f"docker: skipped ({str(e).splitlines()[0]})", file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-assert", action="store_true")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker peer")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        rootfs = make_busybox_rootfs(Path(tmp) / "rootfs")
        image = sandkit.Image.from_directory(rootfs)
        lifecycles = {"sandkit lifecycle (create, exec true, destroy)": sandkit_lifecycle(image)}
        if shutil.which("bwrap"):
            lifecycles["bwrap lifecycle (same namespaces, same dir)"] = bwrap_lifecycle(rootfs)
        rows = interleaved_medians(lifecycles, args.runs)
        rows["sandkit start + exec true, 20 ms apart (spare ready)"] = sandkit_start_after_a_pause(
            image, args.runs // 2
        )
        with warnings.catch_warnings():  # rootless: the limits fall back to rlimits, and say so
            warnings.simplefilter("ignore")
            rows["  the same with memory, cpu and pids limits"] = sandkit_start_after_a_pause(
                image, args.runs // 2, memory="256m", cpus=1, pids_limit=100
            )
        with sandkit.Container(image) as c:
            host_true = str(rootfs / "bin" / "true")
            execs = {
                "sandkit exec round trip (true)": lambda: c.exec(["true"]),
                # the same program started on the host, without any isolation, for scale
                "host subprocess.run(true), no container": lambda: subprocess.run(
                    [host_true], check=True
                ),
            }
            rows.update(interleaved_medians(execs, args.runs * 2))
            rows["sandkit control round trip (ping)"] = median_ms(c.ping, args.runs * 5)
        rows["sandkit exec round trip, async API"] = trio.run(
            async_exec_median, image, args.runs * 2
        )
        if not args.no_docker:
            rows.update(docker_rows(rootfs, args.runs))

    lifecycle = rows["sandkit lifecycle (create, exec true, destroy)"]
    exec_rt = rows["sandkit exec round trip (true)"]
    print(f"{'measurement (median of ' + str(args.runs) + '+ runs)':56} {'ms':>9}")
    for name, value in rows.items():
        print(f"{name:56} {value:9.3f}")
    print()
    failures = []
    if "bwrap lifecycle (same namespaces, same dir)" in rows:
        ratio = lifecycle / rows["bwrap lifecycle (same namespaces, same dir)"]
        print(
            f"sandkit lifecycle / bwrap lifecycle  = {ratio:.2f}x  (back to back; target <= 0.6x, must be < 1x)"
        )
        spare = rows["sandkit start + exec true, 20 ms apart (spare ready)"]
        bwrap = rows["bwrap lifecycle (same namespaces, same dir)"]
        print(f"sandkit start+exec with a spare / bwrap lifecycle = {spare / bwrap:.2f}x")
        if ratio >= 1:
            failures.append(f"lifecycle is {ratio:.2f}x bwrap's")
    if "docker run --rm" in rows:
        print(
            f"docker run --rm / sandkit lifecycle  = {rows['docker run --rm'] / lifecycle:.0f}x faster"
        )
        print(f"docker exec / sandkit exec           = {rows['docker exec'] / exec_rt:.0f}x faster")
    else:
        print("docker: not measured")
    print(f"sandkit exec round trip              = {exec_rt:.3f} ms")
    host = rows["host subprocess.run(true), no container"]
    print(f"sandkit exec / host subprocess.run   = {exec_rt / host:.2f}x  (must be < 2x)")
    if exec_rt / host >= 2:
        failures.append(f"exec round trip is {exec_rt / host:.2f}x a host subprocess.run")
    if failures and not args.no_assert:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
