"""Networks side by side in one run: container start on network="bridge" vs "none", a published
port's throughput and connection rate vs Docker's userland proxy, and outbound throughput vs the
host's own.

    python benchmarks/network.py [--no-docker] [--pairs N] [--gigabytes N] [--connections N]
                                 [--outbound-runs N]

Start (the issue's target: "bridge" adds at most 1 ms): the time from ``Container("host",
network=...).start()`` to the answer of its first exec (``true``); each container is stopped
after (not timed). N interleaved pairs (default 50: none, bridge, none, bridge...) with spare
containers off (SANDKIT_PRESPAWN=0: spares never serve a container on a network, so neither
gets one), the median of each and the range. Meanwhile one long-lived container on "bridge"
keeps the network's keeper up, so the steady state is measured; the first start of a container
on "bridge" (no keeper running: the keeper builds the network's namespace, bridge and rules and
starts its uplink, slirp4netns) is measured separately, three times (the keeper ends with its
last container).

Published ports: the same server program (Python, a 1 MiB recv_into loop; an echo of one byte
per connection) reached along four paths:

- direct:   the client talks to the server on the host's 127.0.0.1 (the ceiling);
- sandkit none / sandkit bridge: the server runs in a container with network="none" or
            "bridge"; sandkit publishes its port (the init connects inside the container's
            network namespace, the host relays with splice), the same path in both modes;
- docker-proxy: Docker's userland proxy (`/usr/sbin/docker-proxy`, the program dockerd starts for
            each `-p` when it cannot use iptables, as with `dockerd --iptables=false`), run
            directly in front of the same server on the host's loopback. Without a daemon: a
            private dockerd with a bridge would add a docker0 interface to a shared machine, and
            the proxy is what it would run. Docker's path would also cross a veth and a bridge, so
            this peer is, if anything, flattered.

Throughput: one connection carries N GB (default 1) from the client to the server (after a
20-byte header with the size), which answers with the byte count it got once it has them all;
the time runs from connect to that answer, after a warm-up connection of 256 MiB. Connection
rate: sequential connections, each sending one byte and reading its echo.

Outbound: the same client program, run in a container on "bridge", sends N GB to the server
listening on the host's own non-loopback address (the source address of the default route), out
through the network's namespace and its uplink (slirp4netns; pasta when slirp4netns is
missing); compared with the same program run on the host, sending to the same server. When
sandkit has the egress= option, the container's policy names that address and port explicitly
(the host's own addresses are denied otherwise). Three runs (--outbound-runs) of each, in turn,
the median and the range; a run of the container's that fails (pasta has been seen to stall one
for tens of seconds) is reported, not fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from polling import wait_until

import sandkit
from sandkit.net.store import BRIDGE, keeper_socket
from sandkit.runtime.options import ContainerOptions

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
        size = int(c.recv(20, socket.MSG_WAITALL) or 0)
        while total < size and (n := c.recv_into(buf)):
            total += n
        c.sendall(b"%d\\n" % total); c.close()
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
# The sending side of every throughput figure, on the host or in a container alike: a warm-up
# connection, then one that carries TOTAL bytes; prints GB/s (10^9 bytes) of the second. The
# size goes first, so that the client need not half-close: Debian 12's pasta (passt
# 0.0~git20230309) never passes the server's FIN on to a container that half-closed first, and
# has been seen to deliver the server's answer to it many times over.
CLIENT = """
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = memoryview(bytes(4 << 20))
def send(total):
    started = time.perf_counter()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"%-20d" % total)
        left = total
        while left:
            left -= sock.send(chunk[: min(left, len(chunk))])
        answer = b""
        while not answer.endswith(b"\\n") and (data := sock.recv(64)):
            answer += data
    elapsed = time.perf_counter() - started
    assert answer == b"%d\\n" % total, f"the answer for {total} bytes was {answer!r}"
    return total / elapsed / 1e9
