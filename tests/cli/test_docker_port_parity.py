"""`sandkit run -p/-P` and `docker run -p/-P` publishing the same server of the same image: the
same bytes, HTTP status and headers for the same requests, the same UDP reply, and the same
`port` output (but for sandkit's documented default address, see `as_sandkit_binds`).

Docker publishes a port through its bridge, which the host must not get: its daemon here runs in
network, PID and mount namespaces of its own (dockerd.private_dockerd(netns=True)), and its ports
are fetched from inside that network namespace; sandkit's are fetched from the host. Both sides
use the same client program (netprobe.py). Needs root and Debian's docker.io; elsewhere skipped,
with the reason shown.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import dockerd
import pytest
from netprobe import probe

from .conftest import sandkit

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "sandkit-port-parity/busybox:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WWW = "/www"
HTTPD = ("httpd", "-f", "-p", "80", "-h", WWW)  # busybox httpd, in the foreground
# The host's python, bind-mounted with /usr into both containers (busybox's nc has no UDP).
UDP_ECHO = (
    "/usr/bin/python3",
    "-c",
    """
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(b"echo:" + data, self.client_address)
socketserver.UDPServer(("0.0.0.0", 53), Echo).serve_forever()
""",
)
BLOB_SIZE = 3 << 20
# The same requests to both: an index, a large binary file whole and in part, a missing path.
REQUESTS = [
    ["/", {}],
    ["/index.html", {}],
    ["/blob", {}],
    ["/blob", {"Range": "bytes=1000-66535"}],
    ["/missing", {}],
]


class Docker(NamedTuple):
    daemon: dockerd.Daemon

    def __call__(self, *argv: str, check: bool = True) -> Any:
        return dockerd.run(self.daemon.env, *argv, check=check)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with contextlib.ExitStack() as stack:
        try:
            daemon = stack.enter_context(dockerd.private_dockerd(netns=True))
        except dockerd.DockerUnavailable as e:
            pytest.skip(f"docker port parity: {e}")
        yield Docker(daemon)


@pytest.fixture(scope="module")
def rootfs_tar(busybox_dir, tmp_path_factory) -> Path:
    """The busybox root filesystem, with /lib and /lib64 pointing into /usr (for the host's
    python under a bind-mounted /usr), as a tar for `docker import`."""
    path = tmp_path_factory.mktemp("port-parity") / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(busybox_dir, arcname=".")
        for name in ("lib", "lib64"):
            link = tarfile.TarInfo(f"./{name}")
            link.type, link.linkname = tarfile.SYMTYPE, f"usr/{name}"
            tar.addfile(link)
    return path


@pytest.fixture(scope="module")
def image(docker, rootfs_tar) -> str:
    """`rootfs_tar` with EXPOSE 80 and 53/udp (for -P): imported into Docker, then from `docker
    save` into sandkit's store, so both run byte-for-byte the same image. Docker's daemon and its
    store go at the end of the module."""
    changes = [f"ENV PATH={PATH}", "EXPOSE 80", "EXPOSE 53/udp"]
    docker("import", *(f"--change={c}" for c in changes), str(rootfs_tar), IMAGE)
    archive = rootfs_tar.parent / "image.tar"
    docker("save", "-o", str(archive), IMAGE)
    loaded = sandkit("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    return IMAGE


@pytest.fixture(scope="module")
def www(tmp_path_factory) -> Path:
    """What both httpd serve, bind-mounted read-only: an index and random binary content."""
    path = tmp_path_factory.mktemp("www")
    (path / "index.html").write_text("<p>the same on both sides</p>\n")
    (path / "blob").write_bytes(os.urandom(BLOB_SIZE))
    for file in path.iterdir():
        file.chmod(0o644)
    path.chmod(0o755)
    return path


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free on the host's 127.0.0.1 (the daemon's namespace has nothing bound at all)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pair(NamedTuple):
    """The same container in both tools, under the same name."""

    docker: Docker
    name: str

    def docker_port(self, *port: str) -> tuple[int, list[str], str]:
        r = self.docker("port", self.name, *port, check=False)
        return r.returncode, r.stdout.decode().splitlines(), r.stderr.decode()

    def sandkit_port(self, *port: str) -> tuple[int, list[str], str]:
        r = sandkit("port", self.name, *port)
        return r.returncode, r.stdout.splitlines(), r.stderr

    def fetch_docker(self, port: int, requests: list[Any] = REQUESTS) -> list[Any]:
        base = f"http://127.0.0.1:{port}"
        return probe({"http": base, "requests": requests}, self.docker.daemon.netns)

    def fetch_sandkit(self, port: int, requests: list[Any] = REQUESTS) -> list[Any]:
        return probe({"http": f"http://127.0.0.1:{port}", "requests": requests})


@contextlib.contextmanager
def running(docker: Docker, argv: list[str], name: str) -> Iterator[Pair]:
    """`run -d --name NAME ARGV` in both tools, both removed at the end of the block."""
    try:
        started = docker("run", "-d", "--pull", "never", "--name", name, *argv, check=False)
        assert started.returncode == 0, started.stderr.decode()
        ours = sandkit("run", "-d", "--name", name, *argv)
        assert ours.returncode == 0, ours.stderr
        yield Pair(docker, name)
    finally:
        docker("rm", "-f", name, check=False)
        sandkit("rm", "-f", name)


def _ipv4_port(lines: list[str]) -> int:
    """The host port on IPv4 of `port NAME PORT` output (Docker adds one on IPv6)."""
    (line,) = [line for line in lines if not line.startswith("[")]
    return int(line.rsplit(":", 1)[1])


def without_date(responses: list[Any]) -> list[Any]:
    """Responses with the Date header left out, the one that differs between two fetches."""
    return [
        [status, [h for h in headers if h[0].lower() != "date"], body]
        for status, headers, body in responses
    ]


def with_any_port(lines: list[str]) -> list[str]:
    return [re.sub(r":\d+$", ":PORT", line) for line in lines]


def as_sandkit_binds(docker_lines: list[str]) -> list[str]:
    """Docker's `port` lines as sandkit's should read: a port published without an address
    sandkit binds on 127.0.0.1 only (README, "Published ports"), where Docker binds 0.0.0.0 and
    [::] (one line each); lines of a port given with an address stay as they are."""
    ipv6 = [line for line in docker_lines if "[::]:" in line]
    ipv4 = [line for line in docker_lines if line not in ipv6]
    # (the two may have different ephemeral ports: Docker picks one for each)
    everywhere = [line for line in ipv4 if "0.0.0.0:" in line]
    assert with_any_port(ipv6) == [
        line.replace("0.0.0.0:", "[::]:") for line in with_any_port(everywhere)
    ], docker_lines
    return [line.replace("0.0.0.0:", "127.0.0.1:") for line in ipv4]


# --- TCP: the same bytes ---------------------------------------------------------------------


def test_fixed_host_port_serves_the_same_bytes(docker, image, www):
    port = _free_port()  # the same on both sides: free on the host, and the daemon's is empty
    argv = ["-p", f"127.0.0.1:{port}:80", "-v", f"{www}:{WWW}:ro", image, *HTTPD]
    with running(docker, argv, "web-fixed") as pair:
        theirs, ours = pair.fetch_docker(port), pair.fetch_sandkit(port)
        assert without_date(ours) == without_date(theirs)
        # ...and what both served is what there is (so both are not wrong alike)
        statuses = [status for status, _, _ in theirs]
        assert statuses == [200, 200, 200, 206, 404]
        assert theirs[2][2] == (www / "blob").read_bytes()
        assert theirs[3][2] == (www / "blob").read_bytes()[1000:66536]

        assert pair.sandkit_port() == pair.docker_port() == (0, [f"80/tcp -> 127.0.0.1:{port}"], "")
        assert pair.sandkit_port("80") == pair.docker_port("80") == (0, [f"127.0.0.1:{port}"], "")


def test_ephemeral_host_port_serves_the_same_bytes(docker, image, www):
    argv = ["-p", "80", "-p", "127.0.0.1::81", "-v", f"{www}:{WWW}:ro", image, *HTTPD]
    with running(docker, argv, "web-ephemeral") as pair:
        theirs_80, ours_80 = pair.docker_port("80"), pair.sandkit_port("80")
        assert ours_80[0] == theirs_80[0] == 0, (ours_80, theirs_80)
        assert with_any_port(ours_80[1]) == with_any_port(as_sandkit_binds(theirs_80[1]))
        # with the address given, the lines are the same but for the port Docker picked
        assert with_any_port(pair.sandkit_port("81/tcp")[1]) == with_any_port(
            pair.docker_port("81/tcp")[1]
        )
        listing_theirs, listing_ours = pair.docker_port(), pair.sandkit_port()
        assert with_any_port(listing_ours[1]) == with_any_port(as_sandkit_binds(listing_theirs[1]))

        theirs = pair.fetch_docker(_ipv4_port(theirs_80[1]))
        ours = pair.fetch_sandkit(_ipv4_port(ours_80[1]))
        assert without_date(ours) == without_date(theirs)


def test_publish_all_publishes_the_exposed_ports(docker, image, www):
    argv = ["-P", "-v", f"{www}:{WWW}:ro", image, *HTTPD]
    with running(docker, argv, "web-all") as pair:
        listing_theirs, listing_ours = pair.docker_port(), pair.sandkit_port()
        assert listing_ours[0] == listing_theirs[0] == 0
        assert with_any_port(listing_ours[1]) == with_any_port(as_sandkit_binds(listing_theirs[1]))
        assert [line.split(" -> ")[0] for line in listing_ours[1]] == ["53/udp", "80/tcp"]

        requests = [["/blob", {}], ["/missing", {}]]
        theirs = pair.fetch_docker(_ipv4_port(pair.docker_port("80")[1]), requests)
        ours = pair.fetch_sandkit(_ipv4_port(pair.sandkit_port("80")[1]), requests)
        assert without_date(ours) == without_date(theirs)


def test_port_not_published_is_the_same_error(docker, image):
    with running(docker, ["-p", "127.0.0.1::80", image, "sleep", "600"], "unpublished") as pair:
        for port in ("81", "81/tcp", "80/udp"):
            theirs, ours = pair.docker_port(port), pair.sandkit_port(port)
            assert ours == theirs, port


# --- UDP ---------------------------------------------------------------------------------


def test_udp_port_gives_the_same_reply(docker, image):
    port = _free_port(socket.SOCK_DGRAM)
    argv = ["-p", f"{port}:53/udp", "-v", "/usr:/usr:ro", image, *UDP_ECHO]
    with running(docker, argv, "udp-echo") as pair:
        request = {"udp": ["127.0.0.1", port], "message": os.urandom(512)}
        theirs = probe(request, docker.daemon.netns)
        ours = probe(request)
        assert ours == theirs == b"echo:" + request["message"]

        theirs_lines, ours_lines = pair.docker_port("53/udp"), pair.sandkit_port("53/udp")
        assert ours_lines == (0, as_sandkit_binds(theirs_lines[1]), "")


# --- the private daemon itself -----------------------------------------------------------


def _has_docker_bridge_and_rules(netns: Path | None = None) -> tuple[bool, bool]:
    """Whether the network namespace (the host's by default) has Docker's docker0 interface, and
    its DOCKER chain of NAT rules."""
    enter = ["nsenter", f"--net={netns}", "--"] if netns is not None else []
    link = subprocess.run([*enter, "ip", "link", "show", "docker0"], capture_output=True)
    chain = subprocess.run([*enter, "iptables", "-t", "nat", "-S", "DOCKER"], capture_output=True)
    return link.returncode == 0, chain.returncode == 0


def test_private_daemon_keeps_its_bridge_and_leaves_nothing_after_a_failure(docker, rootfs_tar):
    """A second daemon (`docker` is there only to skip where the first cannot start): while it
    publishes a port, its bridge and NAT rules are in its own network namespace, not the host's;
    after an exception in its block, with a container still running that ignores SIGTERM, no
    process of it, no mount and no state directory is left."""
    hosts_own = _has_docker_bridge_and_rules()  # (False, False) unless the host runs Docker
    with (
        pytest.raises(RuntimeError, match="a failing test"),
        dockerd.private_dockerd(netns=True) as daemon,
    ):
        state = Path(daemon.env["DOCKER_HOST"].removeprefix("unix://")).parent
        netns_inode = os.stat(daemon.netns).st_ino
        dockerd.run(daemon.env, "import", str(rootfs_tar), "left/running:1")
        dockerd.run(
            daemon.env,
            "run",
            "-d",
            "--pull",
            "never",
            "-p",
            "127.0.0.1::80",
            "left/running:1",
            *HTTPD,
        )
        assert _has_docker_bridge_and_rules(daemon.netns) == (True, True)
        assert _has_docker_bridge_and_rules() == hosts_own
        assert dockerd.processes_in_netns(netns_inode)
        raise RuntimeError("a failing test")
    assert dockerd.processes_in_netns(netns_inode) == set()
    assert not state.exists()
    assert str(state) not in Path("/proc/self/mountinfo").read_text()
