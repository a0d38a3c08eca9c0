"""A Docker daemon for the parity tests and the startup benchmark: the one `docker` already
reaches, or (as root, with Debian's docker.io installed) a private `dockerd` with its own data
root, exec root and socket, so the host's Docker (if any) is untouched. No pytest in here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 60.0


class DockerUnavailable(Exception):
    """No daemon is reachable and none can be started here; the message says why."""


def reachable(env: dict[str, str]) -> bool:
    try:
        r = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


@contextlib.contextmanager
def docker_env() -> Iterator[dict[str, str]]:
    """The environment (DOCKER_HOST) under which `docker` reaches a daemon, for the block."""
    if shutil.which("docker") is None:
        raise DockerUnavailable("no `docker` client here (apt-get install docker.io)")
    env = dict(os.environ)
    if reachable(env):
        yield env
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise DockerUnavailable(
            "no reachable Docker daemon, and none can be started (needs root and dockerd)"
        )
    base = Path(tempfile.mkdtemp(prefix="sandkit-dockerd-"))
    socket = base / "docker.sock"
    # No bridge or iptables: everything here runs with --network none.
    with open(base / "dockerd.log", "wb") as log:
        daemon = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(base / "data"),
                "--exec-root",
                str(base / "exec"),
                "--pidfile",
                str(base / "docker.pid"),
                "-H",
                f"unix://{socket}",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    env["DOCKER_HOST"] = f"unix://{socket}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not reachable(env):
            if daemon.poll() is not None or time.monotonic() > deadline:
                log_text = (base / "dockerd.log").read_text(errors="replace")[-2000:]
                raise DockerUnavailable(f"dockerd did not start:\n{log_text}")
            time.sleep(0.3)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(base, ignore_errors=True)
