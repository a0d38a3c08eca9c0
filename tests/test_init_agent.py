"""The container init (sandkit/_init) against the real kernel, without the clone helper: started
with `unshare` in new namespaces, spoken to over its control socket (tests/init_harness.py)."""

from __future__ import annotations

import errno
import os
import select
import struct
import sys
import time

import msgpack
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import init_harness as H
from polling import POLL_SH

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, useradd)"),
]


@pytest.fixture(scope="session", autouse=True)
def built():
    return H.build_init()


@pytest.fixture(params=[False, True], ids=["root", "rootless"])
def ctr(request):
    i = H.Init(rootless=request.param)
    try:
        assert i.setup() == {"t": "ready", "v": 1}
        yield i
    finally:
        i.close()


@pytest.fixture
def rctr():
    i = H.Init()
    try:
        assert i.setup() == {"t": "ready", "v": 1}
        yield i
    finally:
        i.close()


def sh(i, script, **kw):
    r = i.run(["sh", "-c", script], **kw)
    assert r["reply"]["t"] == "started", r
    return r


# -- setup ---------------------------------------------------------------------------------------


def test_setup_bad_lower_is_a_clear_error_and_exit():
    i = H.Init()
    try:
        reply = i.setup(rootfs={"kind": "overlay", "lower": ["/nonexistent/layer"]})
        assert reply["t"] == "error" and reply["id"] == 0
        assert reply["errno"] == errno.ENOENT
        assert "mount overlay on /" in reply["msg"]
        assert i.proc.wait(10) == 1
    finally:
        i.close()


def test_setup_version_mismatch():
    i = H.Init()
    try:
        reply = i.setup(v=2)
        assert reply["t"] == "error" and reply["errno"] == errno.EPROTO
        assert "protocol version mismatch: init speaks 1, host sent 2" in reply["msg"]
        assert i.proc.wait(10) == 1
    finally:
        i.close()


def test_setup_garbage_is_an_error():
    i = H.Init()
    try:
        i.send_raw(b"\xc1garbage")
        reply, _ = i.recv()
        assert reply["t"] == "error" and reply["errno"] == errno.EPROTO
        assert i.proc.wait(10) == 1
    finally:
        i.close()


def test_overlay_writable_root_upper_in_scratch(ctr):
    r = sh(ctr, "echo data > /new.txt && cat /new.txt && echo x >> /etc/hello.txt")
    assert r["exit"]["code"] == 0 and r["stdout"] == b"data\n"
    # the image layer itself is untouched; the host never sees the scratch tmpfs
    assert not os.path.exists(os.path.join(ctr.rootfs, "new.txt"))
    with open(os.path.join(ctr.rootfs, "etc", "hello.txt")) as f:
        assert f.read() == "hello from the image\n"
    assert os.listdir(ctr.scratch) == []


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_readonly_root(rootless):
    i = H.Init(rootless=rootless)
    try:
        assert (
            i.setup(
                rootfs={
                    "kind": "overlay",
                    "lower": [i.rootfs],
                    "readonly": True,
                    "userxattr": rootless,
                }
            )["t"]
            == "ready"
        )
        r = sh(i, "touch /x; echo rc=$?; echo ok > /tmp/y; cat /tmp/y")
        assert b"rc=1" in r["stdout"] and b"Read-only file system" in r["stderr"]
        r = sh(i, "echo ok > /dev/shm/z && cat /dev/shm/z")
        assert r["stdout"] == b"ok\n"
    finally:
        i.close()


def test_bind_root_and_user_mounts(tmp_path):
    i = H.Init()
    data = os.path.join(i.base, "data")
    os.mkdir(data)
    with open(os.path.join(data, "f"), "w") as f:
        f.write("shared\n")
    try:
        reply = i.setup(
            rootfs={"kind": "bind", "src": i.rootfs, "readonly": True},
            mounts=[
                {"type": "bind", "src": data, "dst": "/mnt/data", "ro": True},
                {"type": "bind", "src": os.path.join(data, "f"), "dst": "/etc/extra/f"},
                {"type": "tmpfs", "dst": "/work", "size": 1 << 20, "mode": 0o700},
                {"type": "dir", "dst": "/a/b/c", "mode": 0o755},
                {"type": "symlink", "dst": "/a/link", "target": "b/c"},
            ],
        )
        assert reply["t"] == "ready", reply
        r = sh(
            i,
            "cat /mnt/data/f /etc/extra/f; touch /mnt/data/g; echo rc=$?; "
            "echo w > /work/w && cat /work/w; readlink /a/link; test -d /a/link && echo dir",
        )
        assert r["stdout"] == b"shared\nshared\nrc=1\nw\nb/c\ndir\n", r
        assert sorted(os.listdir(data)) == ["f"]
    finally:
        i.close()