send(min(total, 1 << 28))
print(send(total))
"""
CLIENT_TIMEOUT = 120.0  # seconds for one throughput run (1 GB: at most 40 s seen)
FIRST_STARTS = 3


def client_argv(address: tuple[str, int], total: int) -> list[str]:
    return ["python3", "-c", CLIENT, address[0], str(address[1]), str(total)]


def throughput(address: tuple[str, int], total: int) -> float:
    """GB/s that one connection from the host carries through ``address``."""
    done = subprocess.run(
        client_argv(address, total), capture_output=True, check=True, timeout=CLIENT_TIMEOUT
    )
    return float(done.stdout)


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


def host_address() -> str:
    """The host's own non-loopback address: the source of its default route (a UDP socket's
    connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: off the host, so the default route
        except OSError as exc:
            raise SystemExit(f"no default route, so no outbound path to measure: {exc}") from None
        address = probe.getsockname()[0]
    if address.startswith("127."):
        raise SystemExit(f"the default route's source is a loopback address ({address})")
    return address


@contextlib.contextmanager
def host_server(address: str = "127.0.0.1") -> Iterator[tuple[str, int, int]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, address, str(SINK_PORT), str(ECHO_PORT)])
    try:
        wait_until(
            lambda: proc.poll() is not None or _answers((address, ECHO_PORT)), "the host's server"
        )
        if proc.returncode is not None:
            raise SystemExit(f"the host's server on {address} failed (exit {proc.returncode})")
        yield address, SINK_PORT, ECHO_PORT
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def sandkit_server(network: str) -> Iterator[tuple[str, int, int]]:
    ports = ["127.0.0.1::80", "127.0.0.1::81"]
    with sandkit.Container("host", network=network, ports=ports) as c:
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
    row = {"GB/s": throughput((host, sink), total), "conn/s": connection_rate((host, echo), count)}
    print(f"{name:<16} {row['GB/s']:8.2f} GB/s {row['conn/s']:10.0f} conn/s", flush=True)
    return row


def published_ports(total: int, count: int, docker: bool) -> None:
    print(f"\npublished port: {total / 1e9:g} GB through one connection; {count} sequential")
    print("connections (1 byte each way)")
    print(f"{'path':<16} {'throughput':>13} {'rate':>17}")
    rows = {}
    with host_server() as direct:
        rows["direct"] = measure("direct", direct, total, count)
        for network in ("none", "bridge"):
            with sandkit_server(network) as published:
                rows[network] = measure(f"sandkit {network}", published, total, count)
        if docker and shutil.which("docker-proxy"):
            with docker_proxies(direct) as proxied:
                rows["docker-proxy"] = measure("docker-proxy", proxied, total, count)
        else:
            print("docker-proxy: not measured", file=sys.stderr)
    if "docker-proxy" in rows:
        for network in ("none", "bridge"):
            ratios = "  ".join(
                f"{key} {rows[network][key] / rows['docker-proxy'][key]:.2f}x"
                for key in ("GB/s", "conn/s")
            )
            print(f"sandkit {network} / docker-proxy: {ratios}")


def outbound(total: int, runs: int) -> None:
    """A container on "bridge" and the host itself each send ``total`` bytes to a server on
    the host's non-loopback address, ``runs`` times in turn."""
    address = host_address()
    print(f"\noutbound: {total / 1e9:g} GB through one connection to {address}:{SINK_PORT}")
    print(f"(median [range] of {runs} runs in turn)")
    extra: dict[str, object] = {}
    if "egress" in ContainerOptions.__optional_keys__:
        # The host's own addresses are denied unless named.
        extra["egress"] = [f"{address}:{SINK_PORT}"]
    own: list[float] = []
    contained: list[float] = []
    failures = []
    with (
        host_server(address) as (host, sink, _),
        sandkit.Container("host", network="bridge", **extra) as c,  # type: ignore[arg-type]
    ):
        for _ in range(runs):
            own.append(throughput((host, sink), total))
            done = c.exec(client_argv((host, sink), total), timeout=CLIENT_TIMEOUT)
            if done.exit_code == 0:
                contained.append(float(done.stdout))
            else:  # said, not fatal: the rest of the figures stand
                why = done.stderr.decode(errors="replace").strip().splitlines()
                failures.append("timed out" if done.timed_out else why[-1] if why else "failed")
    print(f"{'host':<16} {_spread(own, 'GB/s')}")
    if contained:
        print(f"{'sandkit bridge':<16} {_spread(contained, 'GB/s')}")
        ratio = statistics.median(contained) / statistics.median(own)
        print(f"sandkit bridge / host: {ratio:.2f}x")
    for failure in failures:
        print(f"sandkit bridge: a run failed: {failure}")


