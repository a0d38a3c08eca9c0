"""A network built by hand for the egress tests, as the keeper builds one, root or rootless:

    C (the container)  --veth--  N (bridge sk0, 10.88.0.1/16, the rules)  --veth--  OUT

N routes C's traffic out of its uplink ``up0`` with MASQUERADE; OUT stands for the outside and
holds the addresses the tests aim at (a public one, another one, the metadata address and the
host's own address), each served by TCP and UDP echo servers. Each namespace is held by a
``cat`` that exits when the test closes its stdin (or dies), so nothing outlives the test.
Rootless: N is made in a new user namespace by the unprivileged test user, and C and OUT in
that same user namespace, as the keeper and a nested container are.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from conftest import unprivileged_ids
from polling import wait_until

from sandkit.net import firewall

SUBNET = IPv4Network("10.88.0.0/16")
GATEWAY = IPv4Address("10.88.0.1")
CONTAINER = IPv4Address("10.88.0.2")
UPLINK = "up0"
N_UPLINK_ADDRESS = IPv4Address("172.30.0.2")
OUT_ADDRESS = IPv4Address("172.30.0.1")
PUBLIC = IPv4Address("203.0.113.10")  # TEST-NET-3 (RFC 5737): stands for a public server
OTHER = IPv4Address("198.51.100.7")  # TEST-NET-2: a server the policies do not name
METADATA = IPv4Address("169.254.169.254")
OUT_TCP_PORTS = (80, 443, 5432)
OUT_UDP_PORTS = (53, 443)
N_TCP_PORT = 8080  # something listening in N itself, on every address (IPv6 too)
N_UDP_PORT = 5353  # and over UDP on every IPv6 address

AGENT = Path(__file__).with_name("nsagent.py")
# The test user must be able to run it: the system's interpreter (this checkout's may live
# under /root)
AGENT_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ANSWER_TIMEOUT = 15.0  # an agent answers every command within its own 5 s socket timeout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def host_address() -> IPv4Address | None:
    """One of the host's own non-loopback addresses, as iproute2 lists them (None if it has
    none)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        address = IPv4Address(line.split()[3].split("/")[0])
        if not address.is_loopback:
            return address
    return None


