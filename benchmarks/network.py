"""A published port's throughput and connection rate, side by side with Docker's userland proxy.

    python benchmarks/network.py [--gigabytes N] [--connections N] [--no-docker]

Three paths to the same server program (Python, a 1 MiB recv_into loop; an echo of one byte per
connection), measured in one run:

- direct:   the client talks to the server on the host's 127.0.0.1 (the ceiling);
- sandkit:  the server runs in a container with network="none"; sandkit publishes its port
            (the init connects inside, the host relays with splice);
- docker-proxy: Docker's userland proxy (`/usr/sbin/docker-proxy`, the program dockerd starts for
            each `-p` when it cannot use iptables, as with `dockerd --iptables=false`), run
            directly in front of the same server on the host's loopback. Without a daemon: a
            private dockerd with a bridge would add a docker0 interface to a shared machine, and
            the proxy is what it would run. Docker's path would also cross a veth and a bridge, so
            this peer is, if anything, flattered.

Throughput: one connection carries N GB from the client to the server, which answers with the
byte count after the client's half-close; the time runs from connect to that answer.
Connection rate: sequential connections, each sending one byte and reading its echo.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from polling import wait_until

import sandkit

SINK_PORT, ECHO_PORT = 9000, 9001
# Both servers in one program: a sink that counts what one connection carries, and a one-byte
# echo, one connection at a time each (what is measured is the path, not the server).
SERVER = """
import socket, sys, threading
host, sink_port, echo_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(512); return s
def sink(s):
    buf = bytearray(1 << 20)
    while True:
        c, _ = s.accept(); total = 0
        while n := c.recv_into(buf):
            total += n
        c.sendall(str(total).encode()); c.close()
def echo(s):
    while True:
        c, _ = s.accept()
        data = c.recv(1)
        if data: c.sendall(data)
        c.close()
sink_sock, echo_sock = listen(sink_port), listen(echo_port)
threading.Thread(target=sink, args=(sink_sock,), daemon=True).start()
echo(echo_sock)
"""
CHUNK = bytes(4 << 20)


def throughput(address: tuple[str, int], total: int) -> float:
    """GB/s (10^9 bytes) that one connection carries through ``address``."""
    started = time.perf_counter()
    with socket.create_connection(address) as sock:
        view = memoryview(CHUNK)
        left = total
        while left:
            left -= sock.send(view[: min(left, len(view))])
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(64), b""))
    elapsed = time.perf_counter() - started
    assert int(answer) == total, f"the server got {answer!r} of {total} bytes"
    return total / elapsed / 1e9


def connection_rate(address: tuple[str, int], count: int) -> float:
    """Sequential connections per second, each one byte there and back."""
    started = time.perf_counter()
    for _ in range(count):
        with socket.create_connection(address) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
    return count / (time.perf_counter() - started)


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"?")
            return sock.recv(1) == b"?"
    except OSError:
        return False


@contextlib.contextmanager
def host_server() -> Iterator[tuple[str, int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, "127.0.0.1", str(SINK_PORT), str(ECHO_PORT)]
    )
    try:
        wait_until(lambda: _answers(("127.0.0.1", ECHO_PORT)), "the host's server")
        yield "127.0.0.1", SINK_PORT, ECHO_PORT
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def sandkit_server() -> Iterator[tuple[str, int, int]]:
    with sandkit.Container("host", ports=["127.0.0.1::80", "127.0.0.1::81"]) as c:
        c.spawn(["python3", "-c", SERVER, "127.0.0.1", "80", "81"], stdin=False)
        (host, sink), (_, echo) = c.port(80), c.port(81)
        wait_until(lambda: _answers((host, echo)), "the container's server")
        yield host, sink, echo


def _start_docker_proxy(target: tuple[str, int]) -> tuple[subprocess.Popen[bytes], int]:
    """docker-proxy as dockerd starts it: a pipe on fd 3 where it says "0" once it listens
    (or "1" and why not)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status_r, status_w = os.pipe()
    high = os.dup2(status_w, 100)  # out of the way of fd 3 first, then into place in the child
    try:
        proc = subprocess.Popen(
            [
                "docker-proxy",
                "-proto",
                "tcp",
                "-host-ip",
                "127.0.0.1",
                "-host-port",
                str(port),
                "-container-ip",
                target[0],
                "-container-port",
                str(target[1]),
            ],
            preexec_fn=lambda: os.dup2(high, 3),
            close_fds=False,
        )  # (subprocess would close fd 3)
    finally:
        os.close(high)
        os.close(status_w)
    said = os.read(status_r, 256)
    os.close(status_r)
    if not said.startswith(b"0"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"docker-proxy did not start: {said!r}")
    return proc, port


@contextlib.contextmanager
def docker_proxies(target: tuple[str, int, int]) -> Iterator[tuple[str, int, int]]:
    """docker-proxy in front of each of the host server's ports."""
    host, sink, echo = target
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for port in (sink, echo):
            started.append(_start_docker_proxy((host, port)))
        yield "127.0.0.1", started[0][1], started[1][1]
    finally:
        for proc, _ in started:
            proc.kill()
            proc.wait()


def measure(name: str, endpoints: tuple[str, int, int], total: int, count: int) -> dict[str, float]:
    host, sink, echo = endpoints
    throughput((host, sink), min(total, 1 << 28))  # warm-up
    row = {"GB/s": throughput((host, sink), total), "conn/s": connection_rate((host, echo), count)}
    print(f"{name:<14} {row['GB/s']:8.2f} GB/s {row['conn/s']:10.0f} conn/s", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gigabytes", type=float, default=1.0, help="bytes through one connection (default 1 GB)"
    )
    parser.add_argument(
        "--connections", type=int, default=2000, help="sequential connections (default 2000)"
    )
    parser.add_argument("--no-docker", action="store_true", help="skip docker-proxy")
    args = parser.parse_args()
    total, count = int(args.gigabytes * 1e9), args.connections
    print(
        f"{total / 1e9:g} GB through one connection; {count} sequential connections (1 byte each way)"
    )
    print(f"{'path':<14} {'throughput':>13} {'rate':>17}")
    rows = {}
    with host_server() as direct:
        rows["direct"] = measure("direct", direct, total, count)
        with sandkit_server() as published:
            rows["sandkit"] = measure("sandkit", published, total, count)
        if not args.no_docker and shutil.which("docker-proxy"):
            with docker_proxies(direct) as proxied:
                rows["docker-proxy"] = measure("docker-proxy", proxied, total, count)
        else:
            print("docker-proxy: not measured", file=sys.stderr)
    if "docker-proxy" in rows:
        for key in ("GB/s", "conn/s"):
            print(
                f"sandkit / docker-proxy {key:<7} = {rows['sandkit'][key] / rows['docker-proxy'][key]:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
