"""Attacks on named volumes and on copies, from inside a container (root in it, Docker's default
capabilities) and from what it leaves behind: planted links and special files, names made to
escape, sparse files that would fill the host's disk, a tree swapped while it is copied out,
two containers filling one volume at once, a mount target the image makes a symlink."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from treelisting import listing, make_tree

import sandkit
from sandkit.images import fsutil

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_home")]

_SPARSE = 1 << 30  # apparent size of the planted sparse file


def _sh(c: sandkit.Container, script: str) -> str:
    return c.exec(["sh", "-c", script], check=True).stdout.decode()


# --- copy_out: host disk ------------------------------------------------------------------------


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_huge_sparse_file_copied_out_stays_sparse_on_the_host(busybox, tmp_path):
    """A file of 1 GiB of holes costs the container nothing; copied out byte for byte it would
    cost the host 1 GiB of disk (1 TiB as easily: the host's disk fills). The holes stay holes,
    the data between them is copied."""
    with sandkit.Container(busybox) as c:
        _sh(
            c,
            f"truncate -s {_SPARSE} /big && echo head | dd of=/big conv=notrunc 2>/dev/null && "
            f"echo tail | dd of=/big bs=1 seek={_SPARSE - 5} conv=notrunc 2>/dev/null",
        )
        c.copy_out("/big", tmp_path / "big")
    out = tmp_path / "big"
    assert out.stat().st_size == _SPARSE
    assert _allocated(out) < 1 << 20
    with open(out, "rb") as f:
        assert f.read(5) == b"head\n"
        f.seek(_SPARSE - 5)
        assert f.read() == b"tail\n"


# --- copy_out / copy_in: a tree swapped while it is walked --------------------------------------

_SECRET = b"HOST-ONLY-SECRET"
_ROUNDS = 40


def _host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "file").write_bytes(_SECRET)
    return secret


def _swapper(c: sandkit.Container, secret: Path) -> sandkit.Process:
    """A loop in the container that swaps /src/d (a directory) and /src/f (a file) for symlinks
    to host paths, again and again, between the host's steps of a walk."""
    script = (
        "mkdir -p /src/d && echo inner > /src/d/file && echo plain > /src/f && "
        "echo ready && while :; do "
        f"mv /src/d /src/d.real; ln -s {secret} /src/d; rm /src/d; mv /src/d.real /src/d; "
        f"mv /src/f /src/f.real; ln -s {secret}/file /src/f; rm /src/f; mv /src/f.real /src/f; "
        "done"
    )
    p = c.spawn(["sh", "-c", script], stdin=False)
    assert p.stdout.read() == b"ready\n"
    return p


def _secret_in(tree: Path) -> list[Path]:
    return [
        path
        for path in tree.rglob("*")
        if path.is_file() and not path.is_symlink() and _SECRET in path.read_bytes()
    ]


@pytest.mark.root
def test_copy_out_racing_symlink_swaps_never_reads_the_host(busybox, tmp_path):
    """The walk goes by fds below the container's root with O_NOFOLLOW, and checks that what
    it opens is what it lstat'ed: a symlink swapped in between (absolute, so that the host would
    read its own file if it followed it) fails that copy or is copied as a link, never read."""
    secret = _host_secret(tmp_path)
    with sandkit.Container(busybox) as c, _swapper(c, secret):
        found, outcomes = _copy_out_rounds(c, tmp_path)
        for _ in range(_ROUNDS):
            assert _SECRET not in b"".join(_archive_or_error(c, "/src"))
    assert found == [] and outcomes  # each round ended, one way or the other
    assert (secret / "file").read_bytes() == _SECRET


def _copy_out_rounds(c: sandkit.Container, work: Path) -> tuple[list[Path], set[str]]:
    """copy_out of /src, _ROUNDS times: the copied files that hold the host's secret, and how
    the rounds ended."""
    found: list[Path] = []
    outcomes: set[str] = set()
    for n in range(_ROUNDS):
        dest = work / f"out{n}"
        dest.mkdir()
        try:
            c.copy_out("/src", dest)
            outcomes.add("copied")
        except sandkit.CopyError:
            outcomes.add("refused")
        found += _secret_in(dest)
    return found, outcomes


def _archive_or_error(c: sandkit.Container, path: str) -> list[bytes]:
    try:
        return list(c.get_archive(path))
    except sandkit.CopyError:
        return []


@pytest.mark.root
def test_copy_in_racing_symlink_swaps_never_writes_the_host(busybox, tmp_path):
    """The destination's directories are opened by the init in the container's root and written
    below by fds: a directory swapped for a symlink to a host directory mid-copy is never
    written through."""
    secret = _host_secret(tmp_path)
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "planted").write_bytes(b"from the host caller")
    (tree / "f").write_bytes(b"replacement")
    with sandkit.Container(busybox) as c, _swapper(c, secret):
        for _ in range(_ROUNDS):
            try:
                c.copy_in(os.fspath(tree) + "/.", "/src")
            except sandkit.CopyError:
                pass  # a swapped directory met: refused, which is fine
    assert sorted(p.name for p in secret.iterdir()) == ["file"]
    assert (secret / "file").read_bytes() == _SECRET


