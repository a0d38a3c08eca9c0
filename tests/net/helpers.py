"""What the network tests share: network namespaces made by the test (stand-ins for containers
until the container side is wired), and the host's state that a network must leave as it was."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from polling import wait_until


def host_address() -> str:
    """A non-loopback IPv4 address of this host (where pasta carries containers' traffic)."""
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    raise AssertionError("this host has no non-loopback IPv4 address")


def network_processes(home: str) -> list[str]:
    """Keepers of networks under ``home`` (they hold their network's directory open), and the
    uplink (slirp4netns or pasta) each started, dead keeper or not (exec'd with the environment
    of the host process, its SANDKIT_HOME; a keeper is only forked: its /proc environ is its host's at exec)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,comm,args"], capture_output=True, text=True)
    found = []
    for line in out.stdout.splitlines():
        pid, comm, args = [*line.split(None, 2), "", ""][:3]
        # the uplink: pasta, or slirp4netns
        is_pasta = "up0" in args and ("--no-map-gw" in args or "slirp4netns" in args)
        keeper = comm == "sandkit-keeper" and _holds_under(pid, home)
        if keeper or (is_pasta and _home_of(pid).startswith(home)):
            found.append(line.strip())
    return found


def _home_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return ""
    for entry in environ:
        if entry.startswith(b"SANDKIT_HOME="):
            return entry.removeprefix(b"SANDKIT_HOME=").decode(errors="replace")
    return ""


def host_state(home: str) -> dict[str, object]:
    """The host's interfaces, firewall and network processes."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return {
        "links": sorted(line.split(":")[1].strip() for line in links.splitlines()),
        "rules": sorted(
            r for r in rules.splitlines() if not r.startswith("#") and ":" not in r[:1]
        ),
        "processes": network_processes(home),
    }


@contextlib.contextmanager
def netns_process() -> Iterator[int]:
    """A process in a network namespace of its own: its pid."""
    process = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        wait_until(
            lambda: os.readlink(f"/proc/{process.pid}/ns/net") != os.readlink("/proc/self/ns/net"),
            "the new network namespace",
        )
        yield process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def in_netns(pid: int, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def configure(pid: int, config: dict) -> None:
    """What the init does with setup.net, done by hand in ``pid``'s namespace."""
    iface = config["iface"]
    for argv in (
        ["ip", "link", "set", iface, "mtu", str(config["mtu"]), "up"],
        ["ip", "addr", "add", f"{config['address']}/{config['prefix']}", "dev", iface],
        ["ip", "route", "add", "default", "via", config["gateway"]],
    ):
        done = in_netns(pid, *argv)
        assert done.returncode == 0, done.stderr


def netns_fd(pid: int) -> int:
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


# Python run inside a namespace by nsenter: the host's interpreter and dnspython.
QUERY = """
import sys, dns.message, dns.query, dns.rcode
q = dns.message.make_query(sys.argv[2], "A")
r = (dns.query.tcp if sys.argv[3] == "tcp" else dns.query.udp)(q, sys.argv[1], timeout=3)
print(dns.rcode.to_text(r.rcode()), *sorted(i.address for a in r.answer for i in a))
"""

CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print(s.recv(100).decode())
"""


def query(pid: int, server: str, name: str, transport: str = "udp") -> str:
    done = in_netns(pid, sys.executable, "-c", QUERY, server, name, transport)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def connect(pid: int, address: str, port: int) -> subprocess.CompletedProcess[str]:
    return in_netns(pid, sys.executable, "-c", CONNECT, address, str(port))


def keeper_pid(connection) -> int:
    """The pid of the keeper at the other end of ``connection`` (it runs in the network's
    namespace N)."""
    creds = connection._sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return struct.unpack("3i", creds)[0]


@contextlib.contextmanager
def greeting_server(address: str) -> Iterator[int]:
    """A TCP server on ``address`` that says hello to each connection: its port."""
    import threading

    server = socket.create_server((address, 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello from the host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def home_dir() -> Path:
    return Path(os.environ["SANDKIT_HOME"])


@contextlib.contextmanager
def killed_host_process(code: str, *args: str) -> Iterator[str]:
    """A child Python running ``code`` (a host process using a network): yields the first line
    it prints, then SIGKILLs it."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def _holds_under(pid: str, home: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(home):
                return True
    return False
