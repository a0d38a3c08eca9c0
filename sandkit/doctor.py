"""`sandkit doctor`: can this host run containers, in root and in rootless mode, and what to fix.

Each check reads a sysctl or /proc file, or tries the real thing in a short-lived forked child
(a user namespace, an overlay mount inside one), since a sysctl can say yes while a security
module still says no. Nothing is left behind: children exit, temporary directories are removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Callable

import attrs

from . import idmap
from .runtime.cgroups.detect import LIMIT_CONTROLLERS
from .runtime.cgroups.detect import detect as detect_cgroups

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
LANDLOCK_CREATE_RULESET_VERSION = 1
NOBODY = 65534

# x86_64 and aarch64 share these numbers (they are >= 424, the unified range).
_NR_PIDFD_OPEN = 434
_NR_CLONE3 = 435
_NR_LANDLOCK_CREATE_RULESET = 444

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@attrs.frozen
class Check:
    """The outcome of one check of the host: ``detail`` says what was found and ``fix`` what to do
    when it is not ok. A check that is not ``essential`` only weakens sandkit (a WARN)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""  # what to do when not ok
    essential: bool = True  # False: sandkit still works, with less (shown as WARN)


@attrs.frozen
class DoctorReport:
    """Every check `doctor` ran, in order."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when every essential check passed: containers can run on this host."""
        return all(c.ok or not c.essential for c in self.checks)

    def failed(self) -> list[Check]:
        """The checks that did not pass, essential or not."""
        return [c for c in self.checks if not c.ok]

    def render(self) -> str:
        """The report as ``sandkit doctor`` prints it: one line per check, a fix under each that
        failed, and a verdict."""
        lines = []
        for c in self.checks:
            tag = "ok" if c.ok else ("FAIL" if c.essential else "WARN")
            lines.append(f"[{tag:>4}] {c.name}: {c.detail}")
            if not c.ok:
                lines.append(f"       fix: {c.fix or 'see the detail above'}")
        verdict = (
            "this host can run sandkit containers" if self.ok else "sandkit cannot run here yet"
        )
        lines.append(f"{verdict} ({len(self.failed())} of {len(self.checks)} checks not ok)")
        return "\n".join(lines)


def doctor() -> DoctorReport:
    """Check what this host offers sandkit (user namespaces, overlayfs, cgroups, seccomp,
    Landlock, pidfd and clone3, subordinate ids) and say how to fix what it lacks. Never raises:
    a check that crashes is reported as failed."""
    checks: list[Check] = []
    for probe in _PROBES:
        try:
            checks += probe()
        except Exception as e:  # noqa: BLE001 - a broken probe must not hide the others
            checks.append(
                Check(
                    probe.__name__.strip("_"),
                    False,
                    f"check crashed: {e!r}",
                    "report this as a sandkit bug",
                )
            )
    return DoctorReport(tuple(checks))


# --- helpers -----------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def _in_child(fn: Callable[[], int]) -> int:
    """Run ``fn`` in a forked child (so namespaces and uid changes stay there); its return value
    (an errno, 0 for success) comes back as the exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 255
        try:
            code = fn()
        finally:
            os._exit(code & 0xFF)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _call(result: int) -> int:
    return ctypes.get_errno() if result == -1 else 0


def _unshare(flags: int) -> int:
    return _call(_libc.unshare(flags))


def _become_unprivileged(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    # A uid change clears "dumpable", which makes /proc/self root's: the uid/gid maps could not
    # be written.
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _rootless_identity() -> tuple[int, int, str]:
    """Whom rootless mode would run as: the caller, or (under root) the sudo user, else nobody."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name
    for name in (os.environ.get("SUDO_USER"), "nobody"):
        if not name or name == "root":
            continue
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid, name
        except KeyError:
            continue
    return NOBODY, NOBODY, str(NOBODY)


