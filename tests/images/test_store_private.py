"""The image store is private to its owner (issue 14, hole 2).

A second local user (the suite's unprivileged test user) attacks a real store that root filled
from an archive: a setuid-root copy of `id`, a 0600 secret, a world-writable directory and the
lease and lock files. Every attempt must fail on the path, whatever the modes inside the store.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import unprivileged_ids

from sandkit.errors import HostUnsupportedError
from sandkit.home import scratch_mountpoint
from sandkit.images.image import Image
from sandkit.images.store import Store

from .conftest import oci_layout, tar_bytes

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user"),
]

SECRET = b"root-only-secret-4c1d"


@pytest.fixture(scope="module")
def shared_dir():
    """A directory every user may enter (pytest's tmp_path is root's alone), as /var/lib is."""
    path = Path(tempfile.mkdtemp(prefix="sandkit-shared-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def filled_store(shared_dir: Path):
    """A store made the way `sandkit load` makes it, with content worth attacking."""
    layer = tar_bytes(
        [
            ("bin", "dir", None),
            ("bin/id-suid", "file", Path("/usr/bin/id").read_bytes(), {"mode": 0o4755}),
            ("secret", "file", SECRET, {"mode": 0o600}),
            ("tmp", "dir", None, {"mode": 0o1777}),
        ]
    )
    layout = oci_layout(shared_dir / "layout", [layer])
    store = Store(shared_dir / "home")
    image = Image.load(layout, store=store)
    with store.lease(image.id):
        pass  # the lease file now exists, as after any run
    return store, image


def _attempt(fn, *args) -> str:
    """Run in the other user's process: what ``fn`` got, or "denied"."""
    try:
        return f"succeeded: {fn(*args)!r}"
    except PermissionError:
        return "denied"


def _run_setuid(layer: Path) -> str:
    return (
        subprocess.run([str(layer / "bin/id-suid"), "-u"], capture_output=True, check=True)
        .stdout.decode()
        .strip()
    )


def _read_blob(blob: Path) -> bool:
    return SECRET in gzip.decompress(blob.read_bytes())


def _plant(layer: Path) -> str:
    (layer / "tmp" / "planted").write_text("appears in every container")
    return "planted"


def _block(lock: Path) -> str:
    fd = os.open(lock, os.O_RDONLY)  # a read-only fd is enough to flock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return "holding the lock"


def _as_other_user(as_unprivileged, fn, *args) -> str:
    return as_unprivileged(_attempt, fn, *args)


def test_another_user_cannot_run_a_setuid_file_of_an_unpacked_layer(filled_store, as_unprivileged):
    _store, image = filled_store
    assert _as_other_user(as_unprivileged, _run_setuid, image.layer_dirs[0]) == "denied"


def test_another_user_cannot_read_a_blob(filled_store, as_unprivileged):
    store, image = filled_store
    blob = store.blob_path(store.record(image.id).layers[0].digest)
    assert _as_other_user(as_unprivileged, _read_blob, blob) == "denied"


def test_another_user_cannot_plant_a_file_in_an_unpacked_layer(filled_store, as_unprivileged):
    _store, image = filled_store
    assert _as_other_user(as_unprivileged, _plant, image.layer_dirs[0]) == "denied"
    assert not (image.layer_dirs[0] / "tmp" / "planted").exists()


@pytest.mark.parametrize("lock", ["lease", "locks/gc.lock", "locks/store.lock"])
def test_another_user_cannot_lock_a_lease_or_store_lock(filled_store, as_unprivileged, lock):
    store, image = filled_store
    path = store.home / "leases" / f"{image.id[7:]}.lock" if lock == "lease" else store.home / lock
    assert path.exists()
    assert _as_other_user(as_unprivileged, _block, path) == "denied"


def test_the_store_and_its_state_are_created_private(tmp_path: Path):
    home = tmp_path / "home"
    store = Store(home)
    scratch_mountpoint(home)
    for path in [home, *home.iterdir(), *(store.home / "locks").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_an_existing_readable_store_is_made_private(tmp_path: Path):
    """A store made by an older sandkit (0755) is closed at the next open."""
    home = tmp_path / "home"
    (home / "blobs").mkdir(parents=True)
    os.chmod(home, 0o755)
    Store(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


@pytest.mark.parametrize("open_home", [Store, scratch_mountpoint], ids=["store", "runtime"])
def test_a_store_others_can_write_to_is_refused(tmp_path: Path, open_home):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    with pytest.raises(HostUnsupportedError, match=r"writable by other users.*chmod 700") as err:
        open_home(home)
    assert str(home) in str(err.value)
    assert stat.S_IMODE(home.stat().st_mode) == 0o777 and os.listdir(home) == []


@pytest.mark.parametrize("open_home", [Store, scratch_mountpoint], ids=["store", "runtime"])
def test_a_store_owned_by_another_user_is_refused(tmp_path: Path, open_home):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, *unprivileged_ids())
    with pytest.raises(HostUnsupportedError, match=r"belongs to uid \d+, not to you") as err:
        open_home(home)
    assert str(home) in str(err.value)
    assert os.listdir(home) == []


def test_run_state_of_detached_containers_checks_the_home(tmp_path: Path, monkeypatch):
    from sandkit.detached import state

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    assert stat.S_IMODE(state.run_dir().stat().st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def _rootless_homes(shared: str) -> dict[str, str]:
    """As the unprivileged user: its own open home, a world-writable one, and root's."""
    outcomes = {}
    for name, mode in (("open", 0o755), ("writable", 0o777)):
        home = Path(shared) / f"user-{name}"
        home.mkdir()
        os.chmod(home, mode)
        try:
            Store(home)
            outcomes[name] = f"{stat.S_IMODE(home.stat().st_mode):o}"
        except HostUnsupportedError as e:
            outcomes[name] = str(e)
    try:
        Store(Path(shared) / "root-home")
        outcomes["root's"] = "opened"
    except HostUnsupportedError as e:
        outcomes["root's"] = str(e)
    return outcomes


def test_rootless_a_users_store_is_private_too(as_unprivileged):
    shared = Path(tempfile.mkdtemp(prefix="sandkit-shared-"))
    try:
        os.chmod(shared, 0o1777)  # both users may make directories here (sticky, as /tmp)
        (shared / "root-home").mkdir(mode=0o755)
        outcomes = as_unprivileged(_rootless_homes, str(shared))
    finally:
        shutil.rmtree(shared)
    assert outcomes["open"] == "700"
    assert "writable by other users" in outcomes["writable"]
    assert "belongs to uid 0, not to you" in outcomes["root's"]
