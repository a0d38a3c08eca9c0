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
the whole sequence, each on a fresh context and cache) and sandkit/Docker ratios.
"""

from __future__ import annotations

import argparse
import contextlib
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


def measure(runs: int, with_docker: bool) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {"sandkit": {}, "docker": {}}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-build-")))
        env = stack.enter_context(dockerd.docker_env())
        archive = base_archive(env, work)
        for run in range(runs):
            tools = {"sandkit": sandkit_build(stack.enter_context(sandkit_home(archive)))}
            if with_docker:
                tools["docker"] = docker_build(env)
            for name, build in tools.items():
                if name == "docker":
                    run_checked(["docker", "image", "rm", "-f", "bench:1"], env)
                for step, seconds in sequence(build, work / f"{name}-{run}").items():
                    samples[name].setdefault(step, []).append(seconds)
    return {
        name: {step: statistics.median(values) for step, values in steps.items()}
        for name, steps in samples.items()
        if steps
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1, help="sequences per tool (median)")
    parser.add_argument("--no-docker", action="store_true", help="sandkit only")
    args = parser.parse_args()
    try:
        results = measure(args.runs, not args.no_docker)
    except dockerd.DockerUnavailable as e:
        sys.exit(f"no Docker daemon (needed for the base image too): {e}")
    sandkit, docker = results["sandkit"], results.get("docker")
    print(f"{'build (median of ' + str(args.runs) + ')':28} {'sandkit s':>10} {'docker s':>10}")
    slower = []
    for step in STEPS:
        peer = (
            f"{docker[step]:10.3f}   sandkit/docker = {sandkit[step] / docker[step]:.2f}x"
            if docker
            else ""
        )
        print(f"{step:28} {sandkit[step]:10.3f} {peer}")
        if docker and sandkit[step] >= docker[step]:
            slower.append(step)
    if slower:
        print("target missed (slower than Docker): " + ", ".join(slower))
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