class Agent:
    """An nsagent.py running in one namespace."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        assert self._answer() == "ready"

    def _answer(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_TIMEOUT)
        assert ready, "the namespace agent did not answer"
        line = self.process.stdout.readline()
        assert line, f"the namespace agent died (exit {self.process.wait()})"
        return json.loads(line)["result"]

    def call(self, **command: Any) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def serve(self, proto: str, host: IPv4Address | str, port: int) -> None:
        assert self.call(op="serve", proto=proto, host=str(host), port=port) == "ok"

    def connect(
        self, proto: str, host: IPv4Address | str, port: int, keep: str | None = None
    ) -> str:
        return self.call(op="connect", proto=proto, host=str(host), port=port, keep=keep)

    def echo(self, keep: str) -> str:
        return self.call(op="echo", keep=keep)


class Lab:
    """The three namespaces, their links and agents. `close` removes all of it."""

    def __init__(self, mode: str) -> None:
        assert mode in ("root", "rootless")
        self.rootless = mode == "rootless"
        self.holders: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: list[Agent] = []
        self.inodes: set[int] = set()  # of the network namespaces made
        self.host_address = host_address()

    # --- processes in the namespaces ------------------------------------------------------

    def _as_user(self) -> dict[str, Any]:
        if not self.rootless:
            return {}
        uid, gid = unprivileged_ids()
        return {"user": uid, "group": gid, "extra_groups": []}

    def enter(self, name: str) -> list[str]:
        """The command prefix that runs a program in namespace ``name``."""
        # --preserve-credentials: our uid is root in N's user namespace already (and setgroups
        # is denied there, which nsenter's switch to root would call)
        user = ["--user", "--preserve-credentials"] if self.rootless else []
        return ["nsenter", "--target", str(self.holders[name].pid), *user, "--net", "--"]

    def _hold(self, name: str, argv: list[str]) -> None:
        holder = subprocess.Popen(argv, stdin=subprocess.PIPE, **self._as_user())
        self.holders[name] = holder
        # unshare execs cat once the namespace is made: from then on the pid holds it
        wait_until(
            lambda: (
                holder.poll() is not None or os.readlink(f"/proc/{holder.pid}/exe").endswith("/cat")
            ),
            f"the holder of namespace {name}",
        )
        assert holder.poll() is None, f"could not make namespace {name}"
        self.inodes.add(os.stat(f"/proc/{holder.pid}/ns/net").st_ino)

    def run(self, name: str, argv: list[str], stdin: str = "") -> str:
        result = subprocess.run(
            self.enter(name) + argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **self._as_user(),
        )
        assert result.returncode == 0, f"{argv} in {name}: {result.stderr}"
        return result.stdout

    def agent(self, name: str) -> Agent:
        process = subprocess.Popen(
            [*self.enter(name), AGENT_PYTHON, "-I", str(AGENT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            **self._as_user(),
        )
        agent = Agent(process)
        self.agents.append(agent)
        return agent

    def apply(self, rules: str, ipv6: bool = False) -> None:
        """sandkit.net.firewall.restore(rules), called in N (as the keeper calls it: rootless, as
        the unprivileged user in N's user namespace) by a forked child of this process (the
        test user may not be able to run this checkout's interpreter)."""
        pid = self.holders["N"].pid
        kinds = ["user", "net"] if self.rootless else ["net"]
        fds = [os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in kinds]
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            message = b""
            try:
                if self.rootless:
                    uid, gid = unprivileged_ids()
                    os.setgroups([])
                    os.setresgid(gid, gid, gid)
                    os.setresuid(uid, uid, uid)
                for fd in fds:
                    _setns(fd)
                firewall.restore(rules, flush=False, lock_file=None, ipv6=ipv6)
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
                message = f"{type(exc).__name__}: {exc}".encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        for fd in fds:
            os.close(fd)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
        os.waitpid(child, 0)
        assert not message, f"apply in N: {message.decode()}"

    def bridge_link_local(self) -> str:
        """The IPv6 link-local address of N's bridge, as C reaches it (fe80::...%eth0)."""
        found: list[str] = []

        def present() -> bool:
            out = self.run("N", ["ip", "-6", "-o", "addr", "show", "dev", "sk0", "scope", "link"])
            found[:] = [line.split()[3].split("/")[0] for line in out.splitlines()]
            return bool(found)

        wait_until(present, "the IPv6 link-local address of N's bridge")
        return f"{found[0]}%eth0"

    def iptables_save(self) -> str:
        return self.run("N", ["iptables-save"])

    # --- building and removing ------------------------------------------------------------

    def build(self) -> None:
        user = ["--user", "--map-root-user"] if self.rootless else []
        self._hold("N", ["unshare", *user, "--net", "cat"])
        # C and OUT: new network namespaces in N's user namespace (rootless), as a container
        # nested under the keeper's user namespace is
        n = str(self.holders["N"].pid)
        inside = ["nsenter", "--target", n, "--user", "--preserve-credentials", "--"]
        for name in ("C", "OUT"):
            self._hold(name, [*(inside if self.rootless else []), "unshare", "--net", "cat"])
        c, out = self.holders["C"].pid, self.holders["OUT"].pid
        self.run("N", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        # IPv6 link-local addresses usable at once (no duplicate detection to wait for)
        for name in ("N", "C"):
            self.run(name, ["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"])
        self.run(
            "N",
            ["ip", "-batch", "-"],
            stdin=f"""\
link set lo up
link add sk0 type bridge
addr add {GATEWAY}/{SUBNET.prefixlen} dev sk0
link set sk0 up
link add v0 type veth peer name eth0 netns {c}
link set v0 master sk0 up
link add {UPLINK} type veth peer name eth0 netns {out}
addr add {N_UPLINK_ADDRESS}/24 dev {UPLINK}
link set {UPLINK} up
route add default via {OUT_ADDRESS}
""",
        )
        self.run(
            "C",
            ["ip", "-batch", "-"],
            stdin=f"""\
link set lo up
addr add {CONTAINER}/{SUBNET.prefixlen} dev eth0
link set eth0 up
route add default via {GATEWAY}
""",
        )
        extra = [PUBLIC, OTHER, METADATA, *([self.host_address] if self.host_address else [])]
        self.run(
            "OUT",
            ["ip", "-batch", "-"],
            stdin="link set lo up\n"
            f"addr add {OUT_ADDRESS}/24 dev eth0\n"
            + "".join(f"addr add {a}/32 dev eth0\n" for a in extra)
            + "link set eth0 up\n",
        )
        out_agent = self.agent("OUT")
        for port in OUT_TCP_PORTS:
            out_agent.serve("tcp", "0.0.0.0", port)
        # UDP on each address of its own: a reply must come from the address it was sent to
        # (a socket on 0.0.0.0 would answer from OUT's primary address)
        for port in OUT_UDP_PORTS:
            for address in extra:
                out_agent.serve("udp", address, port)
        n_agent = self.agent("N")
        n_agent.serve("tcp", "0.0.0.0", N_TCP_PORT)
        n_agent.serve("tcp", "::", N_TCP_PORT)
        n_agent.serve("udp", "::", N_UDP_PORT)
        n_agent.serve("udp", GATEWAY, 53)
        n_agent.serve("tcp", GATEWAY, 53)
        self.container = self.agent("C")

    def close(self) -> None:
        for process in [*(a.process for a in self.agents), *self.holders.values()]:
            if process.stdin is not None:
                process.stdin.close()  # the agent and holders exit on EOF
        for process in [*(a.process for a in self.agents), *self.holders.values()]:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def namespaces_in_use(inodes: set[int]) -> set[int]:
    """Which of these network namespace inodes some process still has."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                inode = os.stat(f"/proc/{entry}/ns/net").st_ino
            except OSError:
                continue
            if inode in inodes:
                found.add(inode)
    return found
