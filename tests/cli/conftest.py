"""Helpers for driving the `sandkit` command line as a user would: a separate process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import dockerd
import pytest
from proctable import descendants

REPO = Path(__file__).resolve().parents[2]

# The images the Docker parity tests load into both tools (see `parity_images`).
IMAGE = "sandkit-parity/busybox:1"
EP_IMAGE = "sandkit-parity/entrypoint:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sandkit_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sandkit(*argv: str, input: bytes | None = None, timeout: float = 30,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m sandkit ARGV...` with its output captured (so: not on a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "sandkit", *argv],
        input=input.decode() if input is not None else None,
        capture_output=True, text=True, timeout=timeout, env=sandkit_env() | (env or {}), check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@contextlib.contextmanager
def held(argv: list[str], env: dict[str, str], script: str = "") -> Iterator[tuple[int, list[str]]]:
    """Runs `ARGV sh -c SCRIPT` (a `run -i` command line of either tool) with the command kept
    running after the script, until the block ends; yields the pid of ARGV's process and the
    lines the script printed."""
    proc = subprocess.Popen([*argv, "sh", "-c", f"{script}\necho held; read x"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        lines = []
        for line in proc.stdout:
            if line == "held\n":
                break
            lines.append(line.rstrip("\n"))
        else:
            raise AssertionError(f"{argv} ended early: {lines} {proc.stderr.read() if proc.stderr else ''}")
        yield proc.pid, lines
    finally:
        proc.communicate("\n", timeout=30)


def init_under(ancestor: int, timeout: float = 10) -> int:
    """The host pid of the sandkit init that `ancestor` (a `sandkit run` process) started."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in descendants(ancestor):
            try:
                if Path(f"/proc/{pid}/comm").read_text() == "sandkit-init\n":
                    return pid
            except OSError:
                pass  # gone meanwhile
        assert time.monotonic() < deadline, f"no sandkit-init under {ancestor}"
        time.sleep(0.01)


def run_dir() -> Path:
    return Path(os.environ["SANDKIT_HOME"]) / "run"


def containers_on_disk() -> list[str]:
    if not run_dir().is_dir():
        return []
    return sorted(p.name for p in run_dir().iterdir() if p.name != "names")


@pytest.fixture
def bb(busybox_dir: Path) -> str:
    """The busybox root filesystem, as an IMAGE argument."""
    return str(busybox_dir)


# --- a Docker daemon and the images -----------------------------------------------------------


class Docker(NamedTuple):
    env: dict[str, str]


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(dockerd.docker_env())
        except dockerd.DockerUnavailable as e:
            pytest.skip(f"docker parity: {e}")
        yield Docker(env)


def run_docker(docker: Docker, *argv: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *argv], env=docker.env, input=input, capture_output=True,
                          timeout=120, check=check)


@contextlib.contextmanager
def removed_from_docker_after(docker: Docker, *refs: str) -> Iterator[None]:
    """At the end of the block, removes whichever of `refs` Docker then holds: the daemon may be
    the host's own, which must not keep our test images. A failed removal fails the test."""
    try:
        yield
    finally:
        present = [ref for ref in refs
                   if run_docker(docker, "image", "inspect", ref, check=False).returncode == 0]
        if present:
            run_docker(docker, "rmi", *present)


@pytest.fixture(scope="session")
def parity_images(docker, busybox_dir, tmp_path_factory) -> Iterator[None]:
    """One busybox root filesystem, imported into Docker and then from `docker save` into
    sandkit's store, so that both run byte-for-byte the same image."""
    work = tmp_path_factory.mktemp("parity")
    rootfs_tar = work / "rootfs.tar"
    with tarfile.open(rootfs_tar, "w") as tar:
        tar.add(busybox_dir, arcname=".")
    base_changes = ["--change", f"ENV PATH={PATH}", "--change", "ENV GREETING=hello"]
    with removed_from_docker_after(docker, IMAGE, EP_IMAGE):
        run_docker(docker, "import", *base_changes, "--change", 'CMD ["sh", "-c", "echo default-cmd"]',
                   str(rootfs_tar), IMAGE)
        run_docker(docker, "import", *base_changes, "--change", 'ENTRYPOINT ["echo", "ep"]',
                   "--change", 'CMD ["default"]', str(rootfs_tar), EP_IMAGE)
        archive = work / "images.tar"
        run_docker(docker, "save", "-o", str(archive), IMAGE, EP_IMAGE)
        r = sandkit("load", "-i", str(archive))
        assert r.returncode == 0, r.stderr
        yield
