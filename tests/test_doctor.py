"""`sandkit doctor` on this host (real probes), and its verdicts under simulated host settings."""

from __future__ import annotations

import errno
import os

import pytest

from sandkit import doctor as doc
from sandkit.doctor import Check, DoctorReport, doctor


def test_report_on_this_host():
    report = doctor()
    by_name = {c.name: c for c in report.checks}
    for name in ("user namespaces (rootless)", "overlayfs", "seccomp", "landlock", "pidfd and clone3",
                 "subordinate ids (rootless)"):  # fmt: skip
        assert name in by_name, name
    assert any(n.startswith("cgroups (") for n in by_name)
    # This test machine has all of these (kernel 6.x, root).
    assert by_name["seccomp"].ok and by_name["pidfd and clone3"].ok and by_name["overlayfs"].ok
    text = report.render()
    for check in report.failed():
        assert f"{check.name}: {check.detail}" in text and check.fix
    assert text.count("fix:") == len(report.failed())


def test_render_marks_failures_and_fixes():
    report = DoctorReport((
        Check("a", True, "fine"),
        Check("b", False, "broken", "do X"),
        Check("c", False, "meh", "do Y", essential=False),
    ))  # fmt: skip
    assert not report.ok
    assert report.render().splitlines() == [
        "[  ok] a: fine",
        "[FAIL] b: broken",
        "       fix: do X",
        "[WARN] c: meh",
        "       fix: do Y",
        "sandkit cannot run here yet (2 of 3 checks not ok)",
    ]
    assert DoctorReport((Check("c", False, "meh", "do Y", essential=False),)).ok


def test_disabled_user_namespaces_are_explained(monkeypatch):
    files = {
        "/proc/sys/user/max_user_namespaces": "0",
        "/proc/sys/kernel/unprivileged_userns_clone": "0",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
    }
    monkeypatch.setattr(doc, "_read", files.get)
    monkeypatch.setattr(doc, "_in_child", lambda fn: errno.EPERM)
    [check] = doc._userns()
    assert not check.ok and "EPERM" in check.detail
    for fix in ("user.max_user_namespaces=", "kernel.unprivileged_userns_clone=1",
                "apparmor_restrict_unprivileged_userns=0"):  # fmt: skip
        assert fix in check.fix


def test_missing_overlay_and_old_kernel(monkeypatch):
    monkeypatch.setattr(doc, "_read", lambda p: "nodev\tproc\nnodev\ttmpfs\n")
    [check] = doc._overlay()
    assert not check.ok and "modprobe overlay" in check.fix
    monkeypatch.setattr(doc, "_kernel", lambda: (5, 4))
    check = doc._overlay_in_userns()
    assert not check.ok and "5.11" in check.fix


def test_a_crashing_probe_does_not_hide_the_others(monkeypatch):
    def boom() -> list[Check]:
        raise RuntimeError("nope")

    monkeypatch.setattr(doc, "_PROBES", (boom, doc._seccomp))
    report = doctor()
    assert [c.ok for c in report.checks] == [False, True]
    assert "crashed" in report.checks[0].detail


def _render_unprivileged() -> str:
    return doctor().render()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_doctor_as_an_unprivileged_user(as_unprivileged):
    text = as_unprivileged(_render_unprivileged)
    assert "cgroups (rootless mode)" in text and "crashed" not in text
    # This host allows user namespaces and unprivileged overlay (kernel >= 5.11).
    assert "[  ok] user namespaces (rootless)" in text
    assert "[  ok] overlayfs in a user namespace (rootless)" in text


def test_a_closed_tun_device_is_explained_with_the_chmod(tmp_path, monkeypatch):
    """/dev/net/tun 0600 root:root (this host's default) keeps rootless pasta from starting:
    doctor says so and names the fix; 0666 (most distributions) is fine."""
    device = tmp_path / "tun"
    device.write_bytes(b"")
    os.chown(device, 0, 0)
    monkeypatch.setattr(doc, "TUN_DEVICE", str(device))
    monkeypatch.setattr(doc, "_rootless_identity", lambda: (65534, 65534, "nobody"))
    device.chmod(0o600)
    check = doc._tun_access()
    assert not check.ok and not check.essential
    assert "nobody cannot open it" in check.detail
    assert f"chmod 0666 {device}" in check.fix
    device.chmod(0o666)
    assert doc._tun_access().ok


def test_missing_uplink_is_a_warning_with_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(doc.shutil, "which", lambda tool, path=None: None)
    uplink, iptables, _ = doc._networks()
    assert not uplink.ok and uplink.fix == "apt-get install slirp4netns"
    assert not iptables.ok and iptables.fix == "apt-get install iptables"
    assert not uplink.essential