@contextlib.contextmanager
def started(network: str) -> Iterator[float]:
    """A container on ``network``, started; yields the milliseconds from making it to the
    answer of its first exec, then stops it."""
    begun = time.perf_counter()
    with sandkit.Container("host", network=network) as c:
        c.exec(["true"], check=True)
        yield (time.perf_counter() - begun) * 1000


def start_ms(network: str) -> float:
    with started(network) as elapsed:
        return elapsed


def bridge_keeper_listening() -> bool:
    """Whether the bridge network's keeper still listens (one whose containers are gone does
    until it exits; store.keeper_running counts it as gone, but a start now would reuse it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(os.fspath(keeper_socket(BRIDGE.directory())))
        except OSError:
            return False
    return True


def _spread(samples: list[float], unit: str = "ms") -> str:
    return f"{statistics.median(samples):6.2f} {unit} [{min(samples):.2f}-{max(samples):.2f}]"


def container_start(pairs: int) -> None:
    print(f"\ncontainer start, made to first exec answered (median [range] of {pairs} interleaved")
    print("pairs; no spares)")
    for _ in range(3):
        start_ms("none")  # the process's first containers pay for imports and threads
    with contextlib.ExitStack() as keeper_holder:
        first = []
        for n in range(FIRST_STARTS):
            wait_until(
                lambda: not bridge_keeper_listening(),
                "the bridge network's keeper to end (do other processes have containers on it?)",
                timeout=30,
            )
            if n < FIRST_STARTS - 1:
                first.append(start_ms("bridge"))
            else:  # the last one stays up: the keeper runs until the end of the pairs
                first.append(keeper_holder.enter_context(started("bridge")))
        samples: dict[str, list[float]] = {"none": [], "bridge": []}
        for n in range(3 + pairs):  # three warm-up pairs
            for network, values in samples.items():
                elapsed = start_ms(network)
                if n >= 3:
                    values.append(elapsed)
    none, bridge = (statistics.median(samples[k]) for k in ("none", "bridge"))
    print(f"{'none':<16} {_spread(samples['none'])}")
    print(f"{'bridge':<16} {_spread(samples['bridge'])}")
    print(f"bridge - none: {bridge - none:+.2f} ms ({bridge / none:.2f}x; target: at most +1 ms)")
    print(f"first start on bridge (keeper and uplink start too): {_spread(first)} of {len(first)}")


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
    parser.add_argument(
        "--pairs", type=int, default=50, help="interleaved none/bridge starts (default 50)"
    )
    parser.add_argument(
        "--outbound-runs", type=int, default=3, help="outbound runs of each sender (default 3)"
    )
    parser.add_argument("--no-docker", action="store_true", help="skip docker-proxy")
    args = parser.parse_args()
    if min(args.pairs, args.connections, args.outbound_runs) < 1 or args.gigabytes <= 0:
        parser.error("--pairs, --connections, --outbound-runs: at least 1; --gigabytes: above 0")
    # Spares never serve a container on a network: none for "none" either, for a fair start.
    os.environ["SANDKIT_PRESPAWN"] = "0"
    total = int(args.gigabytes * 1e9)
    container_start(args.pairs)
    published_ports(total, args.connections, not args.no_docker)
    outbound(total, args.outbound_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