def test_tmpfs_root_built_from_mounts():
    i = H.Init()
    try:
        reply = i.setup(
            rootfs={"kind": "tmpfs"},
            mounts=[
                {
                    "type": "bind",
                    "src": os.path.join(i.rootfs, "bin"),
                    "dst": "/usr/bin",
                    "ro": True,
                },
                {"type": "symlink", "dst": "/bin", "target": "usr/bin"},
                {"type": "bind", "src": os.path.join(i.rootfs, "etc"), "dst": "/etc", "ro": True},
            ],
        )
        assert reply["t"] == "ready", reply
        r = sh(i, "ls /; cat /etc/hello.txt")
        assert b"usr" in r["stdout"] and b"hello from the image" in r["stdout"]
    finally:
        i.close()


@pytest.mark.parametrize(
    "mount,text",
    [
        ({"type": "bind", "src": "/nonexistent/src", "dst": "/x"}, "/nonexistent/src"),
        # /etc/escape -> /../../../etc/shadow: resolved inside the root, so it dangles there
        ({"type": "dir", "dst": "/etc/escape/x"}, "/etc/escape/x"),
    ],
)
def test_bad_mount_entry_is_an_error(mount, text):
    i = H.Init()
    try:
        reply = i.setup(mounts=[mount])
        assert reply["t"] == "error" and text in reply["msg"], reply
        assert i.proc.wait(10) == 1
        assert not os.path.exists("/etc/shadow/x")
    finally:
        i.close()


# -- the container's view --------------------------------------------------------------------------


def test_pid1_is_init_and_hostname(ctr):
    r = sh(ctr, "cat /proc/1/cmdline; echo; hostname; echo $$")
    lines = r["stdout"].split(b"\n")
    assert lines[0].rstrip(b"\0").endswith(b"sandkit-init")
    assert lines[1] == b"sandbox"
    assert r["reply"]["pid"] == int(lines[2])


def test_only_loopback(ctr):
    r = sh(ctr, "ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1")
    assert r["stdout"].split() == [b"lo", b"lo"] or r["stdout"].split()[0] == b"lo"
    r = sh(ctr, "cat /proc/net/dev")
    names = [ln.split(b":")[0].strip() for ln in r["stdout"].splitlines()[2:]]
    assert names == [b"lo"]


def test_dev_nodes_work(ctr):
    r = sh(
        ctr,
        "echo gone > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 3 /dev/zero "
        "| wc -c && readlink /dev/fd && readlink /dev/ptmx && ls /dev/pts",
    )
    assert r["exit"]["code"] == 0, r
    assert r["stdout"].split() == [b"4", b"3", b"/proc/self/fd", b"pts/ptmx", b"ptmx"]


def test_masked_and_readonly_paths(rctr):
    r = sh(
        rctr,
        "wc -c < /etc/secret; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/ostype;"
        " echo rc=$?",
    )
    assert r["stdout"].split() == [b"0", b"0", b"rc=1"]


def test_init_holds_no_stray_fds(rctr):
    # the init closes its side of this exec's start-up pipe once the exec has started
    r = sh(rctr, POLL_SH.format(condition="[ $(ls /proc/1/fd | wc -l) -le 6 ]") + "; ls /proc/1/fd")
    # 4 = the writable layer's upper directory (O_PATH, for commit and diff), 5 = signalfd
    assert r["stdout"].split() == [b"0", b"1", b"2", b"3", b"4", b"5"]


# -- exec ----------------------------------------------------------------------------------------


def test_exec_pipes_and_exit_code(ctr):
    r = ctr.run(["sh", "-c", "cat; echo err >&2; exit 7"], stdin=b"in\n")
    assert r["stdout"] == b"in\n" and r["stderr"] == b"err\n"
    assert r["exit"] == {"t": "exit", "id": r["reply"]["id"], "code": 7}