def _kernel() -> tuple[int, int]:
    major, minor, *_ = [*os.uname().release.split("-")[0].split("."), "0"][:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


# --- user namespaces ---------------------------------------------------------------------------


def _userns() -> list[Check]:
    blockers = []
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    if max_ns is not None and int(max_ns) == 0:
        blockers.append(
            ("user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces=15000")
        )
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        blockers.append(
            (
                "kernel.unprivileged_userns_clone is 0",
                "sysctl -w kernel.unprivileged_userns_clone=1",
            )
        )
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        blockers.append(
            (
                "AppArmor restricts unprivileged user namespaces",
                (
                    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give python an "
                    "AppArmor profile with the userns permission"
                ),
            )
        )
    uid, gid, who = _rootless_identity()

    def try_userns() -> int:
        if os.geteuid() == 0:
            _become_unprivileged(uid, gid)
        return _unshare(CLONE_NEWUSER)

    err = _in_child(try_userns)
    settings = "; ".join(b[0] for b in blockers) or f"max_user_namespaces={max_ns}"
    if err == 0:
        detail = f"{who} (uid {uid}) can create a user namespace ({settings})"
        return [Check("user namespaces (rootless)", True, detail)]
    fix = "; ".join(b[1] for b in blockers) or (
        "a security module or container runtime forbids unshare(CLONE_NEWUSER): run sandkit as root, "
        "or allow user namespaces for this user"
    )
    detail = f"unshare(CLONE_NEWUSER) as {who} failed with {_errno_name(err)} ({settings})"
    return [Check("user namespaces (rootless)", False, detail, fix, essential=os.geteuid() != 0)]


# --- overlayfs ---------------------------------------------------------------------------------


def _overlay() -> list[Check]:
    filesystems = _read("/proc/filesystems") or ""
    known = any(line.split()[-1] == "overlay" for line in filesystems.splitlines() if line.strip())
    checks = [
        Check(
            "overlayfs",
            known,
            "overlay is in /proc/filesystems" if known else "overlay is not in /proc/filesystems",
            "modprobe overlay (and add it to /etc/modules-load.d/)",
        )
    ]
    if known:
        checks.append(_overlay_in_userns())
    return checks


def _overlay_in_userns() -> Check:
    name = "overlayfs in a user namespace (rootless)"
    if _kernel() < (5, 11):
        return Check(name, False, f"kernel {os.uname().release} < 5.11 has no unprivileged overlay",
                     "upgrade the kernel to 5.11 or newer, or use root mode", essential=False)  # fmt: skip
    uid, gid, who = _rootless_identity()
    with tempfile.TemporaryDirectory(prefix="sandkit-doctor-") as tmp:
        dirs = {d: os.path.join(tmp, d) for d in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            os.mkdir(d)
            if os.geteuid() == 0:
                os.chown(d, uid, gid)
        os.chmod(tmp, 0o755)

        def try_mount() -> int:
            if os.geteuid() == 0:
                _become_unprivileged(uid, gid)
            if err := _unshare(CLONE_NEWUSER | CLONE_NEWNS):
                return err
            _write_proc("/proc/self/setgroups", "deny")
            for kind, outer in (("uid", uid), ("gid", gid)):
                _write_proc(f"/proc/self/{kind}_map", f"0 {outer} 1")
            opts = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']},userxattr"
            return _call(
                _libc.mount(b"overlay", dirs["merged"].encode(), b"overlay", 0, opts.encode())
            )

        err = _in_child(try_mount)
    if err == 0:
        return Check(name, True, f"{who} can mount overlay (userxattr) in its own user namespace")
    return Check(
        name,
        False,
        f"mounting overlay as {who} in a user namespace failed with {_errno_name(err)}",
        "fix user namespaces first (see above); some distributions also block it with a security "
        "module. Rootless containers fall back to slower copies without it",
        essential=False,
    )


# --- cgroups -----------------------------------------------------------------------------------


def _cgroups() -> list[Check]:
    mountinfo = _read("/proc/self/mountinfo") or ""
    kinds = {
        line.partition(" - ")[2].split()[0] for line in mountinfo.splitlines() if " - " in line
    }
    if "cgroup" in kinds and "cgroup2" in kinds:
        layout = "hybrid (v1 controllers, v2 for process tracking)"
    elif "cgroup" in kinds:
        layout = "v1"
    elif "cgroup2" in kinds:
        layout = "v2 (unified)"
    else:
        layout = "none mounted"
    here = detect_cgroups()
    mode = "rootless" if here.rootless else "root"
    found = ", ".join(sorted(here.controllers)) or "none"
    missing = sorted(set(LIMIT_CONTROLLERS) - here.controllers)
    checks = [
        Check(
            f"cgroups ({mode} mode)",
            here.usable and not missing,
            f"layout {layout}; controllers for limits: {found}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; {here.why_not}" if here.why_not else ""),
            "enable the missing controllers (kernel cmdline cgroup_enable=..., or v2 "
            "cgroup.subtree_control)"
            if here.usable
            else here.why_not or "",
            essential=False,  # containers run without limits; only limits need cgroups
        )
    ]
    if not here.rootless:
        uid, _, who = _rootless_identity()
        other = detect_cgroups(euid=uid)
        if other.version == 1:
            checks.append(Check("cgroup delegation (rootless)", False, f"for {who}: {other.why_not}",
                                "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2 and "
                                "run rootless sandkit in a delegated scope", essential=False))  # fmt: skip
        else:
            checks.append(Check("cgroup delegation (rootless)", True,
                                "cgroup v2: run `sandkit doctor` as the user to see its "
                                "delegated subtree"))  # fmt: skip
    return checks


# --- seccomp, landlock, pidfd/clone3 -----------------------------------------------------------


def _seccomp() -> list[Check]:
    status = _read("/proc/self/status") or ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    mode = _libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    if "Seccomp" not in fields or (mode == -1 and ctypes.get_errno() == errno.EINVAL):
        return [Check("seccomp", False, "the kernel has no seccomp (CONFIG_SECCOMP off)",
                      "use a kernel built with CONFIG_SECCOMP_FILTER, or run with seccomp='unconfined' "
                      "(much weaker isolation)")]  # fmt: skip
    actions = _read("/proc/sys/kernel/seccomp/actions_avail") or ""
    needed = {"kill_process", "errno", "allow"}
    if actions and not needed <= set(actions.split()):
        return [Check("seccomp", False, f"filter actions available: {actions}",
                      "use a kernel >= 4.14 (SECCOMP_RET_KILL_PROCESS)")]  # fmt: skip
    outer = fields["Seccomp"].strip()
    detail = f"available (actions: {actions or 'unknown'})"
    if outer != "0":
        detail += (f"; this process already runs under seccomp mode {outer} (inside another container?): "
                   "its filter also applies to sandkit's containers")  # fmt: skip
    return [Check("seccomp", True, detail)]


def _landlock() -> list[Check]:
    abi = _libc.syscall(ctypes.c_long(_NR_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))  # fmt: skip
    if abi > 0:
        return [Check("landlock", True, f"ABI version {abi}", essential=False)]
    err = ctypes.get_errno()
    why = {
        errno.ENOSYS: "not built into this kernel",
        errno.EOPNOTSUPP: "built in but disabled at boot",
    }
    return [Check("landlock", False, why.get(err, _errno_name(err)),
                  "add landlock to the kernel's lsm= boot parameter (an extra layer; not required)",
                  essential=False)]  # fmt: skip


def _pidfd_clone3() -> list[Check]:
    fd = _libc.syscall(ctypes.c_long(_NR_PIDFD_OPEN), ctypes.c_int(os.getpid()), ctypes.c_uint(0))
    pidfd_err = _call(fd)
    if fd >= 0:
        os.close(fd)
    # clone3 with a NULL, zero-size argument: EINVAL when the syscall exists, ENOSYS when not.
    _libc.syscall(ctypes.c_long(_NR_CLONE3), None, ctypes.c_size_t(0))
    clone3_err = ctypes.get_errno()
    ok = pidfd_err == 0 and clone3_err != errno.ENOSYS and _kernel() >= (5, 5)
    detail = (
        f"kernel {os.uname().release}; pidfd_open {'works' if pidfd_err == 0 else _errno_name(pidfd_err)}; "
        f"clone3 {'present' if clone3_err != errno.ENOSYS else 'missing'}"
    )
    return [Check("pidfd and clone3", ok, detail,
                  "upgrade to Linux >= 5.5 (5.7 for CLONE_INTO_CGROUP); or a seccomp filter around "
                  "this process hides them")]  # fmt: skip


# --- newuidmap / subuid ------------------------------------------------------------------------


def _subids() -> list[Check]:
    uid, _, who = _rootless_identity()
    problems, fixes = [], []
    for tool in ("newuidmap", "newgidmap"):
        path = shutil.which(tool)
        if path is None:
            problems.append(f"{tool} not found")
        elif not os.stat(path).st_mode & stat.S_ISUID and not _has_file_caps(path):
            problems.append(f"{tool} is neither setuid nor has file capabilities")
    if problems:
        fixes.append("apt-get install uidmap (as root)")
    ranges = {
        db: idmap.subordinate_range(db, uid, who) for db in (idmap.SUBUID_FILE, idmap.SUBGID_FILE)
    }
    problems += [f"no {db} entry for {who}" for db, found in ranges.items() if found is None]
    if None in ranges.values():
        fixes.append(
            "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
            + (who if uid != NOBODY else "<user>")
            + " (as root)"
        )
    if not problems:
        shown = ", ".join(f"{db} {r.start}+{r.count}" for db, r in ranges.items() if r is not None)
        return [
            Check(
                "subordinate ids (rootless)",
                True,
                f"{who} has {shown}: rootless containers map 0 to {who} and 1..65535 to "
                "that range, so images' own users (postgres...) run",
                essential=False,
            )
        ]
    return [Check(
        "subordinate ids (rootless)",
        False,
        "; ".join(problems) + ": rootless containers map only your own uid (as root); an image "
        "whose program runs as another user fails, and layers' other owners become yours",
        "; ".join(fixes),
        essential=False,
    )]  # fmt: skip


def _has_file_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


# --- networks: slirp4netns, iptables, /dev/net/tun ---------------------------------------------

TUN_DEVICE = "/dev/net/tun"


def _networks() -> list[Check]:
    """What network="bridge" and user networks need: slirp4netns (outbound traffic, root and
    rootless; pasta is only its fallback, see sandkit.net.uplink), iptables (each network's
    rules, inside its own namespace) and, for the uplink's tap, a /dev/net/tun the user may
    open."""
    checks = []
    for tool, package, job in (
        ("slirp4netns", "slirp4netns", "outbound traffic of bridge and user networks"),
        ("iptables", "iptables", "the rules inside each network (NAT, egress policy)"),
    ):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        checks.append(Check(
            f"{tool} (networks)", path is not None,
            f"{path} ({job})" if path else f"not found: needed for {job}",
            f"apt-get install {package}", essential=False,
        ))  # fmt: skip
    checks.append(_tun_access())
    return checks


def _tun_access() -> Check:
    name = "/dev/net/tun (rootless networks)"
    uid, gid, who = _rootless_identity()
    try:
        st = os.stat(TUN_DEVICE)
    except OSError as exc:
        return Check(name, False, f"{TUN_DEVICE}: {exc.strerror}", "modprobe tun", essential=False)
    mode = stat.S_IMODE(st.st_mode)
    readable = (
        (st.st_uid == uid and mode & 0o600 == 0o600)
        or (st.st_gid == gid and mode & 0o060 == 0o060)
        or mode & 0o006 == 0o006
    )
    if readable:
        return Check(name, True, f"mode {mode:04o}: {who} may open it", essential=False)
    return Check(
        name,
        False,
        f"mode {mode:04o}: {who} cannot open it, so slirp4netns cannot give rootless bridge and user "
        "networks outbound access (most distributions ship it 0666; internal networks and "
        "network='none' work without it)",
        f"as root: chmod 0666 {TUN_DEVICE} (for every boot: a udev rule "
        'KERNEL=="tun", MODE="0666")',
        essential=False,
    )


_PROBES: tuple[Callable[[], list[Check]], ...] = (
    _userns, _overlay, _cgroups, _seccomp, _landlock, _pidfd_clone3, _subids, _networks,
)  # fmt: skip
