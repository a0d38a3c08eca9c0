"""A client for published ports that runs as a child process, in the host's network namespace or
(through nsenter) in another one, such as a private dockerd's: so both sides of a parity test are
reached by the same code, only from different places. No pytest in here.

    python tests/netprobe.py < REQUEST > RESPONSE     (msgpack both ways; see `probe`)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

# How long a server behind a port that was just published may take to answer at all.
READY_TIMEOUT = 15.0
UDP_RETRY_INTERVAL = 0.2


def probe(request: dict[str, Any], netns: Path | None = None) -> Any:
    """Runs `request` in a child process, inside the network namespace `netns` if one is given.

    {"http": BASE_URL, "requests": [[PATH, {HEADER: VALUE}], ...]} -> [[status, [[name, value],
    ...], body], ...], one real HTTP client (httpx) and connection per request; the first is
    retried until the server answers (for at most READY_TIMEOUT s), the others are not.
    {"udp": [HOST, PORT], "message": BYTES} -> the first datagram that comes back, the message
    being sent again every UDP_RETRY_INTERVAL s until one does (a datagram sent before the server
    inside bound its socket is lost, as UDP allows)."""
    enter = ["nsenter", f"--net={netns}", "--"] if netns is not None else []
    done = subprocess.run(
        [*enter, sys.executable, __file__],
        input=msgpack.packb(request),
        capture_output=True,
        timeout=READY_TIMEOUT + 60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"netprobe {request!r} failed: {done.stderr.decode(errors='replace')}")
    return msgpack.unpackb(done.stdout)


def _http(base: str, requests: list[list[Any]]) -> list[list[Any]]:
    import httpx

    answers = []
    for i, (path, headers) in enumerate(requests):
        deadline = time.monotonic() + (READY_TIMEOUT if i == 0 else 0)
        while True:
            try:
                with httpx.Client(base_url=base, timeout=30) as client:
                    r = client.get(path, headers=headers)
                break
            except httpx.TransportError:
                # nothing listens behind the port yet: refused, or closed by the proxy in front
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        answers.append([r.status_code, [list(h) for h in r.headers.multi_items()], r.content])
    return answers


def _udp(address: tuple[str, int], message: bytes) -> bytes:
    deadline = time.monotonic() + READY_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(UDP_RETRY_INTERVAL)
        sock.connect(address)
        while True:
            sock.send(message)
            try:
                return sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                # (refused: an ICMP error from a port not bound yet)


def main() -> None:
    request = msgpack.unpackb(sys.stdin.buffer.read())
    if "http" in request:
        answer: Any = _http(request["http"], request["requests"])
    else:
        host, port = request["udp"]
        answer = _udp((host, port), request["message"])
    sys.stdout.buffer.write(msgpack.packb(answer))


if __name__ == "__main__":
    main()
