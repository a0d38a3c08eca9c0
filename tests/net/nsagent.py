"""A small agent that runs inside a test's network namespace (no sandkit, no pytest): it serves
TCP and UDP echo, and makes connections, on JSON commands read line by line from stdin, with one
JSON answer per command on stdout. It exits when stdin closes, so a test that dies takes it along.

Commands: {"op": "serve", "proto": "tcp"|"udp", "host": ..., "port": ...};
{"op": "connect", "proto": ..., "host": ..., "port": ..., "keep": NAME or null} (a TCP
connection that is kept stays open for "echo"); {"op": "echo", "keep": NAME}. Answers:
{"result": "ok"} or {"result": "<errno name>"} or {"result": "timeout"}.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading

TIMEOUT = 5.0  # a probe that gets no answer at all fails after this (the tests want a refusal)
kept: dict[str, socket.socket] = {}


def _echo_stream(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def _serve_tcp(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_echo_stream, args=(conn,), daemon=True).start()


def _serve_udp(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(data, peer)


def serve(proto: str, host: str, port: int) -> str:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # beside a socket of the same port on 0.0.0.0
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    if proto == "tcp":
        sock.listen(64)
    target = _serve_tcp if proto == "tcp" else _serve_udp
    threading.Thread(target=target, args=(sock,), daemon=True).start()
    return "ok"


def _round_trip(sock: socket.socket) -> str:
    sock.sendall(b"ping\n") if sock.type == socket.SOCK_STREAM else sock.send(b"ping\n")
    return "ok" if sock.recv(4096) == b"ping\n" else "bad echo"


def connect(proto: str, host: str, port: int, keep: str | None) -> str:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    # getaddrinfo: an IPv6 link-local address comes with its interface (fe80::1%eth0)
    family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
    sock = socket.socket(family, kind)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    if keep:
        kept[keep] = sock
        return _round_trip(sock)
    with sock:
        return _round_trip(sock)


def run(command: dict) -> str:
    try:
        if command["op"] == "serve":
            return serve(command["proto"], command["host"], command["port"])
        if command["op"] == "connect":
            return connect(command["proto"], command["host"], command["port"], command.get("keep"))
        return _round_trip(kept[command["keep"]])
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def main() -> None:
    print(json.dumps({"result": "ready"}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"result": run(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
