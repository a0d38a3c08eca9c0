"""copy_in / copy_out / get_archive / stat / remove: trees with links and modes, Docker's path
rules, bad input, hostile content on either side, root and rootless. The parity with `docker
cp` itself is in tests/cli/test_copy_parity.py."""

from __future__ import annotations

import io
import os
import resource
import stat
import tarfile
from pathlib import Path

import pytest
import trio
from treelisting import OLD, listing, make_tree, staging_left

import sandkit

pytestmark = pytest.mark.slow


def _members(c, path: str) -> dict[str, tarfile.TarInfo]:
    data = b"".join(c.get_archive(path))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def _container_staging(c) -> list[str]:
    r = c.exec(["find", "/", "-xdev", "-name", ".sandkit-cp-*"], timeout=30)
    return r.stdout.decode().split()


# --- a tree in and out -------------------------------------------------------------------------


@pytest.mark.root
def test_tree_round_trip_keeps_types_modes_links_and_times(busybox, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=False)
    with sandkit.Container(busybox) as c:
        c.copy_in(tree, "/tmp/tree")  # /tmp/tree is new: the tree is copied as it
        c.copy_out("/tmp/tree", tmp_path / "back")
        # inside, the symlinks are the tree's own (never resolved), the hard link still one
        inside = _members(c, "/tmp/tree")
        assert inside["tree/sub/up-but-inside"].linkname == "../up-one-level"
        # one of the pair is the file, the other a hard link to it (the walk's order decides)
        pair = inside["tree/sub/hardlink"], inside["tree/hello.txt"]
        assert sorted((m.islnk(), m.linkname) for m in pair) in (
            [(False, ""), (True, "tree/hello.txt")],
            [(False, ""), (True, "tree/sub/hardlink")],
        )
        assert inside["tree/setuid"].mode == 0o4755
        assert inside["tree/private"].mode == 0o700
    assert listing(tmp_path / "back") == listing(tree)
    assert staging_left(tmp_path) == []


def test_a_link_that_climbs_out_is_kept_inside_and_refused_on_the_host(busybox, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=False, escaping=True)
    with sandkit.Container(busybox) as c:
        c.copy_in(tree, "/tmp/tree")  # inside, as Docker: the link is the container's business
        inside = _members(c, "/tmp/tree")
        assert inside["tree/sub/out-of-tree"].linkname == "../../../../../../etc/passwd"
        with pytest.raises(sandkit.CopyError) as refused:
            c.copy_out("/tmp/tree", tmp_path / "out")
        c.copy_out("/tmp/tree/sub/deeper", tmp_path / "deeper")  # the rest copies
    message = str(refused.value)
    assert "'/tmp/tree/sub/out-of-tree'" in message and "get_archive()" in message
    assert "nothing was written to the host" in message
    assert not (tmp_path / "out").exists() and staging_left(tmp_path) == []
    assert (tmp_path / "deeper" / "data.bin").stat().st_size == 256 * 300


@pytest.mark.root
def test_owners_are_kept_going_in_and_are_the_callers_coming_out(busybox, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=True)
    with sandkit.Container(busybox) as c:
        c.copy_in(tree, "/plain")
        c.copy_in(tree, "/kept", archive=True)
        plain, kept = _members(c, "/plain"), _members(c, "/kept")
        # Docker 28 keeps the owners going in, -a or not (tests/cli/test_copy_parity.py)
        assert (plain["plain/hello.txt"].uid, plain["plain/hello.txt"].gid) == (1000, 1000)
        assert (kept["kept/hello.txt"].uid, kept["kept/hello.txt"].gid) == (1000, 1000)
        assert (kept["kept/sub"].uid, kept["kept/sub"].gid) == (123, 456)
        assert (kept["kept/absolute"].uid, kept["kept/absolute"].gid) == (7, 8)
        # chown clears setuid: the mode must be set after the owner
        assert kept["kept/setuid"].mode == 0o4755
        c.copy_out("/kept", tmp_path / "out-kept", archive=True)
        c.copy_out("/kept", tmp_path / "out-plain")
    assert listing(tmp_path / "out-kept") == listing(tree)
    assert {row[3] for row in listing(tmp_path / "out-plain")} == {"0:0"}  # the caller's


