"""Rootless containers with the image's own users: a subordinate id range from /etc/subuid and
/etc/subgid, mapped with newuidmap/newgidmap as rootless Podman does (idmap.py), layers applied
with their owners inside that mapping, and the usermod fix when the user has no range.

Each test runs the container as the unprivileged test user (conftest.run_unprivileged); the
`subids` fixture gives that user a range for the test and puts both files back afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import stat
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandkit
import sandkit.api
import sandkit.doctor
import sandkit.idmap
import sandkit.images.image
import sandkit.images.layers
import sandkit.images.mapped
import sandkit.images.store
import sandkit.net.client
import sandkit.network
import sandkit.runtime.container
import sandkit.volume
from sandkit.images.layers import LayerWarning
from tests.conftest import UNPRIVILEGED_USER, unprivileged_ids
from tests.images.conftest import oci_layout, tar_bytes

pytestmark = pytest.mark.root

START = 300000  # the test user's subordinate range: START..START+65535
REF = "example.com/test/pg:1"
_SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


@contextlib.contextmanager
def _subid_entries(*lines: str | None) -> Iterator[None]:
    """The test user has exactly ``lines`` in both files (None: no entry) until the end (so may
    other users' that ``lines`` add)."""
    saved = [(path, path.read_bytes() if path.exists() else None) for path in _SUBID_FILES]
    try:
        for path, old in saved:
            kept = [
                row
                for row in (old or b"").decode().splitlines()
                if not row.startswith(f"{UNPRIVILEGED_USER}:")
            ]
            path.write_text("".join(f"{row}\n" for row in [*kept, *filter(None, lines)]))
        yield
    finally:
        for path, old in saved:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)


@pytest.fixture
def subids() -> Iterator[int]:
    with _subid_entries(f"{UNPRIVILEGED_USER}:{START}:65536"):
        yield START


@pytest.fixture
def no_subids() -> Iterator[None]:
    with _subid_entries(None):
        yield


def _busybox_layer(rootfs: Path) -> bytes:
    buf = io.BytesIO()

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".", filter=as_root)
    return buf.getvalue()


_PASSWD = b"root:x:0:0:root:/root:/bin/sh\npostgres:x:70:70::/var/pg:/bin/sh\n"


def _readable_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="sandkit-subid-"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def pg_layout(busybox_dir: Path) -> Iterator[Path]:
    """An OCI layout: busybox, then a layer whose /var/pg belongs to 70:70 (as postgres's data
    directory does) beside a root-owned /srv, with User 70."""
    base = _readable_dir()
    own = tar_bytes(
        [
            ("var/pg", "dir", None, {"uid": 70, "gid": 70, "mode": 0o755}),
            ("var/pg/PG_VERSION", "file", b"16\n", {"uid": 70, "gid": 70, "mode": 0o600}),
            ("srv", "dir", None, {"uid": 0, "gid": 0, "mode": 0o755}),
            ("etc/passwd", "file", _PASSWD, {}),
            ("etc/group", "file", b"root:x:0:\npostgres:x:70:\nstaff:x:50:\n", {}),
        ]
    )
    yield oci_layout(
        base / "layout",
        [_busybox_layer(busybox_dir), own],
        config={"User": "70", "Cmd": ["sh"]},
        ref_name=REF,
    )
    shutil.rmtree(base, ignore_errors=True)


def _image_users(layout: Path) -> dict[str, object]:
    image = sandkit.Image.load(layout)
    found: dict[str, object] = {}
    with sandkit.Container(image) as c:
        found["id"] = c.exec(["id"]).stdout.decode().strip()
        found["stat"] = c.exec(["stat", "-c", "%u:%g", "/var/pg", "/var/pg/PG_VERSION"]).stdout
        found["own"] = c.exec(["sh", "-c", "echo x > /var/pg/new && echo ok"]).stdout
        found["roots"] = c.exec(["sh", "-c", "echo x > /srv/new"], check=False).exit_code
        found["other"] = c.exec(["id"], user="1000:50").stdout.decode().strip()
        found["map"] = c.exec(["cat", "/proc/self/uid_map"]).stdout.decode().split()
        try:
            c.exec(["id"], user="70000")
        except sandkit.errors.ExecStartError as e:
            found["past"] = str(e)
    layer = image.layer_dirs[-1]
    found["host"] = [os.stat(layer / "var/pg").st_uid, os.stat(layer / "var/pg/PG_VERSION").st_gid]
    return found


