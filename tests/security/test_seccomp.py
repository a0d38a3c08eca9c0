"""Seccomp profiles, compiled and installed in a forked child on the real kernel.

Each kernel test forks, installs a program in the child with prctl (as the init does before
execve), runs probes there, and sends their results back as JSON over a pipe.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandkit.errors import SecurityConfigError
from sandkit.security import bpf, syscalls
from sandkit.security import seccomp as seccomp_module
from sandkit.security.capabilities import caps_mask
from sandkit.security.seccomp import (
    ALLOW,
    Action,
    Arg,
    Op,
    Rule,
    SeccompProfile,
    default_program,
    resolve_seccomp,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux-only")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = syscalls.table()
ARCH = syscalls.native_arch()

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
TIOCSTI = 0x5412
TIOCGWINSZ = 0x5413
AF_VSOCK = 40


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program: bytes) -> None:
    """What the init does last before execve: no_new_privs, then the filter."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def sys_call(nr: int, *args: int) -> tuple[int, int]:
    """(return value, errno) of a raw syscall."""
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in args))
    return ret, ctypes.get_errno() if ret == -1 else 0


def in_confined_child(program: bytes, probe: Callable[[], dict]) -> dict:
    """Run ``probe`` in a forked child under ``program``; return what it returned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(r)
            install(program)
            os.write(w, json.dumps(probe()).encode())
            status = 0
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, json.dumps({"__error__": repr(e)}).encode())
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(out) if out else {}
    assert "__error__" not in result, result
    assert os.waitstatus_to_exitcode(status) == 0, (status, result)
    return result


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


# --- the default program on the real kernel ---------------------------------------------------


def _ordinary_probe() -> dict:
    out = {}
    with open("/proc/self/status", "rb") as f:
        out["seccomp_mode"] = (
            next(line for line in f.read().splitlines() if line.startswith(b"Seccomp:"))
            .split()[1]
            .decode()
        )
    r, w = os.pipe()
    os.write(w, b"x")
    out["pipe"] = os.read(r, 1).decode()
    out["getpid"] = os.getpid() > 0
    box = []
    t = threading.Thread(
        target=lambda: box.append(1)
    )  # clone3 -> ENOSYS -> glibc falls back to clone
    t.start()
    t.join()
    out["thread"] = box == [1]
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    out["subprocess"] = subprocess.run(["true"], check=False).returncode
    for name, family in [
        ("inet", socket.AF_INET),
        ("inet6", socket.AF_INET6),
        ("unix", socket.AF_UNIX),
    ]:
        out[name] = errno_of(lambda f=family: socket.socket(f, socket.SOCK_STREAM).close())
    out["socketpair"] = errno_of(lambda: [s.close() for s in socket.socketpair()])
    out["personality_query"] = sys_call(NR["personality"], 0xFFFFFFFF)[1]
    out["tty_ioctl"] = errno_of(lambda: _winsize())
    return out


def _winsize() -> None:
    import fcntl

    _master, slave = os.openpty()
    fcntl.ioctl(slave, TIOCGWINSZ, b"\0" * 8)


def test_ordinary_syscalls_work_under_the_default_program():
    out = in_confined_child(default_program(), _ordinary_probe)
    assert out == {
        "seccomp_mode": "2",
        "pipe": "x",
        "getpid": True,
        "thread": True,
        "fork": 7,
        "subprocess": 0,
        "inet": 0,
        "inet6": 0,
        "unix": 0,
        "socketpair": 0,
        "personality_query": 0,
        "tty_ioctl": 0,
    }


def _refused_probe() -> dict:

    out: dict[str, int] = {}
    out["unshare_user"] = sys_call(NR["unshare"], CLONE_NEWUSER)[1]
    out["unshare_ns"] = sys_call(NR["unshare"], CLONE_NEWNS)[1]
    for name, flags in [("clone_newuser", CLONE_NEWUSER), ("clone_newns", CLONE_NEWNS)]:
        ret, err = sys_call(NR["clone"], flags | SIGCHLD, 0, 0, 0, 0)
        if ret == 0:  # the filter failed and we are a new child: leave at once
            os._exit(0)
        out[name] = err
    out["clone3"] = sys_call(NR["clone3"], 0, 88)[1]
    out["keyctl"] = sys_call(NR["keyctl"], 0, 0)[1]  # KEYCTL_GET_KEYRING_ID
    out["add_key"] = sys_call(NR["add_key"], 0, 0, 0, 0, 0)[1]
    out["request_key"] = sys_call(NR["request_key"], 0, 0, 0, 0)[1]
    out["bpf"] = sys_call(NR["bpf"], 0, 0, 0)[1]
    out["perf_event_open"] = sys_call(NR["perf_event_open"], 0, 0, -1, -1, 0)[1]
    out["userfaultfd"] = sys_call(NR["userfaultfd"], 0)[1]
    out["io_uring_setup"] = sys_call(NR["io_uring_setup"], 1, 0)[1]
    out["mount"] = sys_call(NR["mount"], 0, 0, 0, 0, 0)[1]
    out["open_by_handle_at"] = sys_call(NR["open_by_handle_at"], 0, 0, 0)[1]
    out["name_to_handle_at"] = sys_call(NR["name_to_handle_at"], 0, 0, 0, 0, 0)[1]
    out["ptrace"] = sys_call(NR["ptrace"], 0, 0, 0, 0)[1]
    out["setns"] = sys_call(NR["setns"], 0, 0)[1]
    out["pivot_root"] = sys_call(NR["pivot_root"], 0, 0)[1]
    out["fsopen"] = sys_call(NR["fsopen"], 0, 0)[1]
    out["kexec_load"] = sys_call(NR["kexec_load"], 0, 0, 0, 0)[1]
    out["finit_module"] = sys_call(NR["finit_module"], -1, 0, 0)[1]
    out["reboot"] = sys_call(NR["reboot"], 0, 0, 0, 0)[1]
    out["vsock"] = sys_call(NR["socket"], AF_VSOCK, socket.SOCK_STREAM, 0)[1]
    out["vsock_high_bits"] = sys_call(NR["socket"], (1 << 32) | AF_VSOCK, socket.SOCK_STREAM, 0)[1]
    out["af_alg"] = sys_call(NR["socket"], 38, socket.SOCK_SEQPACKET, 0)[1]
    _master, slave = os.openpty()
    ch = ctypes.c_char(b"x")
    out["tiocsti"] = sys_call(NR["ioctl"], slave, TIOCSTI, ctypes.addressof(ch))[1]
    out["tiocsti_high_bits"] = sys_call(
        NR["ioctl"], slave, (1 << 32) | TIOCSTI, ctypes.addressof(ch)
    )[1]
    out["tioclinux"] = sys_call(NR["ioctl"], slave, 0x541C, ctypes.addressof(ch))[1]
    out["personality_no_aslr"] = sys_call(NR["personality"], 0x0040000)[1]
    if ARCH == "x86_64":
        out["x32_getpid"] = sys_call(0x40000000 | NR["getpid"])[1]
    out["future_syscall"] = sys_call(max(NR.values()) + 1)[1]
    return out


def test_refused_syscalls_fail_under_the_default_program():
    out = in_confined_child(default_program(), _refused_probe)
    expected = dict.fromkeys(out, errno.EPERM)
    expected["clone3"] = errno.ENOSYS  # so libc falls back to clone, whose flags are filtered
    expected["future_syscall"] = errno.ENOSYS  # newer than the table: look like an older kernel
    assert out == expected


def test_arch_check_kills_other_architectures():
    # int 0x80 from a 64-bit process arrives as AUDIT_ARCH_I386: the interpreter shows the verdict.
    prog = bpf.unpack(default_program())
    i386 = struct.pack("=iiQ6Q", NR["getpid"], 0x40000003, 0, *[0] * 6)
    assert bpf.run(prog, i386) == 0x80000000  # SECCOMP_RET_KILL_PROCESS


# --- other profiles on the real kernel ---------------------------------------------------------

DOCKER_JSON = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
    "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}],
        },
        {  # MASKED_EQ: refuse SOCK_DGRAM (2) in the type argument whatever its flags
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPROTONOSUPPORT,
            "args": [
                {
                    "index": 1,
                    "value": 0xF,
                    "valueTwo": socket.SOCK_DGRAM,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
        },
        {
            "names": ["sched_yield"],
            "action": "SCMP_ACT_ERRNO",
            "includes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {
            "names": ["getpgid", "chown32"],
            "action": "SCMP_ACT_ERRNO",
            "includes": {"minKernel": "99.0"},
        },
        {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
    ],
}


def _docker_probe() -> dict:
    return {
        "getcwd": errno_of(os.getcwd),
        "inet6": errno_of(lambda: socket.socket(socket.AF_INET6).close()),
        "inet_stream": errno_of(lambda: socket.socket(socket.AF_INET).close()),
        "inet_dgram_cloexec": errno_of(
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC).close()
        ),
        "sched_yield": sys_call(NR["sched_yield"])[1],
        "getppid": sys_call(NR["getppid"])[1],
        "getpgid_min_kernel": sys_call(NR["getpgid"], 0)[1],
        "getsid_other_arch": sys_call(NR["getsid"], 0)[1],
    }


def test_docker_json_profile_is_enforced():
    profile = SeccompProfile.from_docker_json(DOCKER_JSON)
    assert in_confined_child(profile.compile(), _docker_probe) == {
        "getcwd": errno.EACCES,
        "inet6": errno.EPERM,
        "inet_stream": 0,
        "inet_dgram_cloexec": errno.EPROTONOSUPPORT,
        "sched_yield": 0,  # needs CAP_SYS_ADMIN, which Docker's default set lacks
        "getppid": errno.EPERM,
        "getpgid_min_kernel": 0,
        "getsid_other_arch": 0,
    }


def test_docker_json_from_file_and_caps(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DOCKER_JSON))
    with_admin = SeccompProfile.from_docker_json(path, caps=caps_mask(["SYS_ADMIN"]))
    names = {n for r in with_admin.rules for n in r.names}
    assert "sched_yield" in names and "getppid" not in names
    assert resolve_seccomp(str(path)) == SeccompProfile.from_docker_json(DOCKER_JSON).compile()


# The few syscalls CPython needs to reach the probe's write and exit.
RUNTIME = ["read", "write", "brk", "mmap", "munmap", "mremap", "madvise", "futex", "exit_group",
           "rt_sigprocmask", "rt_sigreturn", "close", "fstat", "newfstatat", "lseek", "getpid"]  # fmt: skip


def _allowlist_probe() -> dict:
    return {
        "getpid": sys_call(NR["getpid"])[1],
        "getppid": sys_call(NR["getppid"])[1],
        "uname": sys_call(NR["uname"], 0)[1],
    }


def test_custom_allowlist_profile():
    profile = SeccompProfile.allowing(RUNTIME).deny("uname", errno=errno.EROFS)
    assert in_confined_child(profile.compile(), _allowlist_probe) == {
        "getpid": 0,
        "getppid": errno.EPERM,
        "uname": errno.EROFS,
    }


def test_kill_action_kills():
    profile = SeccompProfile.allowing(RUNTIME).with_rule(Rule(["getppid"], Action("kill_process")))
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            install(profile.compile())
            sys_call(NR["getppid"])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 31  # SIGSYS


def test_builders_and_the_caps_they_open():
    base = SeccompProfile.docker_default()
    assert base.allow("ptrace").rules[0] == Rule(("ptrace",), ALLOW)
    with pytest.raises(SecurityConfigError, match="unknown syscall"):
        base.allow("ptrcae")
    admin = SeccompProfile.docker_default(caps=caps_mask(["SYS_ADMIN", "SYS_PTRACE"]))
    prog = bpf.unpack(admin.compile())
    for name in ("mount", "unshare", "ptrace", "clone3"):
        assert bpf.run(prog, seccomp_data(NR[name])) == ALLOW.encode(), name
    assert resolve_seccomp(None) is None and resolve_seccomp("unconfined") is None
    assert resolve_seccomp() == default_program() == resolve_seccomp(base)
    with pytest.raises(SecurityConfigError):
        resolve_seccomp(42)  # type: ignore[arg-type]


def test_compile_is_cached_and_fast():
    profile = SeccompProfile.docker_default(caps=0)
    start = time.perf_counter()
    first = profile.compile()
    elapsed = time.perf_counter() - start
    assert profile.compile() is first
    assert SeccompProfile.docker_default(caps=0).compile() is first  # keyed by content
    assert elapsed < 0.5
    size = len(default_program()) // 8
    print(f"\ndefault program: {size} instructions, first compile {elapsed * 1000:.1f} ms")
    assert size < 1024


# --- the compiler, checked by interpretation ----------------------------------------------------


def seccomp_data(nr: int, args: tuple[int, ...] = (0,) * 6, arch: int | None = None) -> bytes:
    arch = syscalls.AUDIT_ARCH[ARCH] if arch is None else arch
    return struct.pack("=IIQ6Q", nr, arch, 0, *args)


def reference(profile: SeccompProfile, nr: int, args: tuple[int, ...]) -> int:
    """What the profile means, evaluated directly in Python (first matching rule wins)."""
    names = {v: k for k, v in NR.items()}
    for rule in profile.rules:
        if names.get(nr) in rule.names and all(_holds(a, args[a.index]) for a in rule.args):
            return rule.action.encode()
    return profile.default_action.encode()


def _holds(a: Arg, raw: int) -> bool:
    v = raw & ((1 << a.width) - 1)
    return {
        Op.EQ: v == a.value, Op.NE: v != a.value, Op.LT: v < a.value, Op.LE: v <= a.value,
        Op.GT: v > a.value, Op.GE: v >= a.value, Op.MASKED_EQ: v & a.mask == a.value,
    }[a.op]  # fmt: skip


# Syscall numbers drawn from a small pool so rules collide; several conditions per rule.
_nrs = st.sampled_from(sorted(NR.values())[:40])
_u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**64 - 1]))
_args = st.builds(
    lambda i, op, v, m, w: Arg(i, op, v & ((1 << w) - 1), m & ((1 << w) - 1), w),
    st.integers(0, 5), st.sampled_from(list(Op)), _u64, _u64, st.sampled_from([32, 64]),
)  # fmt: skip
_actions = st.sampled_from(
    [ALLOW, Action.errno(1), Action.errno(38), Action("trap"), Action("log")]
)
_rules = st.builds(
    lambda nrs, action, args: Rule(tuple(k for k, v in NR.items() if v in nrs), action, args),
    st.sets(_nrs, min_size=1, max_size=300),
    _actions,
    st.lists(_args, max_size=3),
)
_profiles = st.builds(
    SeccompProfile, st.sampled_from([ALLOW, Action.errno(1)]), st.lists(_rules, max_size=60)
)


@pytest.mark.slow  # hypothesis: seconds
@settings(max_examples=60, deadline=None)
@given(_profiles, st.lists(st.tuples(_nrs, st.tuples(*[_u64] * 6)), min_size=1, max_size=20))
def test_compiled_programs_are_valid_and_mean_the_profile(profile, calls):
    program = bpf.unpack(profile.compile())
    bpf.validate(program)  # every jump lands inside the program, the last insn returns
    for pc, (code, jt, jf, _k) in enumerate(program):
        if code in (bpf.JEQ, bpf.JGT, bpf.JGE, bpf.JSET):
            assert pc + 1 + max(jt, jf) < len(program)
    for nr, args in calls:
        assert bpf.run(program, seccomp_data(nr, args)) == reference(profile, nr, args)


@pytest.mark.slow  # hypothesis: seconds
@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=300, max_size=1200))
def test_long_jumps_get_trampolines(targets_seen):
    # A chain of compares whose targets are far apart: offsets > 255 need `ja` hops.
    asm = bpf.Assembler()
    end = asm.new_label()
    asm.load(0)
    for k in targets_seen:
        nxt = asm.new_label()
        asm.jump(bpf.JEQ, k, end, nxt)
        asm.place(nxt)
    asm.ret(1)
    asm.place(end)
    asm.ret(2)
    program = asm.assemble()
    bpf.validate(program)
    assert len(program) > len(targets_seen) + 2  # hops were needed
    assert bpf.run(program, struct.pack("=I60x", targets_seen[-1])) == 2
    assert bpf.run(program, struct.pack("=I60x", 5000)) == 1


def test_invalid_input_is_refused_clearly():
    with pytest.raises(SecurityConfigError, match="out of range"):
        Arg(6, Op.EQ, 0)
    with pytest.raises(SecurityConfigError, match="32 bits"):
        Arg(0, Op.EQ, 1 << 40, width=32)
    with pytest.raises(SecurityConfigError, match="NOTIFY"):
        SeccompProfile.from_docker_json({"defaultAction": "SCMP_ACT_NOTIFY"})
    with pytest.raises(SecurityConfigError, match="not valid JSON"):
        SeccompProfile.from_docker_json("{oops")
    with pytest.raises(SecurityConfigError, match="unknown capability"):
        SeccompProfile.from_docker_json(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": {"caps": ["CAP_NOPE"]},
                    }
                ],
            }
        )


# --- data guards ----------------------------------------------------------------------------------


def test_default_profile_names_are_real_syscalls():
    from sandkit.security._syscall_table import TABLES

    data = json.loads(
        (Path(seccomp_module.__file__).parent / "profiles" / "default.json").read_text()
    )
    names = [n for r in data["rules"] for n in r["names"]]
    names += [n for group in data["allow"].values() for n in group]
    assert [n for n in names if not any(n in t for t in TABLES.values())] == []
    for refused in ("ptrace", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
                    "kexec_load", "swapon", "modify_ldt", "name_to_handle_at"):  # fmt: skip
        assert refused not in [n for group in data["allow"].values() for n in group]


@pytest.mark.skipif(
    not Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").exists(), reason="no headers"
)
def test_checked_in_table_matches_the_headers():
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").read_text()
    parsed = syscalls.parse_header(header)
    table = syscalls.table("x86_64")
    assert {n: table[n] for n in parsed} == parsed
    assert table["clone"] == 56 and table["clone3"] == 435 and table["fchmodat2"] == 452
    assert syscalls.table("aarch64")["clone"] == 220 and "open" not in syscalls.table("aarch64")


def test_aarch64_program_compiles():
    program = bpf.unpack(SeccompProfile.docker_default().compile("aarch64"))
    bpf.validate(program)
    aarch64 = syscalls.AUDIT_ARCH["aarch64"]
    nr = syscalls.table("aarch64")
    assert bpf.run(program, seccomp_data(nr["getpid"], arch=aarch64)) == ALLOW.encode()
    assert bpf.run(program, seccomp_data(nr["keyctl"], arch=aarch64)) == Action.errno(1).encode()
    assert bpf.run(program, seccomp_data(nr["getpid"])) == 0x80000000  # x86_64 data: wrong arch