def test_exec_signal_exit(ctr):
    r = ctr.run(["sh", "-c", "kill -9 $$"])
    assert r["exit"]["signal"] == 9 and r["exit"]["core"] is False


def test_exec_env_cwd_home(ctr):
    r = ctr.run(["sh", "-c", "pwd; echo $HOME $FOO"], env=["PATH=/bin", "FOO=bar"], cwd="/etc")
    assert r["stdout"] == b"/etc\n/root bar\n"
    r = ctr.run(["sh", "-c", "echo $HOME"], env=["PATH=/bin", "HOME=/x"])
    assert r["stdout"] == b"/x\n"


def test_exec_bytes_argv_and_default_path(ctr):
    r = ctr.run([b"echo", b"\xff\xfe"], env=[])
    assert r["stdout"] == b"\xff\xfe\n"


@pytest.mark.parametrize(
    "argv,kw,kind,err,text",
    [
        (
            ["nosuchprog"],
            {},
            "notfound",
            errno.ENOENT,
            'executable file not found in $PATH: "nosuchprog"',
        ),
        (["/bin/nosuch"], {}, "notfound", errno.ENOENT, '"/bin/nosuch"'),
        (["/bin/noexec.sh"], {}, "noexec", errno.EACCES, 'permission denied: "/bin/noexec.sh"'),
        (["/etc"], {}, "noexec", errno.EACCES, 'permission denied: "/etc"'),
        (
            ["true"],
            {"user": "nobody2"},
            "user",
            errno.ENOENT,
            "unable to find user nobody2: no matching entries in passwd file",
        ),
        (["true"], {"user": "app:nogroup2"}, "user", errno.ENOENT, "unable to find group nogroup2"),
        (["true"], {"cwd": "/nope"}, "cwd", errno.ENOENT, '"/nope"'),
        (["true"], {"cwd": "/etc/hello.txt"}, "cwd", errno.ENOTDIR, '"/etc/hello.txt"'),
    ],
)
def test_exec_errors(ctr, argv, kw, kind, err, text):
    r = ctr.run(argv, **kw)
    rep = r["reply"]
    assert rep["t"] == "error" and rep["kind"] == kind and rep["errno"] == err, rep
    assert text in rep["msg"], rep
    # no exit event follows an error: the next request is answered directly
    assert ctr.request({"t": "ping"})[0]["t"] == "pong"


def test_exec_cwd_permission(rctr):
    sh(rctr, "mkdir -m 700 /secret")
    rep = rctr.run(["true"], cwd="/secret", user="app")["reply"]
    assert rep["t"] == "error" and rep["kind"] == "cwd" and rep["errno"] == errno.EACCES
    assert 'permission denied: cwd "/secret"' in rep["msg"]


@pytest.mark.parametrize(
    "user,expect",
    [
        ("nobody", b"uid=65534(nobody) gid=65534(nogroup) groups=2000(extra),65534(nogroup)"),
        ("1000:1000", b"uid=1000(app) gid=1000(app) groups=1000(app)"),
        ("app:app", b"uid=1000(app) gid=1000(app) groups=1000(app)"),
        ("app", b"uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"),
        ("4242", b"uid=4242 gid=0(root) groups=0(root)"),
        ("0:2000", b"uid=0(root) gid=2000(extra) groups=2000(extra)"),
    ],
)
def test_user_switching(rctr, user, expect):
    r = rctr.run(["id"], user=user)
    assert r["stdout"].strip() == expect, r


def test_rootless_unmapped_user_is_a_clear_error():
    i = H.Init(rootless=True)
    try:
        assert i.setup()["t"] == "ready"
        rep = i.run(["id"], user="app")["reply"]
        assert rep["t"] == "error" and rep["kind"] == "user"
        assert "setuid 1000: uid not mapped" in rep["msg"] or "setgid 1000" in rep["msg"], rep
        r = i.run(["id"], user="root")
        assert r["stdout"].startswith(b"uid=0(root) gid=0(root)")
    finally:
        i.close()


