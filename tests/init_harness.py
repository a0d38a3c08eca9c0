"""Test-only helper: starts sandkit-init in fresh namespaces with `unshare` and speaks the control
protocol (docs/protocol.md) with the msgpack package. Not the real host side (sandkit/ipc)."""

from __future__ import annotations

import array
import atexit
import os
import pwd
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT_BIN = os.path.join(ROOT, "sandkit", "_init_bin", "sandkit-init")
INIT_SRC = os.path.join(ROOT, "sandkit", "_init")
BUSYBOX = "/bin/busybox"
APPLETS = [
    "sh",
    "echo",
    "cat",
    "ls",
    "sleep",
    "id",
    "hostname",
    "tty",
    "head",
    "test",
    "true",
    "false",
    "mkdir",
    "touch",
    "pwd",
    "env",
    "ps",
    "readlink",
    "stat",
    "wc",
    "grep",
    "mount",
    "kill",
    "mkfifo",
    "chmod",
    "seq",
    "setsid",
    "nc",
    "ip",
]
TEST_USER = "sandkit-test"

_copies: dict[str, str] = {}


def _readable_copy(path: str) -> str:
    """A world-readable copy of an executable, made once per process."""
    if path not in _copies:
        directory = tempfile.mkdtemp(prefix="sandkit-init-")
        atexit.register(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        copy = os.path.join(directory, os.path.basename(path))
        shutil.copy(path, copy)
        os.chmod(copy, 0o755)
        _copies[path] = copy
    return _copies[path]


PASSWD = """root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
"""
GROUP = """root:x:0:
nogroup:x:65534:
app:x:1000:
extra:x:2000:app,nobody
"""


def build_init() -> str:
    srcs = sorted(os.path.join(INIT_SRC, f) for f in os.listdir(INIT_SRC) if f.endswith(".c"))
    os.makedirs(os.path.dirname(INIT_BIN), exist_ok=True)
    subprocess.run(
        ["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", INIT_BIN, *srcs], check=True
    )
    return INIT_BIN


def test_user() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)
        pw = pwd.getpwnam(TEST_USER)
    return pw.pw_uid, pw.pw_gid


def make_rootfs(base: str) -> str:
    """A tiny busybox image: bin/ with applet symlinks, etc/passwd and etc/group, a FIFO."""
    root = os.path.join(base, "rootfs")
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "home/app", "root"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write(GROUP)
    with open(os.path.join(root, "etc", "hello.txt"), "w") as f:
        f.write("hello from the image\n")
    with open(os.path.join(root, "bin", "noexec.sh"), "w") as f:
        f.write("#!/bin/sh\necho no\n")
    os.chmod(os.path.join(root, "bin", "noexec.sh"), 0o644)
    with open(os.path.join(root, "etc", "secret"), "w") as f:
        f.write("secret\n")
    os.mkfifo(os.path.join(root, "etc", "fifo"))
    os.symlink("/../../../etc/shadow", os.path.join(root, "etc", "escape"))
    return root