def _rootless_copy_attacks(busybox_dir: str, work: str) -> dict:
    """In the unprivileged child: the sparse file and the racing swaps, against copy_out."""
    work_dir = Path(work)
    secret = _host_secret(work_dir)
    with sandkit.Container(sandkit.Image.from_directory(busybox_dir)) as c:
        _sh(c, f"truncate -s {_SPARSE} /big")
        c.copy_out("/big", work_dir / "big")
        with _swapper(c, secret):
            found, outcomes = _copy_out_rounds(c, work_dir)
    return {
        "size": (work_dir / "big").stat().st_size,
        "allocated": _allocated(work_dir / "big"),
        "found": found,
        "outcomes": outcomes,
    }


def test_rootless_sparse_and_racing_copy_out(as_unprivileged, busybox_dir, tmp_path):
    from conftest import unprivileged_ids

    os.chown(tmp_path, *unprivileged_ids())
    got = as_unprivileged(_rootless_copy_attacks, str(busybox_dir), str(tmp_path))
    assert got["size"] == _SPARSE and got["allocated"] < 1 << 20
    assert got["found"] == [] and got["outcomes"]


# --- tar members made to escape -------------------------------------------------------------------


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize(
    "members",
    [
        # a hard link to a file outside the destination
        [(_member("h", tarfile.LNKTYPE, "../../../../etc/passwd"), b"")],
        # a symlink to /, then a file written through it
        [(_member("l", tarfile.SYMTYPE, "/"), b""), (_member("l/etc/pwned"), b"x")],
        # a symlinked directory, then a hard link whose target goes through it
        [
            (_member("l", tarfile.SYMTYPE, "/etc"), b""),
            (_member("h", tarfile.LNKTYPE, "l/passwd"), b""),
        ],
        # a file, then a directory of the same name holding a file
        [(_member("x"), b"1"), (_member("x/y"), b"2")],
    ],
    ids=["hardlink-out", "file-through-symlink", "hardlink-through-symlink", "file-as-dir"],
)
def test_a_tar_made_to_escape_writes_nothing_outside_and_nothing_at_all(busybox, members):
    with sandkit.Container(busybox) as c:
        c.exec(["mkdir", "/dst"], check=True)
        before = _sh(c, "md5sum /etc/passwd /etc/group")
        with pytest.raises(sandkit.CopyError):
            c.copy_in(_tar(*members), "/dst")
        assert c.listdir("/dst") == []
        assert _sh(c, "md5sum /etc/passwd /etc/group") == before
        assert _sh(c, "ls /etc/pwned 2>&1 || true").startswith("ls:")


def test_a_leading_slash_in_a_tar_member_lands_below_the_destination(busybox):
    """As Docker's extraction: an absolute member name is taken from the destination."""
    with sandkit.Container(busybox) as c:
        c.exec(["mkdir", "/dst"], check=True)
        c.copy_in(_tar((_member("/etc/landed"), b"inside")), "/dst")
        assert c.read_file("/dst/etc/landed") == b"inside"
        assert "landed" not in c.listdir("/etc")


# --- volume names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["..", ".", "../etc", "a/../../b", ".rm-0123456789abcdef", ".new-x", "a\0b", "/abs"]
)
def test_a_volume_name_never_leaves_the_volumes_directory(name, tmp_path):
    with pytest.raises(sandkit.VolumeSpecError, match="letters, digits"):
        sandkit.Volume(name).create()
    with pytest.raises(sandkit.VolumeSpecError):
        sandkit.Volume.get(name)
    volumes = tmp_path / "home" / "volumes"
    assert not volumes.exists() or list(volumes.iterdir()) == []


