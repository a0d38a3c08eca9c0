"""diff, commit and export of a running container (issue 20 item 5): what `docker diff`,
`docker commit` and `docker export` give for the same changes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import sandkit
from sandkit.errors import ContainerError, ImageError, LimitsError
from sandkit.images import Image

from .test_image_run import busybox  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

CHANGES = "echo new > /tmp/new && rm /etc/group && mkdir -p /srv/d && echo x > /srv/d/f"


def test_diff_lists_the_changes_and_not_what_sandkit_wrote(busybox):
    with sandkit.Container(busybox, user="root") as c:
        assert c.diff() == []  # a fresh container: its /etc/hosts and mount points are sandkit's
        assert c.exec(["sh", "-c", CHANGES]).exit_code == 0
        assert [str(x) for x in c.diff()] == [
            "C /etc",
            "D /etc/group",
            "A /srv",
            "A /srv/d",
            "A /srv/d/f",
            "C /tmp",
            "A /tmp/new",
        ]


def test_commit_makes_an_image_that_runs_with_the_changes(busybox, store):
    with sandkit.Container(busybox, user="root") as c:
        assert c.exec(["sh", "-c", CHANGES]).exit_code == 0
        image = c.commit("committed:1", changes=['CMD ["cat", "/tmp/new"]'], message="m")
        assert c.exec(["cat", "/tmp/new"]).stdout == b"new\n"  # it goes on running
    assert image.tags == ("committed:1",) and image.config.cmd == ("cat", "/tmp/new")
    assert Image.get("committed:1", store=store).id == image.id
    with sandkit.Container(image, user="root") as again:
        r = again.exec(["sh", "-c", "cat /tmp/new /srv/d/f; ls /etc"])
        assert r.stdout == b"new\nx\npasswd\n"
        assert again.diff() == []


def test_export_writes_the_flattened_tree(busybox, tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "export.tar"
    out.write_bytes(b"an older export")
    with sandkit.Container(busybox, user="root") as c:
        assert c.exec(["sh", "-c", CHANGES]).exit_code == 0
        c.export(out)
    with tarfile.open(out) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("tmp/new").read() == b"new\n"  # type: ignore[union-attr]
    assert "etc/group" not in names and "etc/passwd" in names and "bin/busybox" in names
    assert names["proc"].isdir() and not any(n.startswith("proc/") for n in names)
    assert list(out.parent.iterdir()) == [out]  # no staging left beside it


def test_export_to_a_missing_directory_or_onto_a_directory_is_a_clear_error(busybox, tmp_path):
    where = tmp_path / "exports"
    (where / "taken").mkdir(parents=True)
    with sandkit.Container(busybox) as c:
        for target in (where / "missing" / "x.tar", where / "taken"):
            with pytest.raises(ContainerError, match=f"cannot write {target}.*existing directory"):
                c.export(target)
    assert [p.name for p in where.iterdir()] == ["taken"]  # nothing staged left
    assert list((where / "taken").iterdir()) == []


def test_a_directory_image_cannot_be_committed(busybox_dir):
    with (
        sandkit.Container(Image.from_directory(busybox_dir)) as c,
        pytest.raises(ImageError, match="from the store"),
    ):
        c.commit("x:1")


def _rootless_commit(layers: list[bytes]) -> tuple[list[str], list[tuple[str, int, int]]]:
    """In the unprivileged child: change a container, diff and commit it; returns the diff and
    (name, uid, gid) of each entry of the committed layer."""
    import tempfile
    from pathlib import Path

    from sandkit.images.store import Store

    from .conftest import oci_layout

    layout = oci_layout(Path(tempfile.mkdtemp()) / "bb", layers, config={"Env": ["PATH=/bin"]})
    store = Store.default()
    image = Image.load(layout, store=store)
    with sandkit.Container(image) as c:
        assert c.exec(["sh", "-c", CHANGES]).exit_code == 0
        changes = [str(x) for x in c.diff()]
        committed = c.commit("rootless:1")
    layer = store.record(committed.id).layers[-1]
    with store.open_blob(layer.digest) as blob, tarfile.open(fileobj=blob) as tar:
        owners = [(m.name, m.uid, m.gid) for m in tar.getmembers()]
    return changes, owners


def test_rootless_commit_records_the_containers_own_ids(as_unprivileged):
    from .test_image_run import busybox_layers

    changes, owners = as_unprivileged(_rootless_commit, busybox_layers())
    assert "A /tmp/new" in changes and "D /etc/group" in changes
    # the files belong to the container's root: 0:0 in the layer, not the caller's host uid
    assert ("tmp/new", 0, 0) in owners and ("srv/d/f", 0, 0) in owners
    assert ("etc/.wh.group", 0, 0) in owners


# --- persist=True: the writable layer on disk, kept from one start to the next ---------------


def _persist_round(image: Image, home: Path) -> tuple[bytes, list[str], list[str], bool, bool]:
    """Change a persistent container, stop it, start it again; then remove it. Returns what it
    read back, its diff before and after the restart, whether its layer directory was there
    while it was stopped, and whether it is there after the removal."""
    c = sandkit.Container(image, persist=True, user="root")
    c.start()
    assert c.exec(["sh", "-c", CHANGES]).exit_code == 0
    before = [str(x) for x in c.diff()]
    c.stop()
    layer = home / "containers" / c.id
    kept = (layer / "upper" / "tmp" / "new").exists()
    c.start()
    try:
        read = c.exec(["cat", "/tmp/new", "/srv/d/f"]).stdout
        after = [str(x) for x in c.diff()]
    finally:
        c.remove()
    return read, before, after, kept, layer.exists()


def test_a_persistent_container_starts_again_with_its_files(busybox, store):
    read, before, after, kept, left = _persist_round(busybox, store.home)
    assert read == b"new\nx\n" and before == after and "D /etc/group" in after
    assert kept and not left


def _rootless_persist(layers: list[bytes]) -> tuple[bytes, list[str], list[str], bool, bool]:
    import tempfile

    from sandkit.images.store import Store

    from .conftest import oci_layout

    layout = oci_layout(Path(tempfile.mkdtemp()) / "bb", layers, config={"Env": ["PATH=/bin"]})
    store = Store.default()
    return _persist_round(Image.load(layout, store=store), store.home)


def test_rootless_a_persistent_container_starts_again_with_its_files(as_unprivileged):
    from .test_image_run import busybox_layers

    read, before, after, kept, left = as_unprivileged(_rootless_persist, busybox_layers())
    assert read == b"new\nx\n" and before == after and "D /etc/group" in after
    assert kept and not left


@pytest.mark.parametrize("limit", [{"disk_size": "64m"}, {"disk_inodes": 1000}])
def test_a_disk_limit_with_persist_is_refused_not_dropped(busybox, limit):
    with pytest.raises(LimitsError, match=r"persist=True.*cannot bound"):
        sandkit.Container(busybox, persist=True, **limit)


def test_without_persist_a_stopped_container_does_not_start_again(busybox):
    c = sandkit.Container(busybox)
    c.start()
    c.stop()
    with pytest.raises(ContainerError, match="persist=True"):
        c.start()


def test_the_host_image_has_no_layer_to_keep():
    with pytest.raises(ContainerError, match="persist=True needs a container of an image"):
        sandkit.Container("host", persist=True).start()


# --- the init's hold on the writable layer leads nowhere else ---------------------------------

# From each directory fd of the init (/proc/1/fd/N), ".." twelve times over, looking for the
# host's canary: the init holds the upper directory for commit and diff, and a container process
# that may trace the init (given CAP_SYS_PTRACE) can open its fds.
_WALK_UP = r"""
for f in /proc/1/fd/*; do
  [ -d "$f/" ] || continue
  echo "dir $f"
  p="$f"
  for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
    [ -e "$p/$CANARY" ] && echo "HOLE: $f, $i levels up"
    p="$p/.."
  done
done
echo walked
"""


def _walk_up_from_the_inits_fds(image: Image, canary: str, persist: bool) -> str:
    with sandkit.Container(image, cap_add=["SYS_PTRACE"], persist=persist) as c:
        r = c.exec(["sh", "-c", _WALK_UP], env={"CANARY": canary.lstrip("/")}, user="0", timeout=30)
    return r.stdout.decode() + r.stderr.decode()


def _rootless_walk_up(layers: list[bytes], canary: str, persist: bool) -> str:
    import tempfile

    from sandkit.images.store import Store

    from .conftest import oci_layout

    layout = oci_layout(Path(tempfile.mkdtemp()) / "bb", layers, config={"Env": ["PATH=/bin"]})
    return _walk_up_from_the_inits_fds(Image.load(layout, store=Store.default()), canary, persist)


@pytest.mark.parametrize("persist", [False, True], ids=["tmpfs-layer", "persistent-layer"])
@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_the_inits_upper_directory_fd_never_leads_to_the_host(
    busybox, as_unprivileged, mode, persist
):
    import shutil
    import tempfile

    from .test_image_run import busybox_layers

    # Where any user may look (pytest's own directory is 0700: a rootless walk would not see it).
    where = Path(tempfile.mkdtemp(prefix="sandkit-canary-"))
    try:
        where.chmod(0o755)
        canary = where / "host-canary"
        canary.write_text("host")
        if mode == "root":
            out = _walk_up_from_the_inits_fds(busybox, str(canary), persist)
        else:
            out = as_unprivileged(_rootless_walk_up, busybox_layers(), str(canary), persist)
    finally:
        shutil.rmtree(where)
    # (it reached the init's directory fd, the upper directory: else it proves nothing)
    assert "walked" in out and "dir /proc/1/fd/" in out and "HOLE" not in out, out