class Init:
    """One init process in new namespaces plus the host end of its control socket."""

    def __init__(self, rootless: bool = False, init_bin: str = INIT_BIN):
        self.rootless = rootless
        self.base = tempfile.mkdtemp(prefix="sk-init-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.rootfs = make_rootfs(self.base)
        self.scratch = os.path.join(self.base, "scratch")
        os.mkdir(self.scratch)
        self.uid = self.gid = None
        if rootless:
            self.uid, self.gid = test_user()
            for dirpath, dirnames, filenames in os.walk(self.base):
                for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                    os.lchown(n, self.uid, self.gid)
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfd = child.fileno()
        uid, gid = self.uid, self.gid

        def pre():
            if uid is not None:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            os.dup2(cfd, 3)

        cmd = ["unshare", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child"]
        if rootless:
            cmd[1:1] = ["--user", "--map-root-user"]
            init_bin = _readable_copy(init_bin)  # the checkout may be closed to the test user
        self.proc = subprocess.Popen(
            [*cmd, init_bin], pass_fds=(3,), preexec_fn=pre, stdin=subprocess.DEVNULL
        )
        child.close()
        self.sock.settimeout(10)
        self.next_id = 1

    def setup_msg(self, **over) -> dict:
        msg = {
            "t": "setup",
            "v": 1,
            "scratch": self.scratch,
            "scratch_size": 64 << 20,
            "rootfs": {
                "kind": "overlay",
                "lower": [self.rootfs],
                "readonly": False,
                "userxattr": self.rootless,
            },
            "hostname": "sandbox",
            "mounts": [],
            "rootless": self.rootless,
            "masked": ["/proc/kcore", "/etc/secret", "/proc/scsi", "/sys/firmware", "/nonexistent"],
            "readonly": ["/proc/sys", "/proc/sysrq-trigger"],
        }
        msg.update(over)
        return msg

    def setup(self, **over) -> dict:
        self.send(self.setup_msg(**over))
        return self.recv()[0]

    # -- wire ------------------------------------------------------------------------------
    def send_raw(self, data: bytes, fds=()) -> None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def send(self, msg: dict, fds=()) -> None:
        self.send_raw(msgpack.packb(msg, use_bin_type=True), fds)

    def recv(self) -> tuple[dict, list[int]]:
        data, anc, _flags, _ = self.sock.recvmsg(70000, socket.CMSG_SPACE(16 * 4))
        if not data:
            raise EOFError("init closed the control socket")
        fds = []
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                fds.extend(a)
        return msgpack.unpackb(data, raw=False), fds

    def request(self, msg: dict, fds=()) -> tuple[dict, list[int]]:
        msg = dict(msg)
        msg.setdefault("id", self.new_id())
        self.send(msg, fds)
        return self.recv()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- helpers ---------------------------------------------------------------------------
    def start(self, argv, stdin: bytes | None = None, **kw) -> tuple[dict, list[int], dict]:
        """Starts a process with pipes; returns (reply, host fds [stdin_w, stdout_r, stderr_r])."""
        i_r, i_w = os.pipe()
        o_r, o_w = os.pipe()
        e_r, e_w = os.pipe()
        msg = {"t": "exec", "argv": argv, "env": kw.pop("env", ["PATH=/bin"]), "stdio": "fds", **kw}
        try:
            reply, _ = self.request(msg, [i_r, o_w, e_w, *kw.get("_extra_fds", [])])
        finally:
            os.close(i_r)
            os.close(o_w)
            os.close(e_w)
        if stdin is not None:
            os.write(i_w, stdin)
        os.close(i_w)
        return reply, [o_r, e_r]

    def run(self, argv, stdin: bytes | None = None, **kw) -> dict:
        """Runs to completion: {'reply', 'exit', 'stdout', 'stderr'}."""
        reply, (o_r, e_r) = self.start(argv, stdin=stdin, **kw)
        out, err = read_all(o_r), read_all(e_r)
        ex = None
        if reply["t"] == "started":
            ex = self.wait_exit(reply["id"])
        return {"reply": reply, "exit": ex, "stdout": out, "stderr": err}

    def capture(self, argv, **kw) -> dict:
        """Runs with stdio "capture" (the init collects the output): {'reply' (the last message),
        'exit', 'stdout', 'stderr', 'chunks' (output events)}."""
        msg = {
            "t": "exec",
            "argv": argv,
            "env": kw.pop("env", ["PATH=/bin"]),
            "stdio": "capture",
            **kw,
        }
        msg.setdefault("id", self.new_id())
        self.send(msg)
        return self.collect(msg["id"])

    def collect(self, exec_id: int) -> dict:
        """A captured exec's events until its exit (or error); other messages are dropped."""
        streams: dict[int, list[bytes]] = {1: [], 2: []}
        chunks = 0
        while True:
            msg, fds = self.recv()
            for fd in fds:
                os.close(fd)
            if msg["id"] != exec_id:
                continue
            if msg["t"] == "output":
                streams[msg["fd"]].append(msg["data"])
                chunks += 1
                continue
            ex = msg if msg["t"] == "exit" else None
            return {
                "reply": msg,
                "exit": ex,
                "chunks": chunks,
                "stdout": b"".join(streams[1]) + (ex["stdout"] if ex else b""),
                "stderr": b"".join(streams[2]) + (ex["stderr"] if ex else b""),
            }

    def wait_exit(self, exec_id: int) -> dict:
        while True:
            msg, fds = self.recv()
            for fd in fds:
                os.close(fd)
            if msg["t"] == "exit" and msg["id"] == exec_id:
                return msg

    def close(self, timeout: float = 10) -> int:
        self.sock.close()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def read_all(fd: int, timeout: float = 15) -> bytes:
    """Reads to EOF; a process left holding the pipe fails the test instead of hanging it."""
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not select.select([fd], [], [], max(0, deadline - time.monotonic()))[0]:
                raise TimeoutError("pipe still open: a process outlived its test")
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def procs_with(marker: str) -> list[int]:
    """Pids on the whole host whose command line contains marker."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def is_fifo(path: str) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)
