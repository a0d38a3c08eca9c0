"""`run -p/-P` and `sandkit port`: Docker's flags and output, with real traffic on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import attrs
import pytest
from polling import wait_until

from sandkit.cli import build_parser
from sandkit.cli.spec import RunSpec
from sandkit.images.config import ImageConfig
from sandkit.images.image import Image
from sandkit.runtime import handover
from sandkit.runtime.ports import parse_ports

from .conftest import containers_on_disk, sandkit, sandkit_env

pytestmark = pytest.mark.slow  # starts containers, the CLI or servers


def _echo(address: tuple[str, int], message: bytes) -> bytes:
    """What comes back through ``address`` once the echo server inside serves."""
    replies: list[bytes] = []

    def answered() -> bool:
        try:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(message)
                sock.shutdown(socket.SHUT_WR)
                replies.append(b"".join(iter(lambda: sock.recv(65536), b"")))
        except (ConnectionResetError, ConnectionRefusedError):
            return False  # nothing listens inside yet (or the run has not bound its port yet)
        return bool(replies[-1])

    wait_until(answered, f"the echo server behind {address}")
    return replies[-1]


@pytest.fixture
def detached_echo(bb):
    r = sandkit(
        "run",
        "-d",
        "-p",
        "127.0.0.1::80",
        "-p",
        "127.0.0.1::53/udp",
        bb,
        "nc",
        "-ll",
        "-p",
        "80",
        "-e",
        "cat",
    )
    assert r.returncode == 0, r.stderr
    yield r.stdout.strip()
    sandkit("rm", "-f", r.stdout.strip())


def test_publish_and_port_of_a_detached_container(detached_echo):
    listing = sandkit("port", detached_echo)
    assert listing.returncode == 0, listing.stderr
    lines = sorted(listing.stdout.splitlines())
    # Docker's format: "80/tcp -> 0.0.0.0:49153" (127.0.0.1 here, sandkit's default address)
    assert [re.fullmatch(r"(\d+/\w+) -> 127\.0\.0\.1:(\d+)", line).group(1) for line in lines] == [
        "53/udp",
        "80/tcp",
    ]
    one = sandkit("port", detached_echo, "80")
    assert one.stdout == f"{lines[1].split(' -> ')[1]}\n"
    host, port = one.stdout.strip().rsplit(":", 1)
    assert _echo((host, int(port)), b"through the supervisor") == b"through the supervisor"

    missing = sandkit("port", detached_echo, "81/tcp")
    assert missing.returncode == 1 and "No public port '81/tcp' published" in missing.stderr

    assert sandkit("rm", "-f", detached_echo).returncode == 0
    with pytest.raises(ConnectionRefusedError):  # the supervisor's listener went with it
        socket.create_connection((host, int(port)), timeout=5)


def test_foreground_run_publishes_too(bb):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the container serves one connection, then ends: the run returns when it was served
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandkit",
            "run",
            "--rm",
            "-p",
            f"{port}:80",
            bb,
            "nc",
            "-l",
            "-p",
            "80",
            "-e",
            "cat",
        ],
        env=sandkit_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _echo(("127.0.0.1", port), b"foreground") == b"foreground"
        assert run.wait(timeout=30) == 0
    finally:
        run.kill()
        run.communicate()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-p", "80:80:80"], "invalid host address '80'"),
        (["-p", "http"], "invalid port 'http'"),
        (["-p", "80/sctp"], "invalid protocol 'sctp'"),
        (["--network", "host", "-p", "80"], "network='host'"),
    ],
)
def test_bad_publish_flags_exit_125(bb, flags, message):
    before = containers_on_disk()
    for detach in ([], ["-d"]):
        r = sandkit("run", *detach, *flags, bb, "true")
        assert r.returncode == 125 and message in r.stderr, r.stderr
    assert containers_on_disk() == before


def test_port_in_use_exits_125_naming_it(bb):
    before = containers_on_disk()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for detach in ([], ["-d"]):
            r = sandkit("run", "--rm", *detach, "-p", f"{port}:80", bb, "true")
            assert r.returncode == 125, r.stderr
            assert f"127.0.0.1:{port}/tcp: it is already in use" in r.stderr
    assert containers_on_disk() == before


def test_publish_all_adds_the_images_exposed_ports(bb):
    args = build_parser().parse_args(["run", "-P", "-p", "8080:80", bb, "true"])
    spec = RunSpec.from_args(args)
    image = attrs.evolve(
        Image.from_directory(bb), config=ImageConfig(exposed_ports=("443/tcp", "53/udp", "80/tcp"))
    )
    # -P adds what -p does not publish already, each on an ephemeral port (Docker's -P)
    assert spec.container(image).options["ports"] == ["8080:80", "443/tcp", "53/udp"]
    # ... and a detached container's supervisor is handed the same ports
    wanted = spec.container_options(image)
    handed = handover.options_from_json(handover.options_to_json(wanted))
    assert parse_ports(handed["ports"]) == parse_ports(wanted["ports"])
