"""Named volumes: they outlive containers, are filled from the image on first use as Docker
fills them, cannot be removed while in use, and what a container leaves in one is inert for the
host and for the next container. Root and rootless."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from treelisting import listing, make_tree

import sandkit
from sandkit.runtime import volumes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_home")]


def _seed(busybox_dir: Path, root: Path) -> Path:
    """busybox with a tree at /data (other owners when root, a setuid file, links of every
    kind), an empty 0700 directory (owned by 999:999 when root) at /pgdata, and a tree too deep
    to copy at /deep."""
    shutil.copytree(busybox_dir, root, symlinks=True)
    make_tree(root / "data", owners=os.geteuid() == 0)
    (root / "pgdata").mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(root / "pgdata", 999, 999)
    deep = root / "deep"
    for _ in range(140):  # past the init's limit of 128 levels
        deep = deep / "d"
    deep.mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def seeded_rootfs(busybox_dir, tmp_path_factory) -> Path:
    return _seed(busybox_dir, tmp_path_factory.mktemp("volumes") / "rootfs")


def _own_image(busybox_dir: Path) -> sandkit.Image:
    """The seeded image made by the calling user (rootless: their own files, as their pulls)."""
    return sandkit.Image.from_directory(_seed(busybox_dir, Path(tempfile.mkdtemp()) / "rootfs"))


@pytest.fixture
def image(seeded_rootfs):
    return sandkit.Image.from_directory(seeded_rootfs)


def _sh(c: sandkit.Container, script: str) -> str:
    return c.exec(["sh", "-c", script], check=True).stdout.decode()


# --- unit: how mounts name volumes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "source"),
    [
        ("data:/x", "volume", "data"),
        ("pg.data_1:/x:ro", "volume", "pg.data_1"),
        ("/srv/data:/x", "bind", "/srv/data"),
        ("./data:/x", "bind", "./data"),
    ],
)
def test_a_source_without_slash_names_a_volume(spec, kind, source):
    mount = sandkit.Mount.parse(spec)
    assert (mount.type, mount.source) == (kind, source)


@pytest.mark.parametrize("name", ["x", "-x", "a/b", "a b", "é"])
def test_bad_volume_names_fail_with_the_rule(name):
    with pytest.raises(sandkit.MountError, match="letters, digits"):
        sandkit.Mount.volume(name, "/x")
    with pytest.raises(sandkit.VolumeSpecError, match="letters, digits"):
        sandkit.Volume(name)


# --- the life of a volume -------------------------------------------------------------------


def _outlives_and_is_refused_while_in_use(image: sandkit.Image) -> tuple[int, int]:
    """Writes in one container, reads in the next; returns the owner of the file on the host."""
    with sandkit.Volume("keep") as vol:
        with sandkit.Container(image, mounts=["keep:/keep"]) as c:
            # a directory its owner may not enter: removal still gets through (rootless too)
            _sh(c, "echo kept > /keep/file && mkdir -p /keep/locked/in && chmod 0 /keep/locked")
            assert vol.in_use
            with pytest.raises(sandkit.VolumeInUseError, match="stop the containers"):
                vol.remove()
        assert not vol.in_use
        with sandkit.Container(image, mounts=[sandkit.Mount.volume("keep", "/k2")]) as c:
            assert _sh(c, "cat /k2/file") == "kept\n"
            assert _sh(c, "stat -c %u:%g /k2/file") == "0:0\n"
        st = os.stat(vol.mountpoint / "file")
        home = Path(os.environ["SANDKIT_HOME"])
        assert stat.S_IMODE(os.stat(home / "volumes" / "keep").st_mode) == 0o700
    assert not (home / "volumes" / "keep").exists()
    assert sandkit.Volume.all() == []
    return st.st_uid, st.st_gid


@pytest.mark.root
def test_a_volume_outlives_its_container_and_is_refused_while_in_use(image):
    assert _outlives_and_is_refused_while_in_use(image) == (0, 0)


def test_rootless_a_volume_outlives_its_container_as_the_callers_files(busybox, as_unprivileged):
    owner = as_unprivileged(_outlives_and_is_refused_while_in_use, busybox)
    uid = subprocess.run(["id", "-u", "sandkit-test"], capture_output=True, text=True).stdout
    assert owner[0] == int(uid or -1)


@pytest.mark.root
def test_rm_from_another_process_is_refused_while_a_container_uses_it(image):
    with sandkit.Container(image, mounts=["busy:/busy"]):
        refused = subprocess.run(
            [sys.executable, "-m", "sandkit", "volume", "rm", "busy"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode == 1
        assert "in use" in refused.stderr and "stop the containers" in refused.stderr
    sandkit.Volume.get("busy").remove()


# --- copy-up ----------------------------------------------------------------------------------


@pytest.mark.root
def test_a_fresh_volume_is_filled_from_the_image_with_owners_modes_links(image, seeded_rootfs):
    with sandkit.Volume("seeded") as vol:
        with sandkit.Container(image, mounts=["seeded:/data"]) as c:
            _sh(c, "true")
        # Directories that received entries have the time of the copy, as Docker's do
        # (tests/cli/test_volume_parity.py); everything else is as in the image.
        assert _without_dir_times(listing(vol.mountpoint)) == _without_dir_times(
            listing(seeded_rootfs / "data")
        )


def _without_dir_times(rows: list[tuple]) -> list[tuple]:
    return [(*r[:6], None if r[1] == oct(stat.S_IFDIR) else r[6], r[7]) for r in rows]


@pytest.mark.root
def test_the_volume_root_takes_the_image_directorys_owner_and_mode(image):
    with sandkit.Volume("pg") as vol:
        with sandkit.Container(image, mounts=["pg:/pgdata"]) as c:
            assert _sh(c, "stat -c '%u:%g %a' /pgdata") == "999:999 700\n"
        st = os.stat(vol.mountpoint)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (999, 999, 0o700)


def _not_refilled_once_used(image: sandkit.Image | Path) -> list[str]:
    if isinstance(image, Path):
        image = _own_image(image)
    with sandkit.Volume("used") as vol:
        with sandkit.Container(image, mounts=["used:/data"]) as c:
            _sh(c, "rm -rf /data/* && echo mine > /data/mine")
        with sandkit.Container(image, mounts=["used:/data"]) as c:
            return sorted(os.listdir(vol.mountpoint))


@pytest.mark.root
def test_a_volume_with_content_is_not_filled_again(image):
    assert _not_refilled_once_used(image) == ["mine"]


def test_rootless_a_volume_with_content_is_not_filled_again(busybox_dir, as_unprivileged):
    assert as_unprivileged(_not_refilled_once_used, busybox_dir) == ["mine"]


def _filled_rootless(busybox_dir: Path) -> tuple[list[str], str]:
    image = _own_image(busybox_dir)
    with sandkit.Volume("seeded") as vol:
        with sandkit.Container(image, mounts=["seeded:/data"]) as c:
            shown = _sh(
                c, "cat /data/hello.txt; stat -c %a /data/setuid; readlink /data/sub/relative"
            )
        owners = {os.lstat(p).st_uid for p in [vol.mountpoint, *vol.mountpoint.rglob("*")]}
        return sorted(os.listdir(vol.mountpoint)), shown + str(owners == {os.getuid()})


def test_rootless_a_fresh_volume_is_filled_from_the_image(
    busybox_dir, as_unprivileged, seeded_rootfs
):
    names, shown = as_unprivileged(_filled_rootless, busybox_dir)
    assert names == sorted(os.listdir(seeded_rootfs / "data"))
    assert shown == "hello\n4755\n../hello.txt\nTrue"


def _failed_fill_leaves_it_empty(image: sandkit.Image | Path) -> tuple[str, list[str]]:
    if isinstance(image, Path):
        image = _own_image(image)
    with sandkit.Volume("deep") as vol:
        with (
            pytest.raises(sandkit.ContainerStartError) as failed,
            sandkit.Container(image, mounts=["deep:/deep"]),
        ):
            pass
        return str(failed.value), os.listdir(vol.mountpoint)


@pytest.mark.root
def test_a_fill_that_fails_leaves_the_volume_empty(image):
    message, left = _failed_fill_leaves_it_empty(image)
    assert "deeper than 128 directories" in message
    assert left == []


def test_rootless_a_fill_that_fails_leaves_the_volume_empty(busybox_dir, as_unprivileged):
    message, left = as_unprivileged(_failed_fill_leaves_it_empty, busybox_dir)
    assert "deeper than 128 directories" in message
    assert left == []


# --- what a container plants --------------------------------------------------------------


@pytest.mark.root
def test_a_volume_is_mounted_nosuid_nodev_and_planted_devices_do_not_open(image):
    with sandkit.Volume("planted"):
        with sandkit.Container(image, mounts=["planted:/v"]) as c:
            options = _sh(c, "grep ' /v ' /proc/mounts").split()[3].split(",")
            assert {"nosuid", "nodev"} <= set(options)
            _sh(c, "mknod /v/mem c 1 1 && cp /bin/busybox /v/sh && chmod 4755 /v/sh")
        with sandkit.Container(image, mounts=["planted:/v"]) as c:
            r = c.exec(["head", "-c", "1", "/v/mem"])
            assert r.exit_code != 0 and b"ermission denied" in r.stderr


@pytest.mark.root
def test_removal_never_follows_what_a_container_planted(image, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    with sandkit.Container(image, mounts=["links:/v"]) as c:
        _sh(
            c,
            f"ln -s {outside} /v/dirlink && ln -s {outside}/precious /v/filelink && "
            "mkdir -p /v/locked/in && chmod 0 /v/locked",
        )
    sandkit.Volume.get("links").remove()
    assert (outside / "precious").read_text() == "keep me\n"
    with pytest.raises(sandkit.VolumeNotFoundError, match="volume create links"):
        sandkit.Volume.get("links")


def test_a_volume_removed_meanwhile_is_made_again_at_the_next_mount(busybox):
    with sandkit.Container(busybox, mounts=["again:/v"]) as c:
        _sh(c, "echo 1 > /v/one")
    sandkit.Volume.get("again").remove()
    with sandkit.Container(busybox, mounts=["again:/v"]) as c:
        assert _sh(c, "ls /v") == ""
    assert volumes.get_volume("again").name == "again"
    sandkit.Volume.get("again").remove()


# --- size limits ------------------------------------------------------------------------------


def _mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.mark.root
def test_a_sized_volume_stops_writes_at_its_size_and_keeps_its_content(busybox):
    with sandkit.Volume("capped", size="16m") as vol:
        assert vol.options == {"size": str(16 << 20)}
        with sandkit.Container(busybox, mounts=["capped:/v"]) as c:
            assert _sh(c, "ls -A /v") == ""  # no lost+found: a fresh volume is empty
            r = c.exec(["dd", "if=/dev/zero", "of=/v/big", "bs=1M", "count=32"])
            assert r.exit_code != 0 and b"No space left on device" in r.stderr
            _sh(c, "rm /v/big && echo kept > /v/small")
        assert _mounted_under(vol.mountpoint) == []  # unmounted with the last container
        with sandkit.Container(busybox, mounts=["capped:/v"]) as c:
            assert _sh(c, "cat /v/small") == "kept\n"
        directory = vol.mountpoint.parent
    assert not directory.exists()


@pytest.mark.root
def test_a_tmpfs_volume_is_shared_while_used_and_gone_after(busybox):
    with sandkit.Volume("inmemory", tmpfs=True, size="8m") as vol:
        with (
            sandkit.Container(busybox, mounts=["inmemory:/m"]) as first,
            sandkit.Container(busybox, mounts=["inmemory:/m"]) as second,
        ):
            _sh(first, "echo shared > /m/f")
            assert _sh(second, "cat /m/f; df -k /m | tail -1").split()[:3] == [
                "shared",
                "tmpfs",
                "8192",
            ]
        assert _mounted_under(vol.mountpoint) == []
        with sandkit.Container(busybox, mounts=["inmemory:/m"]) as c:
            assert _sh(c, "ls -A /m") == ""


def _sized_refused() -> str:
    for kwargs in ({"size": "64m"}, {"tmpfs": True}):
        with pytest.raises(sandkit.VolumeSpecError) as refused:
            sandkit.Volume("sized", **kwargs)
    assert sandkit.Volume.all() == []
    return str(refused.value)


def test_rootless_a_size_limit_is_refused_with_the_fix(as_unprivileged):
    assert "needs root" in as_unprivileged(_sized_refused)
    assert "drop size=" in as_unprivileged(_sized_refused)


@pytest.mark.parametrize("size", ["1k", "lots", -5])
def test_a_bad_size_is_refused(size):
    with pytest.raises(sandkit.VolumeSpecError, match="size"):
        sandkit.Volume("sized", size=size)


@pytest.mark.root
def test_containers_with_volumes_never_start_from_a_spare(busybox, monkeypatch):
    """A spare made ahead would mount (and fill) the volume without holding its lease: once the
    volume is removed, a container that took it would write into the removed one. So a
    container with volumes neither takes a spare nor has one made after it (its recipe)."""
    monkeypatch.setenv("SANDKIT_PRESPAWN", "1")
    with sandkit.Container(busybox, mounts=["spared:/v"]) as c:
        _sh(c, "echo one > /v/one")
        assert c._core._recipe_used is None
    sandkit.Volume.get("spared").remove()
    with sandkit.Container(busybox, mounts=["spared:/v"]) as c:
        monkeypatch.setenv("SANDKIT_PRESPAWN", "0")  # no spare outlives the test either way
        _sh(c, "echo two > /v/two")
        assert sorted(os.listdir(sandkit.Volume.get("spared").mountpoint)) == ["two"]


@pytest.mark.root
def test_a_container_that_locks_its_volume_does_not_stall_the_next_fill(image):
    """The fill is serialised by a lock beside the volume, which no container reaches; one on
    the volume's root, which every container using it mounts, would let one stall the others'
    starts."""
    with (
        sandkit.Volume("contended") as vol,
        sandkit.Container("host", mounts=["contended:/v"]) as holder,
        holder.spawn(["flock", "-x", "/v", "sh", "-c", "echo locked; exec sleep 600"]) as p,
    ):
        assert p.stdout.read() == b"locked\n"
        with sandkit.Container(image, mounts=["contended:/data"]) as c:
            assert _sh(c, "cat /data/hello.txt") == "hello\n"
        assert (vol.mountpoint / "hello.txt").exists()
        p.kill()


@pytest.mark.root
def test_a_full_disk_is_a_volume_error_with_the_fix_and_leaves_nothing(full_tmpfs):
    full_home = full_tmpfs
    with pytest.raises(sandkit.VolumeError) as full:
        volumes.create_volume("data", home=full_home)
    assert "No space left on device" in str(full.value)
    assert "SANDKIT_HOME" in str(full.value) and "prune" in str(full.value)
    assert os.listdir(full_home / "volumes") == []  # made before the disk was full
    result = subprocess.run(
        [sys.executable, "-m", "sandkit", "volume", "create", "data"],
        env={**os.environ, "SANDKIT_HOME": str(full_home)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr


@pytest.mark.root
def test_a_read_only_home_is_a_sandkit_error_naming_the_fix(tmp_path):
    home = tmp_path / "ro"
    home.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=700", "tmpfs", home], check=True
    )
    try:
        for argv in (["volume", "create", "data"], ["volume", "ls"]):
            result = subprocess.run(
                [sys.executable, "-m", "sandkit", *argv],
                env={**os.environ, "SANDKIT_HOME": str(home)},
                capture_output=True,
                text=True,
            )
            assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
            assert "Read-only file system" in result.stderr, result.stderr
            assert "set SANDKIT_HOME to a writable directory" in result.stderr
    finally:
        subprocess.run(["umount", home], check=True)
