"""The test images of real services (tests/service_images.py): their cache, their content, and
that `sandkit load` and `docker load` both take them and run their programs."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import service_images
from cli.conftest import sandkit as sandkit_cli
from polling import stack_of, wait_until

# What each service prints for --version (its own format; Debian bookworm's versions).
VERSION_LINE = {
    "postgres": r"postgres \(PostgreSQL\) 15\.\d+",
    "redis": r"Redis server v=7\.\d+\.\d+ ",
    "python": r"Python 3\.11\.\d+$",
}


# --- the cache (no debootstrap: the build itself is replaced) ---------------------------------


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SANDKIT_TEST_IMAGES", str(cache))
    return cache


def _fake_build(calls: list[str], *, gate: threading.Event | None = None, fail: bool = False):
    """A stand-in for service_images.build: writes a partial file, then (unless `fail`) the
    archive, after `gate` opens."""

    def build(recipe, workdir: Path, log: Path) -> Path:
        calls.append(recipe.name)
        (workdir / "layer.tar").write_bytes(b"half a layer")
        if gate is not None:
            assert gate.wait(30)
        if fail:
            raise RuntimeError("debootstrap died")
        archive = workdir / "image.tar"
        archive.write_bytes(b"an archive")
        return archive

    return build


def _cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name != ".lock")


def test_a_recipe_without_an_entrypoint_is_keyed_by_its_setup_too():
    recipe = service_images.PYTHON
    assert recipe.entrypoint_script is None and recipe.setup
    other_setup = service_images.Recipe(**{**vars(recipe), "setup": recipe.setup[:-1]})
    assert recipe.key() != other_setup.key()


def test_the_cache_key_changes_with_the_recipe_and_its_entrypoint(tmp_path, monkeypatch):
    recipe = service_images.REDIS
    key = recipe.key()
    assert key == service_images.REDIS.key()  # stable within a run
    other_packages = service_images.Recipe(**{**vars(recipe), "packages": ("redis-tools",)})
    assert other_packages.key() != key
    entrypoints = tmp_path / "entrypoints"
    entrypoints.mkdir()
    script = service_images.ENTRYPOINTS / recipe.entrypoint_script
    (entrypoints / recipe.entrypoint_script).write_text(script.read_text() + "\n# changed\n")
    monkeypatch.setattr(service_images, "ENTRYPOINTS", entrypoints)
    assert recipe.key() != key


def test_a_build_that_fails_leaves_no_archive_and_no_build_directory(empty_cache, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(service_images, "build", _fake_build(calls, fail=True))
    with pytest.raises(RuntimeError, match="debootstrap died"):
        service_images.ensure("redis")
    assert calls == ["redis"]
    assert _cache_entries(empty_cache) == []
    assert service_images.cached("redis") is None


def test_what_a_killed_build_left_goes_with_the_next_build(empty_cache, monkeypatch):
    stale = empty_cache / ".build-redis-killed"
    (stale / "rootfs/usr/bin").mkdir(parents=True)
    (stale / "layer.tar").write_bytes(b"half")
    calls: list[str] = []
    monkeypatch.setattr(service_images, "build", _fake_build(calls))
    path = service_images.ensure("redis")
    assert _cache_entries(empty_cache) == [path.name]
    assert path.read_bytes() == b"an archive"
    assert path.stat().st_mode & 0o777 == 0o644  # the rootless tests' user reads it


def test_a_cached_image_is_not_built_again_and_a_new_recipe_replaces_the_old(
    empty_cache, monkeypatch
):
    calls: list[str] = []
    monkeypatch.setattr(service_images, "build", _fake_build(calls))
    first = service_images.ensure("redis")
    assert service_images.ensure("redis") == first
    assert calls == ["redis"]
    monkeypatch.setattr(service_images, "BUILD_STEPS_VERSION", -1)
    second = service_images.ensure("redis")
    assert second != first
    assert calls == ["redis", "redis"]
    assert _cache_entries(empty_cache) == [second.name]


def test_a_cache_others_may_write_to_is_refused(empty_cache, monkeypatch):
    """Root and dockerd load what is there: nobody else may put an archive there."""
    calls: list[str] = []
    monkeypatch.setattr(service_images, "build", _fake_build(calls))
    service_images.ensure("redis")
    empty_cache.chmod(0o777)
    with pytest.raises(RuntimeError, match="another user could plant an image there"):
        service_images.cached("redis")
    with pytest.raises(RuntimeError, match="chmod go-w"):
        service_images.ensure("redis", rebuild=True)
    assert calls == ["redis"]


def test_two_builds_at_once_build_once(empty_cache, monkeypatch):
    """The second waits on the lock, then finds the first one's archive."""
    calls: list[str] = []
    gate = threading.Event()
    monkeypatch.setattr(service_images, "build", _fake_build(calls, gate=gate))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(service_images.ensure("redis")))]
    threads[0].start()
    wait_until(lambda: calls == ["redis"], "the first build to start")
    threads.append(threading.Thread(target=lambda: results.append(service_images.ensure("redis"))))
    threads[1].start()
    wait_until(lambda: "_build_lock" in stack_of(threads[1]), "the second to wait on the lock")
    assert service_images.cached("redis") is None
    gate.set()
    for thread in threads:
        thread.join(30)
    assert calls == ["redis"]
    assert results == [service_images.archive_path(service_images.REDIS)] * 2