def test_capabilities_and_nnp(rctr):
    mask = (1 << 0) | (1 << 6)  # chown, setgid
    r = sh(rctr, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status", caps=mask, nnp=False)
    assert b"CapEff:\t0000000000000041" in r["stdout"]
    assert b"CapBnd:\t0000000000000041" in r["stdout"]
    assert b"NoNewPrivs:\t0" in r["stdout"]
    r = sh(rctr, "grep CapEff /proc/self/status", caps=mask, user="app")
    assert b"CapEff:\t0000000000000000" in r["stdout"]
    r = sh(rctr, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    assert b"CapEff:\t0000000000000000" in r["stdout"]
    assert b"CapBnd:\t0000000000000000" in r["stdout"]
    assert b"NoNewPrivs:\t1" in r["stdout"]
    # The bounding set shrank for good: a later exec cannot get back what an earlier one lost.
    r = rctr.run(["true"], caps=mask)
    assert r["reply"]["t"] == "error" and r["reply"]["errno"] == 1


def test_rlimits(ctr):
    r = sh(ctr, "ulimit -n; ulimit -s", rlimits=[[7, 64, 128], [3, -1, -1]])
    assert r["stdout"].split() == [b"64", b"unlimited"]


def test_seccomp_filter(ctr):
    # BPF: if nr == getppid return ERRNO(EPERM) else ALLOW (x86_64, arch check omitted in a test)
    ld, jeq, ret = 0x20, 0x15, 0x06
    prog = [(ld, 0, 0, 0), (jeq, 0, 1, 110), (ret, 0, 0, 0x00050000 | 1), (ret, 0, 0, 0x7FFF0000)]
    blob = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    r = sh(ctr, "echo $PPID; cat /proc/self/status | grep Seccomp:", seccomp=blob)
    assert b"Seccomp:\t2" in r["stdout"]
    r = ctr.run(["true"], seccomp=b"\x00" * 7)
    assert r["reply"]["t"] == "error" and r["reply"]["errno"] == errno.EPROTO


def _deny(nr: int) -> bytes:
    """BPF: syscall ``nr`` fails with EPERM, everything else is allowed (x86_64, no arch check)."""
    ld, jeq, ret = 0x20, 0x15, 0x06
    prog = [(ld, 0, 0, 0), (jeq, 0, 1, nr), (ret, 0, 0, 0x00050000 | 1), (ret, 0, 0, 0x7FFF0000)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


SETHOSTNAME, GETPPID = 170, 110


def _init_status(i, **kw) -> dict[str, bytes]:
    r = sh(i, "grep -E '^(Seccomp|CapBnd):' /proc/1/status", **kw)
    return dict(line.split(b":\t") for line in r["stdout"].splitlines())


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_setup_confines_the_init_before_any_exec(rootless):
    i = H.Init(rootless=rootless)
    try:
        assert i.setup(caps=1 << 0, seccomp=_deny(GETPPID))["t"] == "ready"
        # the exec asks for no filter, and for what set-up left: PID 1 got both at set-up
        assert _init_status(i, caps=1) == {b"Seccomp": b"2", b"CapBnd": b"0000000000000001"}
        r = i.run(["true"], caps=1 << 1)
        assert r["reply"]["t"] == "error" and "capabilities beyond" in r["reply"]["msg"]
        assert sh(i, "echo $PPID")["stdout"] == b"4294967295\n"  # getppid failed (-1): it is denied
    finally:
        i.close()


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_a_container_named_later_can_be_named_under_a_profile_without_sethostname(rootless):
    i = H.Init(rootless=rootless)
    try:
        assert i.setup(hostname="", caps=0, seccomp=_deny(SETHOSTNAME))["t"] == "ready"
        assert i.request({"t": "hostname", "name": "taken"})[0]["t"] == "ok"
        assert sh(i, "hostname")["stdout"] == b"taken\n"
        if not rootless:
            # root: the init kept /proc/sys/kernel/hostname open and was confined at set-up
            assert _init_status(i)[b"Seccomp"] == b"2"
        # rootless cannot keep that file open: the first exec of the profile confines the init
        r = sh(
            i,
            "hostname other; grep Seccomp: /proc/1/status",
            seccomp=_deny(SETHOSTNAME),
            seccomp_shared=True,
        )
        assert b"Operation not permitted" in r["stderr"] and b"Seccomp:\t2" in r["stdout"]
    finally:
        i.close()


def test_pty_exec(ctr):
    reply, fds = ctr.request(
        {
            "t": "exec",
            "argv": ["sh", "-c", "tty; test -t 0 && echo isatty; stty size"],
            "env": ["PATH=/bin"],
            "stdio": "pty",
            "rows": 33,
            "cols": 101,
        }
    )
    assert reply["t"] == "started" and len(fds) == 1
    master = fds[0]
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 10)
        assert r, out
        try:
            b = os.read(master, 4096)
        except OSError:  # EIO once the slave side is closed by everyone
            break
        if not b:
            break
        out += b
    os.close(master)
    assert ctr.wait_exit(reply["id"])["code"] == 0
    assert out.split(b"\r\n")[:3] == [b"/dev/pts/0", b"isatty", b"33 101"], out


def test_exec_wrong_fd_count_and_extra_fds_closed(ctr):
    r_, w_ = os.pipe()
    try:
        reply, _ = ctr.request({"t": "exec", "argv": ["true"], "stdio": "fds"}, [r_, w_])
        assert reply["t"] == "error" and reply["errno"] == errno.EPROTO
        # five fds where three are expected: the extras are closed by the init
        reply, (o_r, e_r) = ctr.start(["true"], _extra_fds=[r_, w_])
        assert reply["t"] == "started"
        H.read_all(o_r), H.read_all(e_r)
        ctr.wait_exit(reply["id"])
    finally:
        os.close(r_)
        os.close(w_)
    r = sh(
        ctr,
        POLL_SH.format(condition="[ $(ls /proc/1/fd | wc -l) -le 6 ]") + "; ls /proc/1/fd | wc -l",
    )
    assert r["stdout"].strip() == b"6"  # 0-2, the socket, the upper directory, the signalfd


# -- signal ----------------------------------------------------------------------------------------


def test_signal_plain_and_ended(ctr):
    reply, (o_r, e_r) = ctr.start(["sleep", "100"])
    assert reply["t"] == "started"
    ok, _ = ctr.request({"t": "signal", "target": reply["id"], "sig": 15})
    assert ok["t"] == "ok"
    assert ctr.wait_exit(reply["id"])["signal"] == 15
    H.read_all(o_r), H.read_all(e_r)
    ok, _ = ctr.request({"t": "signal", "target": reply["id"], "sig": 9})
    assert ok["t"] == "ok"


def test_tree_kill_kills_grandchildren(ctr):
    marker = f"31337{ctr.rootless:d}"
    # same process group, a new session below it, a grandchild; a double-forked daemon that
    # left the session is out of reach by design (see docs/protocol.md "signal")
    script = f"sleep {marker} & setsid sleep {marker} & sh -c 'sleep {marker}; true' & wait"
    reply, (o_r, e_r) = ctr.start(["sh", "-c", script])
    assert reply["t"] == "started"
    deadline = time.time() + 5
    while len(H.procs_with(f"sleep\0{marker}")) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert len(H.procs_with(f"sleep\0{marker}")) == 3
    ok, _ = ctr.request({"t": "signal", "target": reply["id"], "sig": 9, "tree": True})
    assert ok["t"] == "ok"
    assert ctr.wait_exit(reply["id"])["signal"] == 9
    H.read_all(o_r), H.read_all(e_r)
    deadline = time.time() + 5
    while H.procs_with(f"sleep\0{marker}") and time.time() < deadline:
        time.sleep(0.02)
    assert H.procs_with(f"sleep\0{marker}") == []


def test_orphans_are_reaped(rctr):
    zombies = "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l"
    r = sh(
        rctr,
        "for i in 1 2 3 4 5; do (sleep 0 &) ; done; "
        + POLL_SH.format(condition=f"[ $({zombies}) -eq 0 ]")
        + f"; {zombies}",
    )
    assert r["stdout"].strip() == b"0"


# -- captured exec ---------------------------------------------------------------------------------


def test_a_captured_exec_answers_once_with_its_output(ctr):
    r = ctr.capture(["sh", "-c", "cat; echo err >&2; exit 7"], input=b"in\n")
    assert r["exit"] == {
        "t": "exit",
        "id": r["reply"]["id"],
        "code": 7,
        "stdout": b"in\n",
        "stderr": b"err\n",
        "truncated": False,
    }
    assert r["chunks"] == 0  # no started event, no output events: one packet back


def test_captured_output_larger_than_a_packet_arrives_whole_and_in_order(ctr):
    r = ctr.capture(["sh", "-c", "seq 1 300000; seq 1 1000 >&2"])
    assert r["stdout"] == b"".join(b"%d\n" % n for n in range(1, 300001))
    assert r["stderr"] == b"".join(b"%d\n" % n for n in range(1, 1001))
    assert r["chunks"] > 50 and r["exit"]["code"] == 0


def test_a_captured_exec_keeps_the_first_bytes_up_to_its_limit(ctr):
    r = ctr.capture(["sh", "-c", "seq 1 100000; echo done >&2"], limit=100)
    assert r["stdout"] == b"".join(b"%d\n" % n for n in range(1, 100))[:100]
    assert r["stderr"] == b"done\n"
    # the writer was never blocked or cut off: the rest was read and dropped
    assert r["exit"]["code"] == 0 and r["exit"]["truncated"] is True


def test_a_captured_exec_ends_when_its_output_does(rctr):
    r = rctr.capture(["sh", "-c", "echo a; (sleep 0.3; echo b) &"])
    assert r["stdout"] == b"a\nb\n" and r["exit"]["code"] == 0


def test_a_tree_kill_ends_a_captured_exec_whose_output_is_held_open(ctr):
    marker = f"4242{ctr.rootless:d}"
    exec_id = ctr.new_id()
    ctr.send(
        {
            "t": "exec",
            "id": exec_id,
            "argv": ["sh", "-c", f"echo a; sleep {marker} &"],
            "env": ["PATH=/bin"],
            "stdio": "capture",
        }
    )
    deadline = time.time() + 5
    while not H.procs_with(f"sleep\0{marker}") and time.time() < deadline:
        time.sleep(0.02)
    # sh has exited, its background sleep holds stdout: no exit event yet
    assert select.select([ctr.sock], [], [], 0.3)[0] == []
    ctr.send({"t": "signal", "id": ctr.new_id(), "target": exec_id, "sig": 9, "tree": True})
    r = ctr.collect(exec_id)
    assert r["stdout"] == b"a\n" and r["exit"]["code"] == 0
    deadline = time.time() + 5
    while H.procs_with(f"sleep\0{marker}") and time.time() < deadline:
        time.sleep(0.02)
    assert H.procs_with(f"sleep\0{marker}") == []


def test_a_captured_exec_that_cannot_start_is_an_error_and_nothing_else(ctr):
    r = ctr.capture(["no-such-program"])
    assert r["reply"]["t"] == "error" and r["reply"]["kind"] == "notfound"
    assert ctr.request({"t": "ping"})[0]["t"] == "pong"  # no exit event came in between


def test_input_needs_a_captured_exec(ctr):
    reply, _ = ctr.request({"t": "exec", "argv": ["cat"], "env": [], "stdio": "pty", "input": b"x"})
    assert reply["t"] == "error" and "capture" in reply["msg"]


def test_captured_execs_run_side_by_side(rctr):
    ids = []
    for n in range(20):
        ids.append(rctr.new_id())
        rctr.send(
            {
                "t": "exec",
                "id": ids[-1],
                "argv": ["sh", "-c", f"sleep 0.{n % 3}; seq 1 {n * 500}"],
                "env": ["PATH=/bin"],
                "stdio": "capture",
            }
        )
    outputs: dict[int, list[bytes]] = {i: [] for i in ids}
    done = {}
    while len(done) < len(ids):
        msg, _ = rctr.recv()
        if msg["t"] == "output":
            outputs[msg["id"]].append(msg["data"])
        else:
            assert msg["t"] == "exit", msg
            done[msg["id"]] = b"".join(outputs[msg["id"]]) + msg["stdout"]
    for n, i in enumerate(ids):
        assert done[i] == b"".join(b"%d\n" % k for k in range(1, n * 500 + 1))


# -- open ------------------------------------------------------------------------------------------


def test_open_read_write_append_dir(ctr):
    rep, fds = ctr.request({"t": "open", "path": "/etc/hello.txt", "mode": "r"})
    assert rep["t"] == "opened" and len(fds) == 1
    assert H.read_all(fds[0]) == b"hello from the image\n"
    rep, fds = ctr.request({"t": "open", "path": "/tmp/new", "mode": "w", "perm": 0o600})
    os.write(fds[0], b"one\n")
    os.close(fds[0])
    rep, fds = ctr.request({"t": "open", "path": "/tmp/new", "mode": "a"})
    os.write(fds[0], b"two\n")
    os.close(fds[0])
    r = sh(ctr, "cat /tmp/new; stat -c %a /tmp/new")
    assert r["stdout"] == b"one\ntwo\n600\n"
    rep, fds = ctr.request({"t": "open", "path": "/etc", "mode": "dir"})
    assert rep["t"] == "opened"
    assert "hello.txt" in os.listdir(fds[0])
    os.close(fds[0])


def test_open_refuses_fifo_device_and_missing(ctr):
    for path, mode in (("/etc/fifo", "r"), ("/etc/fifo", "w"), ("/dev/null", "r"), ("/etc", "r")):
        rep, fds = ctr.request({"t": "open", "path": path, "mode": mode})
        assert fds == [] and rep["t"] == "error", (path, mode, rep)
        assert rep["errno"] == errno.EINVAL and "not a regular file" in rep["msg"]
    rep, _ = ctr.request({"t": "open", "path": "/nope", "mode": "r"})
    assert rep["errno"] == errno.ENOENT
    rep, fds = ctr.request({"t": "open", "path": "/../../../etc/hello.txt", "mode": "r"})
    assert rep["t"] == "opened"  # '..' stops at the container root
    os.close(fds[0])


# -- malformed input ---------------------------------------------------------------------------------


def test_malformed_packets_answered_and_serving_continues(ctr):
    bad = [
        b"\xc1garbage",
        b"",
        b"\x92\x01\x02",  # not a map
        msgpack.packb({"t": "ping"}),  # no id
        msgpack.packb({"t": 5, "id": 9}),  # wrong type for t
        msgpack.packb({"t": "exec", "id": 10, "argv": "sh", "stdio": "fds"}),
        msgpack.packb({"t": "exec", "id": 11, "argv": [1, 2], "stdio": "fds"}),
        msgpack.packb({"t": "exec", "id": 12, "argv": ["a\0b"], "stdio": "pty"}),
        msgpack.packb({"t": "signal", "id": 13, "target": "x", "sig": 9}),
        msgpack.packb({"t": "open", "id": 14, "path": "/x", "mode": "rw"}),
        msgpack.packb({"t": "nosuch", "id": 15}),
        msgpack.packb({"t": "ping", "id": 16, "x": [[[[[[[[[[1]]]]]]]]]]}),  # too deep
        msgpack.packb({"t": "ping", "id": 17, "x": list(range(5000))}),  # too many items
        msgpack.packb({"t": "ping", "id": 18})[:-3],  # truncated
        msgpack.packb({"t": "ping", "id": 19}) + b"\x00",  # trailing
        b"\xdd\xff\xff\xff\xff",  # lying count
        b"\xdb\xff\xff\xff\xf0abc",  # lying length
        msgpack.packb({"t": "ping", "id": 2**64 - 1}),  # over int64
        b"\x81\xa1t" + b"\xa0" * 0 + b"\xc4\x00",
        msgpack.packb({"t": "ping", "id": 20, "pad": b"x" * 70000}),  # oversized
    ]
    for data in bad:
        ctr.send_raw(data)
        rep, fds = ctr.recv()
        assert rep["t"] == "error" and rep["errno"] == errno.EPROTO, (data[:40], rep)
        assert fds == []
    # fds attached to rejected packets are closed by the init
    r_, w_ = os.pipe()
    ctr.send_raw(b"\xc1", [r_, w_] * 8)
    os.close(r_)
    assert ctr.recv()[0]["t"] == "error"
    os.set_blocking(w_, False)
    with pytest.raises(BrokenPipeError):
        os.write(w_, b"x")
    os.close(w_)
    rep, _ = ctr.request({"t": "ping", "id": 99})
    assert rep == {"t": "pong", "id": 99}
    assert (
        ctr.request({"t": "exec", "argv": ["true"], "stdio": "fds"}, [0, 1])[0]["errno"]
        == errno.EPROTO
    )
    r = sh(ctr, "echo still")
    assert r["stdout"] == b"still\n"


def test_error_echoes_id(ctr):
    rep, _ = ctr.request({"t": "nosuch", "id": 1234})
    assert rep["id"] == 1234 and rep["t"] == "error"


# -- end -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_eof_kills_everything(rootless):
    i = H.Init(rootless=rootless)
    marker = f"4242{rootless:d}"
    assert i.setup()["t"] == "ready"
    reply, (o_r, e_r) = i.start(["sh", "-c", f"(setsid sleep {marker} &); sleep {marker}"])
    assert reply["t"] == "started"
    deadline = time.time() + 5
    while len(H.procs_with(f"sleep\0{marker}")) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert len(H.procs_with(f"sleep\0{marker}")) == 2
    with open(f"/proc/{i.proc.pid}/task/{i.proc.pid}/children") as f:
        init_pid = int(f.read().split()[0])
    assert i.close() == 0
    assert not os.path.exists(f"/proc/{init_pid}")
    deadline = time.time() + 5
    while H.procs_with(f"sleep\0{marker}") and time.time() < deadline:
        time.sleep(0.02)
    assert H.procs_with(f"sleep\0{marker}") == []
    H.read_all(o_r), H.read_all(e_r)


# -- connect (published ports) ---------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["root", "rootless"])
def lo_ctr(request):
    """A container whose network namespace has its loopback up, as network="none" makes it."""
    i = H.Init(rootless=request.param)
    try:
        assert i.setup(loopback=True) == {"t": "ready", "v": 1}
        yield i
    finally:
        i.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"proto": "sctp", "port": 80},
        {"proto": "tcp", "port": 0},
        {"proto": "udp", "port": 65536},
        {"proto": "tcp"},
        {"port": 80},
        {"proto": "tcp", "port": "80"},
    ],
)
def test_connect_refuses_malformed_requests(lo_ctr, fields):
    reply, fds = lo_ctr.request({"t": "connect", **fields})
    assert (reply["t"], reply["errno"], fds) == ("error", errno.EPROTO, [])
    assert lo_ctr.request({"t": "ping"})[0]["t"] == "pong"