# --- volumes: fill and mount target ---------------------------------------------------------------


def _image_with(busybox_dir: Path, root: Path, build) -> sandkit.Image:
    shutil.copytree(busybox_dir, root, symlinks=True)
    build(root)
    return sandkit.Image.from_directory(root)


@pytest.mark.root
def test_a_mount_target_the_image_makes_a_symlink_stays_in_the_container(busybox_dir, tmp_path):
    """The image's /data is an absolute symlink to a host directory (which the image has too),
    and /up one climbing out with ..: each volume is mounted where its link leads inside the
    container's root, and filled from there; the host's directory is neither filled from nor
    mounted over. (A link to a path the image lacks fails the start: `dangling` below.)"""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "host-file").write_bytes(_SECRET)

    def build(root: Path) -> None:
        os.symlink(host_dir, root / "data")
        (root / host_dir.relative_to("/")).mkdir(parents=True)
        (root / "inside").mkdir()
        (root / "inside" / "from-image").write_text("image\n")
        os.symlink("../../../../../../../inside", root / "up")

    image = _image_with(busybox_dir, tmp_path / "rootfs", build)
    with (
        sandkit.Volume("linked") as vol,
        sandkit.Volume("climbing") as climbing,
        sandkit.Container(image, mounts=["linked:/data", "climbing:/up"]) as c,
    ):
        _sh(c, "echo written > /data/new")
        assert _sh(c, "cat /up/from-image") == "image\n"
        assert sorted(os.listdir(vol.mountpoint)) == ["new"]
        assert sorted(os.listdir(climbing.mountpoint)) == ["from-image"]
        assert sorted(os.listdir(host_dir)) == ["host-file"]
        assert not os.path.ismount(host_dir)
    assert sorted(os.listdir(host_dir)) == ["host-file"]
    (tmp_path / "rootfs" / host_dir.relative_to("/")).rmdir()
    image = sandkit.Image.from_directory(tmp_path / "rootfs")
    with pytest.raises(sandkit.ContainerStartError, match="mount point /data"):
        sandkit.Container(image, mounts=["other:/data"]).start()
    assert sorted(os.listdir(host_dir)) == ["host-file"]
    assert not os.path.ismount(host_dir)


@pytest.mark.root
def test_two_containers_filling_one_fresh_volume_at_once_fill_it_once(busybox_dir, tmp_path):
    image = _image_with(
        busybox_dir, tmp_path / "rootfs", lambda root: make_tree(root / "data", owners=True)
    )
    errors: list[BaseException] = []
    started: list[sandkit.Container] = []

    def start() -> None:
        try:
            started.append(sandkit.Container(image, mounts=["raced:/data"]).start())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with sandkit.Volume("raced") as vol:
        threads = [threading.Thread(target=start) for _ in range(2)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            names = [sorted(_sh(c, "ls -A /data").split()) for c in started]
        finally:
            for c in started:
                c.stop()
        expected = listing(tmp_path / "rootfs" / "data", top_mtime=False)
        got = listing(vol.mountpoint, top_mtime=False)
        assert [r[0] for r in got] == [r[0] for r in expected]
        assert names[0] == names[1] == sorted(os.listdir(tmp_path / "rootfs" / "data"))


# --- the host's walks of a volume a container changes (volume ls -s, system df, removal) ---------


def _moving_tree(tmp_path: Path) -> tuple[Path, Path]:
    """volumes/att/_data holding a/b/c (c with a file) and a top-level directory named after
    the volume beside it, "victim", whose files the walk of att must never meet."""
    volumes = tmp_path / "volumes"
    data = volumes / "att" / "_data"
    (data / "a" / "b" / "c").mkdir(parents=True)
    (data / "a" / "b" / "c" / "f").write_bytes(b"x")
    (data / "victim").mkdir()
    (volumes / "victim" / "_data").mkdir(parents=True)
    (volumes / "victim" / "_data" / "precious").write_bytes(b"p" * 1000)
    return volumes, data


@pytest.fixture
def moved_during_walk(tmp_path, monkeypatch) -> Path:
    """The _data of a volume whose a/b/c a container moves to the top right after the host's
    walk listed c (and that the walk visits before the top's "victim", whatever the order of
    the listing)."""
    data = _moving_tree(tmp_path)[1]
    real_scan = fsutil._scan

    def scan_then_move(fd: int, on_file):
        subdirs = real_scan(fd, on_file)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/a/b/c"):
            os.rename(data / "a" / "b" / "c", data / "c")
        return sorted(subdirs, key=lambda name: name == "a")  # walk_tree pops from the end

    monkeypatch.setattr(fsutil, "_scan", scan_then_move)
    return data


def test_a_directory_moved_during_the_walk_never_leads_it_out_of_the_tree(moved_during_walk):
    """Climbing back by ``..`` from the moved c puts the walk one level above where it thinks it
    is, then two: out of _data into volumes/, where it opens the names it still has to visit,
    which the container chose. The walk notices it is not where it came from, and stops."""
    seen: list[str] = []

    def on_file(dir_fd: int, entry: os.DirEntry[str]) -> None:
        seen.append(os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), entry.name))

    top = os.open(moved_during_walk, fsutil.DIR_FLAGS)
    try:
        with pytest.raises(OSError, match="moved while"):
            fsutil.walk_tree(top, on_file)
    finally:
        os.close(top)
    assert [p for p in seen if not p.startswith(os.fspath(moved_during_walk))] == []