def test_async_twins(busybox, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=False)

    async def main() -> list[tuple]:
        async with sandkit.AsyncContainer(busybox) as c:
            await c.copy_in(tree, "/t")
            await c.copy_in(b"just bytes\n", "/tmp/new.txt")
            assert (await c.read_file("/tmp/new.txt")) == b"just bytes\n"
            st = await c.stat("/t/absolute")
            assert stat.S_ISLNK(st.mode) and st.link_target == "/etc/hostname"
            assert st.name == "absolute" and st.mtime == OLD + len("absolute")
            chunks = [chunk async for chunk in c.get_archive("/t/hello.txt")]
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                assert tar.extractfile("hello.txt").read() == b"hello\n"
            await c.remove("/tmp/new.txt")
            assert "new.txt" not in await c.listdir("/tmp")
            await c.copy_out("/t", tmp_path / "back")
            await c.remove("/t", recursive=True)
            with pytest.raises(sandkit.CopyError, match="no such file"):
                await c.stat("/t")
        return listing(tmp_path / "back")

    assert trio.run(main) == listing(tree)


def test_tar_stream_in_and_out(busybox, tmp_path):
    tree = make_tree(tmp_path / "tree", owners=False)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(tree, arcname=".")
    buffer.seek(0)
    with sandkit.Container(busybox) as c:
        c.exec(["mkdir", "/dst"], check=True)
        c.copy_in(buffer, "/dst")  # extracted into /dst, as `docker cp - CTR:/dst`
        c.copy_out("/dst/.", tmp_path / "back")
        with open(tmp_path / "out.tar", "wb") as out:
            for chunk in c.get_archive("/dst"):
                out.write(chunk)
    os.utime(tmp_path / "back", (OLD, OLD))  # /dst's own time is the container's
    assert listing(tmp_path / "back") == listing(tree)
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        assert tar.extractfile("dst/sub/deeper/data.bin").read() == bytes(range(256)) * 300
    assert members["dst/sub/up-but-inside"].linkname == "../up-one-level"
    assert members["dst/setuid"].mode == 0o4755 and members["dst/private"].isdir()
    assert members["dst/readonly"].mtime == OLD + len("readonly")


# --- Docker's path rules ---------------------------------------------------------------------


def test_docker_path_rules(busybox, tmp_path):
    (tmp_path / "dir" / "inner").mkdir(parents=True)
    (tmp_path / "dir" / "inner" / "f").write_text("f")
    (tmp_path / "file").write_text("content")
    with sandkit.Container(busybox) as c:
        c.exec(["mkdir", "-p", "/exists"], check=True)
        c.copy_in(tmp_path / "file", "/exists")  # into an existing dir, under its name
        assert c.read_file("/exists/file") == b"content"
        c.copy_in(tmp_path / "file", "/renamed")  # a new name
        assert c.read_file("/renamed") == b"content"
        c.copy_in(tmp_path / "dir", "/exists")  # a dir into an existing dir
        assert c.listdir("/exists/dir/inner") == ["f"]
        c.copy_in(f"{tmp_path}/dir/.", "/exists")  # its contents
        assert "inner" in c.listdir("/exists")
        c.copy_in(tmp_path / "dir", "/newdir")  # a new dir: the contents as it
        assert c.listdir("/newdir") == ["inner"]
        c.write_file("/exists/file", b"old")
        c.copy_in(tmp_path / "file", "/exists/file")  # an existing file is replaced
        assert c.read_file("/exists/file") == b"content"
        with pytest.raises(sandkit.CopyError, match="cannot copy a directory to a file"):
            c.copy_in(tmp_path / "dir", "/renamed")
        with pytest.raises(sandkit.CopyError, match="must exist"):
            c.copy_in(tmp_path / "file", "/missing/")
        with pytest.raises(sandkit.CopyError, match="parent directory of '/no/such' must exist"):
            c.copy_in(tmp_path / "file", "/no/such")
        with pytest.raises(sandkit.CopyError, match="not a directory"):
            c.copy_out("/renamed/", tmp_path / "x")
        c.exec(["sh", "-c", "mkdir /d2 && touch /d2/inner"], check=True)
        with pytest.raises(sandkit.CopyError, match="cannot overwrite non-directory"):
            c.copy_in(f"{tmp_path}/dir/.", "/d2")  # d2/inner is a file, the copy's a dir
        assert _container_staging(c) == []


# --- bad input ------------------------------------------------------------------------------