def test_rootless_an_image_user_runs_with_its_own_files(pg_layout, subids, as_unprivileged):
    found = as_unprivileged(_image_users, pg_layout)
    assert found["id"] == "uid=70(postgres) gid=70(postgres) groups=70(postgres)"
    assert found["stat"] == b"70:70\n70:70\n"
    assert found["own"] == b"ok\n"
    assert found["roots"] != 0  # /srv is root's 0755: uid 70 may not write there
    assert found["other"] == "uid=1000 gid=50(staff) groups=50(staff)"
    uid = unprivileged_ids()[0]
    assert found["map"] == ["0", str(uid), "1", "1", str(START), "65535"]
    assert found["host"] == [START + 69, START + 69]
    assert "not mapped" in found["past"] and "maps ids 0 to 65535 only" in found["past"]


def _run_as_70(layout: Path) -> str:
    image = sandkit.Image.load(layout)
    with sandkit.Container(image) as c:
        try:
            c.exec(["id"])
        except sandkit.errors.ExecStartError as e:
            return str(e)
    return "ran"


def test_rootless_without_subids_another_user_fails_with_the_usermod_fix(
    pg_layout, no_subids, as_unprivileged
):
    message = as_unprivileged(_run_as_70, pg_layout)
    assert "not mapped" in message
    assert (
        f"`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {UNPRIVILEGED_USER}`"
        in message
    )
    assert "/etc/subuid" in message


def _hostile(layout: Path) -> dict[str, object]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = sandkit.Image.load(layout)
    layer = image.layer_dirs[-1]
    with sandkit.Container(image, user="0") as c:
        inside = c.exec(["stat", "-c", "%u:%g", "/far", "/half"]).stdout.decode().split()
    return {
        "inside": inside,
        "host": [(os.stat(layer / n).st_uid, os.stat(layer / n).st_gid) for n in ("far", "half")],
        "warned": [str(w.message) for w in caught if issubclass(w.category, LayerWarning)],
    }


def test_rootless_owners_past_the_range_become_root_not_a_host_id(
    busybox_dir, subids, as_unprivileged
):
    base = _readable_dir()
    hostile = tar_bytes(
        [
            ("far", "file", b"x", {"uid": 4294967294, "gid": 4294967294}),
            ("half", "file", b"y", {"uid": 70, "gid": 65536}),
        ]
    )
    layout = oci_layout(base / "layout", [_busybox_layer(busybox_dir), hostile], ref_name=REF)
    try:
        found = as_unprivileged(_hostile, layout)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    uid, gid = unprivileged_ids()
    assert found["inside"] == ["0:0", "70:0"]
    assert found["host"] == [(uid, gid), (START + 69, gid)]
    assert any("2 entries" in w and "65535" in w for w in found["warned"])


def _load_then_owner(layout: Path) -> int:
    image = sandkit.Image.load(layout)
    return os.stat(image.layer_dirs[-1] / "var/pg").st_uid


def _get_then_run(ref: str) -> tuple[int, str]:
    image = sandkit.Image.get(ref)
    with sandkit.Container(image) as c:
        return os.stat(image.layer_dirs[-1] / "var/pg").st_uid, c.exec(["id", "-u"]).stdout.decode()