def test_volume_size_of_a_tree_moved_meanwhile_counts_only_the_volume(moved_during_walk):
    """The size of a volume in use (`volume ls -s`, `system df`) while its container moves
    things: what was counted before the move, never another volume's files, no exception."""
    assert fsutil.dir_size(moved_during_walk) <= 1


@pytest.mark.root
def test_a_container_racing_the_next_ones_fill_never_reaches_the_host(
    busybox, busybox_dir, tmp_path
):
    """Container A shares a fresh volume and plants, again and again, symlinks to host paths
    under the names the image's tree has, while container B's init (root, still in the host's
    view of files) fills the volume from its image: B's fill creates every name with O_EXCL and
    opens with O_NOFOLLOW, so it fails (clear error, volume emptied) or fills; it never writes,
    chowns or chmods through a link."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir(mode=0o700)
    host_file = tmp_path / "host-file"
    host_file.write_bytes(_SECRET)
    host_file.chmod(0o600)
    before = [(p, os.stat(p)) for p in (host_dir, host_file)]
    image = _image_with(
        busybox_dir, tmp_path / "rootfs", lambda root: make_tree(root / "data", owners=True)
    )
    links = " ".join(
        f"ln -s {target} /v/{name} 2>/dev/null;"
        for name, target in [
            ("sub", host_dir),
            ("private", host_dir),
            ("empty", host_dir),
            ("hello.txt", host_file),
            ("setuid", host_file),
            ("readonly", host_file),
        ]
    )
    # Waits for B's fill to begin (the volume is empty until then), then plants its links.
    plant = f'echo ready; until [ -n "$(ls -A /v)" ]; do :; done; {links} {links} {links}'
    outcomes = set()
    with sandkit.Volume("contended"), sandkit.Container(busybox, mounts=["contended:/v"]) as a:
        for _ in range(8):
            _sh(a, "find /v -mindepth 1 -maxdepth 1 -exec rm -rf {} + ; true")
            with a.spawn(["sh", "-c", plant], stdin=False) as p:
                assert p.stdout.read() == b"ready\n"
                try:
                    with sandkit.Container(image, mounts=["contended:/data"]):
                        outcomes.add("filled")
                except sandkit.ContainerStartError as exc:
                    assert "fill volume at /data" in str(exc)
                    outcomes.add("refused")
                p.kill()
            assert sorted(os.listdir(host_dir)) == []
            assert host_file.read_bytes() == _SECRET
    for path, st in before:
        now = os.stat(path)
        assert (now.st_mode, now.st_uid, now.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
    assert outcomes


# --- tmpfs volumes: host memory -------------------------------------------------------------------


def _half_of_ram_kib() -> int:
    """tmpfs's default size (Documentation/filesystems/tmpfs.rst): half of RAM, in pages."""
    with open("/proc/meminfo") as f:
        total_kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    return total_kib // page_kib // 2 * page_kib