def test_missing_fifo_and_device_are_clear_errors_and_leave_nothing(busybox, tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "ok").write_text("ok")
    os.mkfifo(tree / "a" / "pipe")
    with sandkit.Container(busybox) as c:
        with pytest.raises(sandkit.CopyError, match=r"no such file or directory in the host"):
            c.copy_in(tmp_path / "nope", "/tmp")
        with pytest.raises(sandkit.CopyError) as fifo:
            c.copy_in(tree, "/tmp/tree")
        assert "/a/pipe" in str(fifo.value) and "is a FIFO" in str(fifo.value)
        assert "nothing was written to the container" in str(fifo.value)
        assert "tree" not in c.listdir("/tmp") and _container_staging(c) == []
        with pytest.raises(sandkit.CopyError, match="is a device"):
            c.copy_out("/dev/null", tmp_path / "null")
        with pytest.raises(sandkit.CopyError, match="no such file or directory in the container"):
            c.copy_out("/not/here", tmp_path / "x")
        with pytest.raises(sandkit.CopyError, match="recursive=True"):
            c.exec(["mkdir", "-p", "/full/x"], check=True)
            c.remove("/full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def _tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_hostile_tar_is_refused_and_leaves_nothing(busybox):
    ok = tarfile.TarInfo("fine")
    dotdot = tarfile.TarInfo("sub/../../escape")
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    dev = tarfile.TarInfo("dev")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    with sandkit.Container(busybox) as c:
        c.exec(["mkdir", "/dst"], check=True)
        for bad, why in ((dotdot, "leads outside"), (link, "leads outside"), (dev, "a device")):
            with pytest.raises(sandkit.CopyError, match=why):
                c.copy_in(_tar_with((ok, b"x"), (bad, b"")), "/dst")
            assert c.listdir("/dst") == [], bad.name  # not even "fine", nor the staging
        with pytest.raises(sandkit.CopyError, match="not a valid tar"):
            c.copy_in(io.BytesIO(b"this is not a tar" * 100), "/dst")
        assert c.listdir("/dst") == [] and _container_staging(c) == []


def test_a_full_disk_or_a_too_deep_tree_leaves_nothing(busybox, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (32 << 20))  # data, not holes: holes are copied as holes
    deep = tmp_path / "deep"
    (deep / "/".join(["d"] * 300)).mkdir(parents=True)
    with sandkit.Container(busybox, disk_size="8m") as c:
        with pytest.raises(sandkit.CopyError) as full:
            c.copy_in(big, "/big")
        assert "larger disk_size=" in str(full.value)
        assert "nothing was written" in str(full.value)
        with pytest.raises(sandkit.CopyError, match="more than 256 directories deep"):
            c.copy_in(deep, "/deep")
        assert not {"big", "deep"} & set(c.listdir("/")) and _container_staging(c) == []
        c.copy_in(b"room again", "/small")  # the space the failed copy took is free again


# --- hostile content ----------------------------------------------------------------------------


def test_copy_out_never_writes_through_a_symlink_on_the_host(busybox, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    # planted by an earlier copy of the container's content, or by anyone who could write there
    os.symlink(outside, dest / "d" / "asdir")
    os.symlink(outside / "precious", dest / "d" / "asfile")
    with sandkit.Container(busybox) as c:
        c.exec(
            [
                "sh",
                "-c",
                "mkdir -p /d/asdir && echo pwned > /d/asdir/precious && "
                "echo pwned > /d/asfile && ln -s /etc /d/etc",
            ],
            check=True,
        )
        c.copy_in(b"pwned", "/d/etc/x")  # /d/etc leads to the container's /etc, not the host's
        assert c.read_file("/etc/x") == b"pwned"
        with pytest.raises(sandkit.CopyError, match="cannot overwrite non-directory"):
            c.copy_out("/d", dest)  # d/asdir: a symlink on the host, a directory inside
        assert (outside / "precious").read_text() == "keep me"
        c.exec(["rm", "-r", "/d/asdir"], check=True)
        c.copy_out("/d", dest)
    assert (outside / "precious").read_text() == "keep me"
    assert (dest / "d" / "asfile").read_text() == "pwned\n"  # the link replaced, not followed
    assert not (dest / "d" / "asfile").is_symlink()
    assert os.readlink(dest / "d" / "etc") == "/etc"  # copied as a link, never followed
    assert staging_left(tmp_path) == []


def test_copy_in_through_a_symlink_stays_in_the_container(busybox, tmp_path):
    host_dir = tmp_path / "host-only"
    host_dir.mkdir()
    with sandkit.Container(busybox) as c:
        c.exec(
            [
                "sh",
                "-c",
                f"ln -s {host_dir} /escape && ln -s ../../../../../.. /up && "
                "mkdir /tmp/real && ln -s /tmp/real /tmp/link",
            ],
            check=True,
        )
        with pytest.raises(sandkit.CopyError, match="must exist in the container"):
            c.copy_in(b"x", "/escape/file")  # the host path does not exist inside
        c.copy_in(b"y", "/up/tmp/through-dotdot")  # .. stops at the container's root
        assert c.read_file("/tmp/through-dotdot") == b"y"
        with pytest.raises(sandkit.CopyError, match="give bytes a file's path"):
            c.copy_in(b"z", "/tmp/link/")  # a directory (through a symlink)
        c.copy_in(b"z", "/tmp/link/f")
        assert c.read_file("/tmp/real/f") == b"z"
    assert list(host_dir.iterdir()) == []


# --- memory ---------------------------------------------------------------------------------


def _big_copies(busybox_dir: str, work: str, size: int) -> tuple[int, int, int]:
    import sandkit

    with sandkit.Container(sandkit.Image.from_directory(busybox_dir), disk_size="400m") as c:
        c.exec(
            ["sh", "-c", f"dd if=/dev/zero of=/big bs=1M count={size >> 20} 2>/dev/null"],
            check=True,
            timeout=60,
        )
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        longest = total = 0
        for chunk in c.get_archive("/big"):
            longest, total = max(longest, len(chunk)), total + len(chunk)
        c.copy_out("/big", Path(work) / "big")
        c.copy_in(Path(work) / "big", "/big2")
        return total, longest, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before


def test_large_files_stream_in_bounded_memory(as_unprivileged, busybox_dir, tmp_path):
    size = 128 << 20
    # In a process of its own (root still), so that its peak memory is this copy's alone.
    total, longest, grown_kib = as_unprivileged(
        _big_copies, str(busybox_dir), str(tmp_path), size, unprivileged=False
    )
    assert total > size and longest <= 1 << 20
    assert os.path.getsize(tmp_path / "big") == size
    assert grown_kib < 32 << 10, f"peak memory grew by {grown_kib} KiB copying 128 MiB"


# --- rootless ---------------------------------------------------------------------------------


def _rootless_round_trip(busybox_dir: str, work: str) -> dict:
    import sandkit

    work_dir = Path(work)
    tree = make_tree(work_dir / "tree", owners=False)
    with sandkit.Container(sandkit.Image.from_directory(busybox_dir)) as c:
        c.copy_in(tree, "/t")
        owners = {(m.uid, m.gid) for m in _members(c, "/t").values()}
        ls = c.exec(["ls", "-ln", "/t/hello.txt"], check=True).stdout.decode()
        c.copy_out("/t", work_dir / "back")
        try:
            c.copy_in(tree, "/kept", archive=True)
            refused = ""
        except sandkit.CopyError as exc:
            refused = str(exc)
        left = c.listdir("/")
    return {
        "owners": owners,
        "ls": ls,
        "same": listing(work_dir / "back", owners=False) == listing(tree, owners=False),
        "back_owner": os.stat(work_dir / "back" / "hello.txt").st_uid,
        "me": os.getuid(),
        "refused": refused,
        "left": left,
    }


def _rootless_failures(busybox_dir: str, work: str) -> dict:
    import sandkit

    tree = Path(work) / "tree"
    (tree / "ro").mkdir(parents=True)
    (tree / "ro" / "f").write_text("x")
    os.chmod(tree / "ro", 0o555)
    (tree / "s").write_text("s")  # written after ro/, which is then finished (0555) in staging
    os.mkfifo(tree / "zz-fifo")  # then the copy fails
    errors = []
    with sandkit.Container(sandkit.Image.from_directory(busybox_dir)) as c:
        with pytest.raises(sandkit.CopyError) as into:
            c.copy_in(tree, "/t")
        errors.append(str(into.value))
        left_inside = [n for n in c.listdir("/") if n == "t" or n.startswith(".sandkit-cp-")]
        c.exec(
            [
                "sh",
                "-c",
                "mkdir -p /d/ro && echo x > /d/ro/f && chmod 555 /d/ro && echo > /d/s && mkfifo /d/zz",
            ],
            check=True,
        )
        with pytest.raises(sandkit.CopyError) as out:
            c.copy_out("/d", Path(work) / "out")
        errors.append(str(out.value))
    os.chmod(tree / "ro", 0o755)
    return {"errors": errors, "inside": left_inside, "host": sorted(os.listdir(work))}


def test_rootless_failures_leave_nothing(as_unprivileged, busybox_dir, tmp_path):
    from conftest import unprivileged_ids

    uid, gid = unprivileged_ids()
    os.chown(tmp_path, uid, gid)
    got = as_unprivileged(_rootless_failures, str(busybox_dir), str(tmp_path))
    assert all("is a FIFO" in e for e in got["errors"]), got["errors"]
    assert got["inside"] == [] and got["host"] == ["tree"]


def test_rootless(as_unprivileged, busybox_dir, tmp_path):
    from conftest import unprivileged_ids

    uid, gid = unprivileged_ids()
    os.chown(tmp_path, uid, gid)
    got = as_unprivileged(_rootless_round_trip, str(busybox_dir), str(tmp_path))
    assert got["owners"] == {(0, 0)}  # the container's root, as Docker's default
    assert " 0 " in got["ls"]
    assert got["same"]
    assert got["back_owner"] == got["me"]  # the caller's, on the host
    assert "does not map" in got["refused"] and "archive=True" in got["refused"]
    assert "kept" not in got["left"] and not any(n.startswith(".sandkit-cp-") for n in got["left"])


def _rootless_unreadable(busybox_dir: str, work: str) -> dict:
    import sandkit

    tree = Path(work) / "tree"
    (tree / "closed").mkdir(parents=True)
    (tree / "closed" / "f").write_text("x")
    (tree / "listed").mkdir()
    (tree / "listed" / "g").write_text("y")
    os.chmod(tree / "closed", 0)
    os.chmod(tree / "listed", 0o444)  # listable, not searchable
    got: dict[str, str] = {}

    def attempt(label, fn):
        try:
            fn()
            got[label] = "no error"
        except sandkit.CopyError as exc:
            got[label] = str(exc)

    with sandkit.Container(sandkit.Image.from_directory(busybox_dir)) as c:
        attempt("in", lambda: c.copy_in(tree, "/t"))
        attempt("in_listed", lambda: c.copy_in(tree / "listed", "/t"))
        attempt("in_below_listed", lambda: c.copy_in(tree / "listed" / "g", "/t"))
        c.exec(["sh", "-c", "mkdir -p /d/x && echo x > /d/x/f && chmod 0 /d/x"], check=True)
        attempt("out", lambda: c.copy_out("/d", Path(work) / "out"))
        attempt("archive", lambda: b"".join(c.get_archive("/d/.")))
        attempt("stat", lambda: c.stat("/d/x/f"))
        left = sorted(os.listdir(work))
    os.chmod(tree / "closed", 0o755)
    os.chmod(tree / "listed", 0o755)
    return {"errors": got, "host": left}


def test_rootless_an_unreadable_source_is_a_copy_error_naming_it_and_the_fix(
    as_unprivileged, busybox_dir, tmp_path
):
    from conftest import unprivileged_ids

    uid, gid = unprivileged_ids()
    os.chown(tmp_path, uid, gid)
    got = as_unprivileged(_rootless_unreadable, str(busybox_dir), str(tmp_path))
    tree = f"{tmp_path}/tree"
    named = {
        "in": f"'{tree}/closed' in the host",
        "in_listed": f"'{tree}/listed/g' in the host",
        "in_below_listed": f"'{tree}/listed/g' in the host",
        "out": "'/d/x' in the container",
        "archive": "'/d/./x' in the container",
        "stat": "'/d/x/f' in the container",
    }
    for label, where in named.items():
        message = got["errors"][label]
        assert f"cannot read {where}: Permission denied" in message, (label, message)
        assert "chmod" in message, (label, message)
    assert got["host"] == ["tree"]


@pytest.mark.root
def test_a_full_host_disk_names_the_hosts_disk_and_leaves_nothing(busybox, full_tmpfs):
    with sandkit.Container(busybox) as c:
        c.copy_in(b"x" * (256 << 10), "/big")
        with pytest.raises(sandkit.CopyError) as full:
            c.copy_out("/big", full_tmpfs / "big")
    assert "No space left on device" in str(full.value)
    assert "room on the host's disk" in str(full.value), str(full.value)
    assert "disk_size" not in str(full.value)
    assert sorted(os.listdir(full_tmpfs)) == ["filler", "volumes"]


def _rootless_remove(busybox_dir: str) -> dict:
    import sandkit

    deep = "/".join(["d"] * 1100)  # deeper than Python's recursion limit
    got = {}
    with sandkit.Container(sandkit.Image.from_directory(busybox_dir)) as c:
        c.exec(["sh", "-c", f"mkdir -p /t/ro/x /t/{deep} && chmod 555 /t/ro"], check=True)
        try:
            c.remove("/t", recursive=True)
            got["removed"] = "t" not in c.listdir("/")
        except Exception as exc:  # noqa: BLE001 - reported to the parent as text
            got["removed"] = f"{type(exc).__name__}: {exc}"[:300]
    return got


def test_rootless_recursive_remove_takes_read_only_and_deep_trees(as_unprivileged, busybox_dir):
    # As Docker, whose removal runs as the container's root: neither a 0555 directory nor the
    # depth of a tree stops it.
    assert as_unprivileged(_rootless_remove, str(busybox_dir)) == {"removed": True}