# --- the images themselves ------------------------------------------------------------------


def _archive(request, name: str) -> Path:
    return request.getfixturevalue(f"{name}_archive")


def _layer_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        (layer_name,) = manifest[0]["Layers"]
        with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:
            return layer.getnames()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(service_images.RECIPES))
def test_an_image_holds_no_apt_lists_documentation_other_locales_or_devices(request, name):
    names = _layer_names(_archive(request, name))
    entrypoint = service_images.RECIPES[name].entrypoint
    assert (f"usr/local/bin/{entrypoint}" in names) == (entrypoint is not None)
    for gone in ("var/lib/apt/lists/", "usr/share/man/", "usr/share/locale/", "usr/share/i18n/"):
        assert not [n for n in names if n.startswith(gone)], gone
    docs = [n for n in names if n.startswith("usr/share/doc/") and n.count("/") > 3]
    assert docs and all(n.endswith("/copyright") for n in docs)
    assert {n.split("/")[3] for n in names if n.startswith("usr/lib/locale/")} == {"C.utf8"}
    assert [n for n in names if n.startswith("dev/")] == []
    assert "etc/resolv.conf" not in names  # the build machine's
    assert not [n for n in names if n.startswith("etc/ssl/private/")]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(service_images.RECIPES))
def test_sandkit_load_takes_the_archive_with_its_config(request, name):
    import sandkit

    recipe = service_images.RECIPES[name]
    done = sandkit_cli("load", "-i", str(_archive(request, name)), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Loaded image: {recipe.tag}"
    image = sandkit.Image.get(recipe.tag)
    assert image.inspect()["config"] == recipe.config  # every field kept, the healthcheck too
    expected = recipe.config
    entrypoint = expected.get("Entrypoint")
    assert image.config.entrypoint == (tuple(entrypoint) if entrypoint else None)
    assert image.config.cmd == tuple(expected["Cmd"])
    assert image.config.user == expected.get("User", "")
    assert image.config.working_dir == expected.get("WorkingDir", "")
    assert image.config.stop_signal == expected.get("StopSignal", "")
    assert image.config.env == tuple(expected["Env"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(service_images.RECIPES))
def test_the_image_runs_its_service_program_as_its_own_user(request, name):
    import sandkit

    recipe = service_images.RECIPES[name]
    image = request.getfixturevalue(f"{name}_image")
    with sandkit.Container(image) as c:
        version = c.exec(list(recipe.version_argv), timeout=30, check=True)
        assert re.match(VERSION_LINE[name], version.stdout.decode()), version.stdout
        who = c.exec(["id", "-un"], timeout=30, check=True)
        assert who.stdout.decode().strip() == recipe.config.get("User", "root")
        for data in recipe.directories[:1]:
            mode = c.exec(["stat", "-c", "%U %a", data.path], timeout=30, check=True)
            assert mode.stdout.decode().split() == [data.owner, f"{data.mode:o}"]


PLOT = """
import sys, time
started = time.monotonic()
import matplotlib.pyplot as plt, numpy
plt.plot(numpy.arange(10) ** 2)
plt.savefig(sys.stdout.buffer, format="png")
print(f"{time.monotonic() - started:.3f}", file=sys.stderr)
"""


FONT_CACHE = "/root/.cache/matplotlib"  # (matplotlib's for root, who runs the image)


@pytest.mark.slow
def test_the_python_image_plots_with_its_ready_font_cache_and_holds_no_compiler(python_image):
    """matplotlib draws with the font cache made in the build, leaving it as it is (without it,
    each fresh container would scan the fonts and write one before its first plot), and apt
    took the light alternatives (no SciPy, so no compiler or Boost from its dependencies)."""
    import sandkit

    def font_cache() -> bytes:
        listing = f"stat -c '%n %.9Y' {FONT_CACHE}/fontlist-*.json"
        return c.exec(["sh", "-c", listing], timeout=30, check=True).stdout

    with sandkit.Container(python_image) as c:
        made_in_the_build = font_cache()
        plot = c.exec(["python3", "-c", PLOT], timeout=60, check=True)
        assert plot.stdout.startswith(b"\x89PNG\r\n\x1a\n")
        assert re.fullmatch(rb"\d+\.\d+\n", plot.stderr), plot.stderr  # (no warning)
        assert font_cache() == made_in_the_build
        absent = c.exec(
            ["sh", "-c", "command -v gcc g++ cc; ls -d /usr/lib/python3/dist-packages/scipy"],
            timeout=30,
        )
        assert absent.stdout == b""


# --- Docker --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """A private dockerd (no network: --network none) for the module."""
    import dockerd

    with contextlib.ExitStack() as stack:
        try:
            daemon = stack.enter_context(dockerd.private_dockerd())
        except dockerd.DockerUnavailable as e:
            pytest.skip(f"docker load of the test images: {e}")
        yield daemon.env


def _docker(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[bytes]:
    import dockerd

    return dockerd.run(env, *argv)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("name", sorted(service_images.RECIPES))
def test_docker_load_takes_the_archive_and_runs_the_same_program(request, docker_env, name):
    import sandkit

    recipe = service_images.RECIPES[name]
    loaded = _docker(docker_env, "load", "-i", str(_archive(request, name)))
    assert loaded.stdout.decode().strip() == f"Loaded image: {recipe.tag}"
    inspected = json.loads(_docker(docker_env, "image", "inspect", recipe.tag).stdout)
    config = inspected[0]["Config"]
    # (Docker's inspect shows a field the image lacks as null or "", or leaves it out)
    for key in ("Entrypoint", "Cmd", "User", "WorkingDir", "Env", "ExposedPorts", "StopSignal"):
        assert (config.get(key) or None) == recipe.config.get(key), key
    assert config.get("Volumes") == recipe.config.get("Volumes")
    if healthcheck := recipe.config.get("Healthcheck"):
        assert config["Healthcheck"]["Test"] == healthcheck["Test"]
        assert config["Healthcheck"]["Interval"] == healthcheck["Interval"]
    # Docker runs the program through the image's entrypoint; sandkit's exec runs it directly.
    in_docker = _docker(
        docker_env, "run", "--rm", "--network", "none", recipe.tag, *recipe.version_argv
    )
    image = request.getfixturevalue(f"{name}_image")
    with sandkit.Container(image) as c:
        in_sandkit = c.exec(list(recipe.version_argv), timeout=30, check=True)
    assert in_docker.stdout == in_sandkit.stdout


@pytest.mark.root
def test_the_build_acts_inside_the_image_through_its_absolute_symlinks(busybox_dir, tmp_path):
    """debootstrap's /var/run is a link to /run, absolute: making /var/run/NAME, or stripping
    documentation behind such a link, must happen in the image, never on the build machine."""
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_dir, rootfs, symlinks=True)
    (rootfs / "run").mkdir()
    (rootfs / "usr/local/bin").mkdir(parents=True)
    (rootfs / "var").mkdir()
    (rootfs / "var/run").symlink_to("/run")
    host_docs = tmp_path / "host-docs"  # stands for a directory of the build machine
    host_docs.mkdir()
    (host_docs / "README").write_text("the host's")
    docs = rootfs / "usr/share/doc"
    (docs / "pkg").mkdir(parents=True)
    (docs / "pkg/copyright").write_text("kept")
    (docs / "pkg/README").write_text("stripped")
    (docs / "linked").symlink_to(host_docs)
    for locale in ("C.utf8", "de_DE.utf8"):
        (rootfs / "usr/lib/locale" / locale).mkdir(parents=True)
    (rootfs / "dev/null").write_text("a stand-in for a device node")
    name = f"sandkit-test-{uuid.uuid4().hex[:8]}"
    recipe = service_images.Recipe(
        **{
            **vars(service_images.REDIS),
            "directories": (service_images.Directory(f"/var/run/{name}", "app", 0o2775),),
            "removed": ("usr/share/doc/linked/*",),
        }
    )
    try:
        service_images._customise(recipe, rootfs)
        assert not Path("/run", name).exists()
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path("/run", name).rmdir()  # (what the fault this test catches made on the host)
    made = (rootfs / "run" / name).stat()
    assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (1000, 1000, 0o2775)
    assert (host_docs / "README").read_text() == "the host's"
    assert sorted(p.name for p in (docs / "pkg").iterdir()) == ["copyright"]
    assert [p.name for p in (rootfs / "usr/lib/locale").iterdir()] == ["C.utf8"]
    assert list((rootfs / "dev").iterdir()) == []
    entrypoint = rootfs / "usr/local/bin" / recipe.entrypoint
    assert (
        entrypoint.read_bytes()
        == (service_images.ENTRYPOINTS / recipe.entrypoint_script).read_bytes()
    )
    assert entrypoint.stat().st_mode & 0o777 == 0o755