def test_a_store_applied_without_the_range_is_applied_again_with_it(
    pg_layout, as_unprivileged, monkeypatch
):
    # One SANDKIT_HOME for both runs: run_unprivileged gives each its own, so keep one here.
    uid, gid = unprivileged_ids()
    home = _readable_dir()
    os.chown(home, uid, gid)
    monkeypatch.setenv("SANDKIT_HOME", str(home / "store"))
    try:
        with _subid_entries(None):
            before = as_unprivileged(_load_with_home, pg_layout, str(home / "store"))
        with _subid_entries(f"{UNPRIVILEGED_USER}:{START}:65536"):
            after = as_unprivileged(_get_with_home, REF, str(home / "store"))
            removed = as_unprivileged(_remove_with_home, REF, str(home / "store"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert before == uid  # one id: the caller owns every file
    assert after == (START + 69, "70\n")
    assert removed == []  # the re-applied layers belong to the range, and prune removed them


def _load_with_home(layout: Path, home: str) -> int:
    os.environ["SANDKIT_HOME"] = home
    return _load_then_owner(layout)


def _get_with_home(ref: str, home: str) -> tuple[int, str]:
    os.environ["SANDKIT_HOME"] = home
    return _get_then_run(ref)


def _remove_with_home(ref: str, home: str) -> list[str]:
    os.environ["SANDKIT_HOME"] = home
    store = sandkit.images.store.Store.default()
    sandkit.Image.get(ref).remove()
    store.prune()
    return sorted(os.listdir(Path(home) / "layers"))


def _volume_of_70(layout: Path) -> tuple[bytes, int, bool]:
    image = sandkit.Image.load(layout)
    with sandkit.Container(image, mounts=["pgdata:/var/pg"]) as c:
        c.exec(["sh", "-c", "echo row > /var/pg/table"])
        listed = c.exec(["ls", "-n", "/var/pg"]).stdout
    volume = sandkit.Volume.get("pgdata")
    owner = os.stat(volume.mountpoint / "table").st_uid
    volume.remove()
    return listed, owner, volume.mountpoint.exists()


def test_rootless_a_volume_filled_from_the_image_keeps_its_owners(
    pg_layout, subids, as_unprivileged
):
    listed, owner, left = as_unprivileged(_volume_of_70, pg_layout)
    assert b" 70 " in listed and b"PG_VERSION" in listed and b"table" in listed
    assert owner == START + 69
    assert not left  # removed although its files belong to the range


def test_the_mapping_names_the_range():
    mapping = sandkit.idmap.RangeMapping(
        1000,
        1000,
        sandkit.idmap.SubidRange(100000, 65536),
        sandkit.idmap.SubidRange(200000, 10),
        "/usr/bin/newuidmap",
        "/usr/bin/newgidmap",
    )
    assert mapping.uid_map == "0 1000 1\n1 100000 65535\n"
    assert mapping.gid_map == "0 1000 1\n1 200000 10\n"
    assert (mapping.inner_uids, mapping.inner_gids) == (65536, 11)
    assert mapping.host_uid(70) == 100069
    assert pwd.getpwnam(UNPRIVILEGED_USER)  # the tests' user exists for the others
    assert stat.S_ISREG(os.stat(mapping.newuidmap).st_mode)


def _doctor_says() -> tuple[bool, str, str]:
    (check,) = sandkit.doctor._subids()
    return check.ok, check.detail, check.fix


def test_doctor_reports_the_range_and_the_fix(subids, as_unprivileged):
    ok, detail, _ = as_unprivileged(_doctor_says)
    assert ok and f"/etc/subuid {START}+65536" in detail and "1..65535" in detail
    with _subid_entries(None):
        ok, detail, fix = as_unprivileged(_doctor_says)
    assert not ok and f"no /etc/subuid entry for {UNPRIVILEGED_USER}" in detail
    assert fix == (
        f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {UNPRIVILEGED_USER} "
        "(as root)"
    )


def _on_a_network(layout: Path) -> tuple[str, str, str]:
    image = sandkit.Image.load(layout)
    with sandkit.Network("pgnet", internal=True) as net, sandkit.Container(image, network=net) as c:
        return (
            c.exec(["id"]).stdout.decode().strip(),
            c.exec(["stat", "-c", "%u:%g", "/var/pg"]).stdout.decode().strip(),
            c.exec(["sh", "-c", "echo x > /var/pg/new && ls -n /var/pg/new"]).stdout.decode(),
        )


def test_rootless_on_a_network_the_keeper_maps_the_range_too(pg_layout, subids, as_unprivileged):
    seen, owners, written = as_unprivileged(_on_a_network, pg_layout)
    assert seen == "uid=70(postgres) gid=70(postgres) groups=70(postgres)"
    assert owners == "70:70"
    assert " 70 " in written and "70" in written.split()[3]


def _copies(layout: Path, tmp: str) -> dict[str, object]:
    image = sandkit.Image.load(layout)
    src = Path(tmp) / "conf"
    src.write_text("listen_addresses='*'\n")
    with sandkit.Container(image) as c:
        c.copy_in(str(src), "/var/pg/postgresql.conf")  # into a directory of uid 70
        c.copy_in(b"data", "/var/pg/blob")
        c.copy_out("/var/pg/PG_VERSION", Path(tmp) / "version")  # 0600, uid 70's
        c.remove("/var/pg/blob")
        listed = c.exec(["ls", "-ln", "/var/pg"]).stdout.decode()
    return {"listed": listed, "out": (Path(tmp) / "version").read_bytes()}


def test_rootless_copy_and_remove_in_a_directory_of_the_images_user(
    pg_layout, subids, as_unprivileged
):
    uid, gid = unprivileged_ids()
    tmp = _readable_dir()
    os.chown(tmp, uid, gid)
    try:
        found = as_unprivileged(_copies, pg_layout, str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = {line.split()[-1]: line.split()[2:4] for line in found["listed"].splitlines()[1:]}
    assert rows["PG_VERSION"] == ["70", "70"]
    assert rows["postgresql.conf"] == ["0", "0"]  # the copier's files are the container root's
    assert "blob" not in rows
    assert found["out"] == b"16\n"


def _keeper_of_one_id(layout: Path) -> tuple[str, str]:
    image = sandkit.Image.load(layout)
    idmap = sandkit.idmap
    real = idmap.rootless_mapping
    with sandkit.Network("oldnet", internal=True) as net:
        idmap.rootless_mapping = lambda: None  # the keeper (a fork of ours) maps one id
        try:
            first = sandkit.Container(image, network=net, user="0").start()
        finally:
            idmap.rootless_mapping = real
        try:
            with sandkit.Container(image, network=net, user="0") as c:  # the range is refused
                seen = c.exec(["cat", "/proc/self/uid_map"]).stdout.decode()
                try:
                    c.exec(["id"], user="70")
                except sandkit.errors.ExecStartError as e:
                    return seen, str(e)
        finally:
            first.stop()
    return seen, "ran"


def test_rootless_a_keeper_of_one_id_gives_its_containers_one_id(
    pg_layout, subids, as_unprivileged
):
    seen, refused = as_unprivileged(_keeper_of_one_id, pg_layout)
    assert seen.split() == ["0", "0", "1"]
    assert "not mapped" in refused and "until the keeper restarts" in refused


def _user_70_against_the_init(layout: Path) -> dict[str, object]:
    image = sandkit.Image.load(layout)
    with sandkit.Container(image) as c:
        tries = {
            what: c.exec(["sh", "-c", cmd], user="70", timeout=10).exit_code
            for what, cmd in {
                "stop": "kill -STOP 1",
                "kill": "kill -KILL 1",
                "environ": "cat /proc/1/environ",
                "mem": "head -c1 /proc/1/mem",
                "fds": "ls /proc/1/fd",
            }.items()
        }
        tries["init answers"] = c.exec(["true"], timeout=10).exit_code
        return tries


def test_rootless_a_ranged_user_cannot_reach_the_init(pg_layout, subids, as_unprivileged):
    """With a range mapped, the container's other users are host ids of their own: one of them
    (70, the image's) must still be unable to stop, kill or read the init (uid 0 inside)."""
    tries = as_unprivileged(_user_70_against_the_init, pg_layout)
    assert tries.pop("init answers") == 0
    assert all(code != 0 for code in tries.values()), tries
