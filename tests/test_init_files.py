"""The init writes the files of the setup message (a container's /etc/hosts, /etc/resolv.conf)
into the new root, and an image that controls /etc cannot turn that into a write anywhere else.
Against the real kernel, through the init harness (tests/init_harness.py), root and rootless."""

from __future__ import annotations

import errno
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import init_harness as H

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, useradd)"),
]

HOSTS = b"127.0.0.1\tlocalhost\n10.99.0.2\tweb\n"


@pytest.fixture(scope="session", autouse=True)
def built():
    return H.build_init()


@pytest.fixture(params=[False, True], ids=["root", "rootless"])
def init(request):
    i = H.Init(rootless=request.param)
    try:
        yield i
    finally:
        i.close()


def hosts_file(**over) -> dict:
    return {"path": "/etc/hosts", "data": HOSTS, "mode": 0o644, **over}


def sh(i: H.Init, script: str) -> bytes:
    r = i.capture(["sh", "-c", script])
    assert r["exit"] and r["exit"].get("code") == 0, r
    return r["stdout"]


def in_image(i: H.Init, path: str) -> str:
    return os.path.join(i.rootfs, path.lstrip("/"))


def canary(i: H.Init) -> str:
    """A host file outside the container, which nothing may write."""
    path = os.path.join(i.base, "canary")
    with open(path, "w") as f:
        f.write("untouched\n")
    return path


def assert_untouched(path: str) -> None:
    with open(path) as f:
        assert f.read() == "untouched\n"


def test_files_are_written_with_their_mode_and_owned_by_the_containers_root(init):
    files = [
        hosts_file(),
        {"path": "/etc/hello.txt", "data": b"replaced\n", "mode": 0o600},  # the image has one
        {"path": "/run/new/dir/conf", "data": b"", "mode": 0o640},  # its directories are made
    ]
    assert init.setup(files=files)["t"] == "ready"
    assert sh(init, "cat /etc/hosts") == HOSTS
    assert sh(init, "cat /etc/hello.txt") == b"replaced\n"
    out = sh(init, "stat -c '%a %u %g %F' /etc/hosts /etc/hello.txt /run/new/dir/conf /run/new")
    assert out.decode().splitlines() == [
        "644 0 0 regular file",
        "600 0 0 regular file",
        "640 0 0 regular empty file",
        "755 0 0 directory",
    ]
    with open(in_image(init, "/etc/hello.txt")) as f:  # the image's layer is not written
        assert f.read() == "hello from the image\n"


def test_a_symlink_at_the_name_is_replaced_not_followed(init):
    target = canary(init)
    os.symlink(target, in_image(init, "/etc/hosts"))
    assert init.setup(files=[hosts_file()])["t"] == "ready"
    assert sh(init, "test -f /etc/hosts && ! test -L /etc/hosts && cat /etc/hosts") == HOSTS
    assert_untouched(target)


@pytest.mark.parametrize("inside", [False, True], ids=["dangling", "to-the-images-own"])
def test_an_etc_that_is_a_symlink_to_a_host_directory_stays_inside_the_root(init, inside):
    target = canary(init)
    etc = in_image(init, "/etc")
    shutil.rmtree(etc)
    os.symlink(os.path.dirname(target), etc)  # absolute: the host's view of the directory
    if inside:  # the image has that path too: the symlink leads there, as if its root were "/"
        made = in_image(init, os.path.dirname(target))
        os.makedirs(made)
        while init.uid is not None and made != init.rootfs:  # rootless: the image is the user's
            os.chown(made, init.uid, init.gid)
            made = os.path.dirname(made)
    reply = init.setup(files=[hosts_file(path="/etc/canary")])
    assert_untouched(target)
    if not inside:
        assert reply["t"] == "error" and reply["errno"] == errno.ENOENT
        assert "file /etc/canary: open or make its directory /etc" in reply["msg"]
        return
    assert reply["t"] == "ready"
    assert sh(init, f"cat /etc/canary {target}") == HOSTS * 2


def test_an_etc_symlink_through_procs_magic_links_writes_nothing_on_the_host(init):
    """/proc/self/root is the init's root, the host's, until pivot_root: the files are written
    before /proc is mounted, and the kernel would refuse the magic link anyway."""
    etc = in_image(init, "/etc")
    shutil.rmtree(etc)
    os.symlink("/proc/self/root/etc", etc)
    before = os.stat("/etc/hosts")
    reply = init.setup(files=[hosts_file()])
    assert reply["t"] == "error" and "file /etc/hosts: open or make its directory" in reply["msg"]
    after = os.stat("/etc/hosts")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_fifo_at_the_name_is_replaced_without_blocking(init):
    os.mkfifo(in_image(init, "/etc/hosts"))
    assert init.setup(files=[hosts_file()])["t"] == "ready"
    assert sh(init, "test -f /etc/hosts && cat /etc/hosts") == HOSTS


def test_a_directory_at_the_name_is_a_clear_setup_error(init):
    os.mkdir(in_image(init, "/etc/hosts"))
    reply = init.setup(files=[hosts_file()])
    assert reply["t"] == "error" and reply["errno"] == errno.EISDIR
    assert "/etc/hosts" in reply["msg"] and "directory" in reply["msg"]
    assert init.proc.wait(10) == 1
    assert os.listdir(in_image(init, "/etc/hosts")) == []


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (hosts_file(path="etc/hosts"), "must be absolute"),
        (hosts_file(path="/etc/.."), "must be absolute and name a file"),
        (hosts_file(path="/etc/"), "must be absolute and name a file"),
        (hosts_file(mode=0o4755), '"mode" must be permission bits'),
        ({"path": "/etc/hosts"}, 'missing "data"'),
    ],
)
def test_a_bad_file_entry_is_a_clear_error(entry, text):
    i = H.Init()
    try:
        reply = i.setup(files=[entry])
        assert reply["t"] == "error" and text in reply["msg"], reply
    finally:
        i.close()


def test_files_are_refused_with_a_bind_root_a_host_directory(tmp_path):
    i = H.Init()
    try:
        reply = i.setup(rootfs={"kind": "bind", "src": i.rootfs}, files=[hosts_file()])
        assert reply["t"] == "error" and 'a "bind" root is a host directory' in reply["msg"]
        assert not os.path.lexists(in_image(i, "/etc/hosts"))
    finally:
        i.close()