def test_connect_reaches_the_containers_loopback_not_the_hosts(lo_ctr):
    import socket

    with socket.socket() as host_listener:  # on the host's own 127.0.0.1
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen()
        port = host_listener.getsockname()[1]
        reply, fds = lo_ctr.request({"t": "connect", "proto": "tcp", "port": port})
        assert (reply["t"], reply["errno"], fds) == ("error", errno.ECONNREFUSED, [])
        assert f"127.0.0.1:{port}/tcp" in reply["msg"]

    # a UDP socket is connected at once, to the container's 127.0.0.1
    reply, fds = lo_ctr.request({"t": "connect", "proto": "udp", "port": 53})
    assert reply["t"] == "connected" and len(fds) == 1
    with socket.socket(fileno=fds[0]) as sock:
        assert (sock.type, sock.getpeername()) == (socket.SOCK_DGRAM, ("127.0.0.1", 53))


def test_connect_hands_over_a_connected_tcp_socket(lo_ctr):
    import socket

    started, (out, err) = lo_ctr.start(["nc", "-l", "-p", "8080"])
    assert started["t"] == "started"
    os.close(err)
    deadline = time.monotonic() + 10
    while True:  # until nc listens
        reply, fds = lo_ctr.request({"t": "connect", "proto": "tcp", "port": 8080})
        if reply["t"] == "connected" or time.monotonic() > deadline:
            break
        assert reply["errno"] == errno.ECONNREFUSED
        time.sleep(0.01)
    assert reply["t"] == "connected" and len(fds) == 1
    with socket.socket(fileno=fds[0]) as sock:
        sock.setblocking(True)
        sock.sendall(b"through the init\n")
        sock.shutdown(socket.SHUT_WR)
    assert H.read_all(out) == b"through the init\n"
    assert lo_ctr.wait_exit(started["id"])["code"] == 0