@pytest.mark.root
def test_a_tmpfs_volume_without_a_size_is_bounded_by_half_of_ram(busybox):
    """As Docker's `--opt type=tmpfs` without `o=size=`: the kernel's default. A tmpfs mounted
    with size=0 has no bound at all, and a container could fill the host's memory."""
    with (
        sandkit.Volume("unsized", tmpfs=True),
        sandkit.Container(busybox, mounts=["unsized:/m"]) as c,
    ):
        blocks = int(_sh(c, "df -k /m | tail -n 1").split()[1])
    assert blocks == _half_of_ram_kib()


# --- removal of what a container with CAP_LINUX_IMMUTABLE leaves -----------------------------------

_ATTACKS = Path(__file__).resolve().parent / "attacks"


@pytest.fixture
def flags_image(busybox_dir, tmp_path) -> sandkit.Image:
    """busybox with /bin/setflags (chattr's job; compiled static: the image has no libc). The
    flags left on the test's files are cleared at the end, or tmp_path could not be removed."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_dir, root, symlinks=True)
    subprocess.run(
        [
            "gcc",
            "-static",
            "-O1",
            "-Wall",
            "-o",
            root / "bin" / "setflags",
            _ATTACKS / "setflags.c",
        ],
        check=True,
        capture_output=True,
    )
    yield sandkit.Image.from_directory(root)
    subprocess.run(["chattr", "-R", "-i", "-a", tmp_path], capture_output=True)


@pytest.mark.root
def test_immutable_and_append_only_files_in_a_volume_do_not_stop_its_removal(flags_image):
    """A container given CAP_LINUX_IMMUTABLE (cap_add) marks files and directories of its
    volume immutable or append-only, which no unlink gets past, not even root's: removal then
    failed half-way with a bare PermissionError and left a hidden .rm- directory that every
    later prune() tripped over. The host, root, clears the flags as it removes the tree."""
    script = (
        "echo x > /v/f && mkdir -p /v/d/e && echo y > /v/d/g && echo z > /v/d/e/h && "
        "setflags +i /v/f && setflags +a /v/d/g && setflags +i /v/d/e/h && "
        "setflags +i /v/d/e && setflags +a /v/d && setflags +i /v"
    )
    with sandkit.Container(flags_image, mounts=["stuck:/v"], cap_add=["LINUX_IMMUTABLE"]) as c:
        _sh(c, script)
    sandkit.Volume.get("stuck").remove()
    assert sandkit.Volume.all() == []
    assert sandkit.Volume.prune(all=True) == []
    assert os.listdir(Path(os.environ["SANDKIT_HOME"]) / "volumes") == []


# --- a volume over a directory the init has mounted something on ---------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    "target", ["/proc", "/sys", "/proc/sys", "/dev", "/proc/sys/kernel/random", "/sys/kernel/mm"]
)
def test_a_volume_over_a_mounted_directory_is_not_filled_from_the_mount(busybox, target):
    """Docker fills a volume from the image's own tree, where /proc, /sys and /dev are empty
    directories. The init fills it before its own mounts are hidden by the volume, as real root
    with the host's view of files: from /proc or /sys it would copy the live procfs and the
    host's sysfs into a volume the container reads (past the masked paths: /proc/kcore,
    /proc/keys, /sys/firmware), from /dev the init's own nodes. The volume stays empty, whether
    the container then starts or not."""
    with sandkit.Volume("over") as vol:
        try:
            with sandkit.Container(busybox, mounts=[f"over:{target}"]):
                pass
        except sandkit.ContainerStartError:
            pass  # a volume over /proc or /dev may well stop the start: fine, if clearly
        assert os.listdir(vol.mountpoint) == []


def _rootless_fills_over_mounts(busybox_dir: str, targets: list[str]) -> dict[str, list[str]]:
    image = sandkit.Image.from_directory(busybox_dir)
    left = {}
    for n, target in enumerate(targets):
        with sandkit.Volume(f"over{n}") as vol:
            try:
                with sandkit.Container(image, mounts=[f"over{n}:{target}"]):
                    pass
            except sandkit.ContainerStartError:
                pass
            left[target] = os.listdir(vol.mountpoint)
    return left


def test_rootless_a_volume_over_a_mounted_directory_is_not_filled_from_it(
    as_unprivileged, busybox_dir
):
    targets = ["/dev", "/proc/sys/kernel/random", "/sys/kernel/mm"]
    left = as_unprivileged(_rootless_fills_over_mounts, str(busybox_dir), targets)
    assert left == {target: [] for target in targets}
