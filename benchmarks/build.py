"""Image builds, side by side with `docker build` (issue 20 item 7).

    python benchmarks/build.py [--runs N] [--no-docker]

One 10-step Dockerfile (ARG, ENV, WORKDIR, two COPYs, two RUNs, LABEL, CMD on a busybox base)
built three ways by each tool, in this order: cold (no cache), fully cached (nothing changed),
and after one file under the second COPY changed (that COPY and the steps after it rebuild).
sandkit is run as its command line (`python -m sandkit build`, with a SANDKIT_HOME of its own),
Docker as `docker build` with the classic builder (Debian's docker.io has no BuildKit), through
the daemon `docker` reaches or, as root, a private dockerd started for this run. Both build with
`--network none`, from the same busybox image (imported into Docker, loaded from `docker save`
into sandkit), and never pull. Prints the seconds of each build (the median of --runs runs of
the whole sequence, each on a fresh context and cache) and sandkit/Docker ratios. sandkit is
measured twice: as the command line (a Python process per build: ~0.3 s of imports) and as
`Image.build` in one process, as a program that builds its environments calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dockerd
from rootfs import make_busybox_rootfs

BASE = "bench-build/busybox:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKERFILE = f"""\
FROM {BASE}
ARG VERSION=1
ENV APP=/app VERSION=$VERSION
WORKDIR /app
COPY requirements.txt ./
RUN mkdir deps && for i in $(seq 1 200); do echo "dependency $i" > deps/$i; done
COPY src/ ./src/
RUN cat src/*.py > bundle.txt && wc -c bundle.txt > size.txt
LABEL org.example.benchmark=build
CMD ["sh", "-c", "cat /app/size.txt"]
"""
STEPS = ("cold", "cached", "one file changed")
SOURCE_FILES = 50


def write_context(root: Path) -> Path:
    """The build context: the Dockerfile, a requirements file and SOURCE_FILES small sources."""
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "requirements.txt").write_text("".join(f"package-{i}==1.0\n" for i in range(30)))
    for i in range(SOURCE_FILES):
        (root / "src" / f"module_{i}.py").write_text(f"VALUE_{i} = {i}\n" * 200)
    return root


def change_one_file(root: Path) -> None:
    # A new value each time: Docker's cache outlives a run, and must not know the change.
    with open(root / "src" / "module_0.py", "a") as f:
        f.write(f"CHANGED = {time.time_ns()}\n")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_checked(argv: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(argv, env=env, capture_output=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({r.returncode}):\n{r.stdout.decode()}{r.stderr.decode()}")


def sequence(build: Callable[[Path, bool], None], work: Path) -> dict[str, float]:
    """Seconds of the three builds of STEPS on a fresh context under ``work``."""
    context = write_context(work / "context")
    seconds = {
        "cold": timed(lambda: build(context, True)),
        "cached": timed(lambda: build(context, False)),
    }
    change_one_file(context)
    seconds["one file changed"] = timed(lambda: build(context, False))
    return seconds


# --- the two tools ---------------------------------------------------------------------------


@contextlib.contextmanager
def sandkit_home(rootfs_archive: Path) -> Iterator[dict[str, str]]:
    """The environment of a sandkit with a store of its own holding BASE."""
    home = Path(tempfile.mkdtemp(prefix="bench-build-home-"))
    env = dict(os.environ, SANDKIT_HOME=str(home), SANDKIT_PRESPAWN="0")
    try:
        run_checked([sys.executable, "-m", "sandkit", "load", "-i", str(rootfs_archive)], env)
        yield env
    finally:
        shutil.rmtree(home, ignore_errors=True)


def sandkit_build(env: dict[str, str]) -> Callable[[Path, bool], None]:
    def build(context: Path, no_cache: bool) -> None:
        argv = [sys.executable, "-m", "sandkit", "build", "--network", "none", "-t", "bench:1"]
        run_checked([*argv, *(["--no-cache"] if no_cache else []), str(context)], env)

    return build


def docker_build(env: dict[str, str]) -> Callable[[Path, bool], None]:
    classic = {**env, "DOCKER_BUILDKIT": "0"}

    def build(context: Path, no_cache: bool) -> None:
        argv = ["docker", "build", "--pull=false", "--network", "none", "-t", "bench:1"]
        run_checked([*argv, *(["--no-cache"] if no_cache else []), str(context)], classic)

    return build


def base_archive(env: dict[str, str], work: Path) -> Path:
    """BASE imported into Docker from a busybox root filesystem, and `docker save`d."""
    rootfs = make_busybox_rootfs(work / "rootfs")
    rootfs_tar = work / "rootfs.tar"
    with tarfile.open(rootfs_tar, "w") as tar:
        tar.add(rootfs, arcname=".")
    changes = ["--change", f"ENV PATH={PATH}", "--change", 'CMD ["sh"]']
    run_checked(["docker", "import", *changes, str(rootfs_tar), BASE], env)
    archive = work / "base.tar"
    run_checked(["docker", "save", "-o", str(archive), BASE], env)
    return archive


def sandkit_api_sequence(env: dict[str, str], work: Path) -> dict[str, float]:
    """`sequence` with `Image.build` in one Python process that has imported sandkit already
    (a program building its environments), run as this script with --api-sequence."""
    r = subprocess.run(
        [sys.executable, __file__, "--api-sequence", str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        sys.exit(f"the API sequence failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def api_sequence(work: Path) -> None:
    """The child of `sandkit_api_sequence`: prints the seconds of each build as JSON."""
    from sandkit import Image

    def build(context: Path, no_cache: bool) -> None:
        Image.build(context, tag="bench:1", network="none", no_cache=no_cache, progress="quiet")

    print(json.dumps(sequence(build, work)))


def measure(runs: int, with_docker: bool) -> dict[str, dict[str, float]]:
    """The median seconds of each step of STEPS, by tool."""
    samples: dict[str, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-build-")))
        env = stack.enter_context(dockerd.docker_env())
        archive = base_archive(env, work)
        for run in range(runs):
            cli_env = stack.enter_context(sandkit_home(archive))
            api_env = stack.enter_context(sandkit_home(archive))
            tools = {
                "sandkit build": lambda w, e=cli_env: sequence(sandkit_build(e), w),
                "Image.build": lambda w, e=api_env: sandkit_api_sequence(e, w),
            }
            if with_docker:
                run_checked(["docker", "image", "rm", "-f", "bench:1"], env)
                tools["docker build"] = lambda w: sequence(docker_build(env), w)
            for name, measured in tools.items():
                for step, seconds in measured(work / f"{name.split()[0]}-{run}").items():
                    samples.setdefault(name, {}).setdefault(step, []).append(seconds)
    return {
        name: {step: statistics.median(values) for step, values in steps.items()}
        for name, steps in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1, help="sequences per tool (median)")
    parser.add_argument("--no-docker", action="store_true", help="sandkit only")
    parser.add_argument("--api-sequence", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.api_sequence:
        api_sequence(args.api_sequence)
        return 0
    try:
        results = measure(args.runs, not args.no_docker)
    except dockerd.DockerUnavailable as e:
        sys.exit(f"no Docker daemon (needed for the base image too): {e}")
    docker = results.pop("docker build", None)
    print(f"seconds, median of {args.runs}: " + ", ".join(STEPS))
    slower = []
    for name, seconds in [*results.items(), *([("docker build", docker)] if docker else [])]:
        cells = []
        for step in STEPS:
            ratio = f" ({seconds[step] / docker[step]:.2f}x)" if docker and name in results else ""
            cells.append(f"{seconds[step]:7.3f}{ratio:9}")
            if docker and name in results and seconds[step] >= docker[step]:
                slower.append(f"{name} {step}")
        print(f"{name:14} " + " ".join(cells))
    if slower:
        print("target missed (not faster than docker build): " + ", ".join(slower))
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
