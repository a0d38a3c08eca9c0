"""Test images of real services, built from Debian's packages: PostgreSQL 15 and Redis, and
an image with Python 3 and matplotlib for code sessions (issue 19).

Each image is one layer, made by `debootstrap --variant=minbase --include=PACKAGES bookworm`
from deb.debian.org (and the recipe's setup commands: the python image's apt-get), with an
entrypoint of our own where it needs one (tests/fixtures/service_images/), stripped of what no
test needs (apt lists and caches, documentation, translations: C.UTF-8 is the only
locale, built into libc), and written as a `docker save` archive that `sandkit load` and
`docker load` both take. Its config has the fields of the official `postgres` and `redis`
images (Entrypoint, Cmd, Env, User, WorkingDir, ExposedPorts, Volumes, StopSignal) plus a
Healthcheck, which those lack, so that tests can watch one; the python image's that of the
official `python` image (Cmd python3, no entrypoint).

Building needs root, debootstrap and the Debian mirror, and takes a minute or two per image, so
the archives are kept in a cache directory outside the clone (SANDKIT_TEST_IMAGES, default
/var/cache/sandkit-test-images), each named by a hash of its recipe: a changed recipe builds
anew, an unchanged one never does. A build runs under a lock (two runs never build at once; the
second waits and then finds the archive) in a temporary directory beside the archives, and the
archive appears by a rename, so a killed build leaves no half image (its directory is removed by
the next build). debootstrap runs in mount and PID namespaces of its own: its mounts and its
processes die with it.

    python -m tests.service_images build [--rebuild] [NAME...]   # what .ci/run does
    python -m tests.service_images path NAME                      # the archive, if cached

No pytest in here (tests/services/conftest.py has the fixtures).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("SANDKIT_TEST_IMAGES_MIRROR", "http://deb.debian.org/debian")
DEFAULT_CACHE = "/var/cache/sandkit-test-images"
# Set (by .ci/run) where a missing image must fail the tests instead of skipping them.
REQUIRED_ENV = "SANDKIT_TEST_IMAGES_REQUIRED"
# Part of every recipe's hash: raise it when the build steps below change what they make.
BUILD_STEPS_VERSION = 2
ENTRYPOINTS = Path(__file__).resolve().parent / "fixtures" / "service_images"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECOND = 1_000_000_000  # the image config's durations are in nanoseconds

# Removed from every image (glob patterns): what only apt, dpkg's history, a reader of manuals or
# a maker of locales needs, and what debootstrap copied from the build machine (its
# resolv.conf). /usr/lib/locale keeps only C.utf8 (see _customise).
STRIPPED = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/log/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/i18n/*",
    "usr/share/lintian",
    "etc/resolv.conf",
    "etc/hostname",
    "run/adduser",
)


@dataclass(frozen=True)
class Directory:
    """A directory the image must have, with its owner (a name of the image) and mode."""

    path: str  # absolute, in the image
    owner: str
    mode: int


@dataclass(frozen=True)
class Recipe:
    """What one test image is made of; its hash names the cached archive."""

    name: str
    tag: str
    packages: tuple[str, ...]
    # A file of ENTRYPOINTS, installed as /usr/local/bin/<entrypoint> (None: the image has none)
    entrypoint_script: str | None
    entrypoint: str | None
    directories: tuple[Directory, ...]
    removed: tuple[str, ...]  # more paths (glob patterns) to remove, besides STRIPPED
    config: Mapping[str, object] = field(hash=False)
    version_argv: tuple[str, ...] = ()  # prints the service's version (a smoke test)
    # Shell commands run in the image (with the build machine's resolv.conf) once the packages
    # are in: apt-get installs, caches a program makes once
    setup: tuple[str, ...] = ()

    def key(self) -> str:
        """16 hex digits of SHA-256 over everything that decides the image's content."""
        recipe = asdict(self)
        if not self.setup:
            del recipe["setup"]  # (so that the recipes older than it keep their archives)
        if self.entrypoint_script is not None:
            recipe["entrypoint_text"] = (ENTRYPOINTS / self.entrypoint_script).read_text()
        recipe["build"] = [BUILD_STEPS_VERSION, SUITE, list(STRIPPED)]
        text = json.dumps(recipe, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _healthcheck(test: list[str], start_period: float) -> dict[str, object]:
    """A Docker healthcheck: probes every second (a fifth of one in the start period), each
    allowed 2 s; unhealthy after 3 failures in a row."""
    return {
        "Test": test,
        "Interval": 1 * SECOND,
        "Timeout": 2 * SECOND,
        "Retries": 3,
        "StartPeriod": int(start_period * SECOND),
        "StartInterval": SECOND // 5,
    }


POSTGRES = Recipe(
    name="postgres",
    tag="sandkit-test/postgres:15",
    packages=("postgresql-15",),
    entrypoint_script="postgres-entrypoint.sh",
    entrypoint="sandkit-postgres-entrypoint",
    directories=(
        # As the official image: PGDATA made by the image (a volume there starts as this copy),
        # the socket's directory writable by postgres.
        Directory("/var/lib/postgresql/data", "postgres", 0o700),
        Directory("/var/run/postgresql", "postgres", 0o2775),
    ),
    # The cluster that postgresql-common's postinst made (the image makes its own in PGDATA),
    # and the snakeoil key ssl-cert generated for it: no test image carries a private key. And
    # the JIT compiler (LLVM, 140 of the image's 380 MB): without it PostgreSQL runs every query
    # unjitted, as it does when jit is off.
    removed=(
        "usr/lib/*/libLLVM-*.so*",
        "usr/lib/*/libz3.so*",
        "usr/lib/postgresql/15/lib/llvmjit*",
        "usr/lib/postgresql/15/lib/bitcode",
        "var/lib/postgresql/15",
        "etc/postgresql/15",
        "etc/ssl/private/ssl-cert-snakeoil.key",
        "etc/ssl/certs/ssl-cert-snakeoil.pem",
    ),
    config={
        "Env": [
            f"PATH=/usr/lib/postgresql/15/bin:{PATH}",
            "PG_MAJOR=15",
            "PGDATA=/var/lib/postgresql/data",
            "LANG=C.UTF-8",
        ],
        "Entrypoint": ["sandkit-postgres-entrypoint"],
        "Cmd": ["postgres"],
        "User": "postgres",
        "WorkingDir": "/var/lib/postgresql",
        "ExposedPorts": {"5432/tcp": {}},
        "Volumes": {"/var/lib/postgresql/data": {}},
        # PostgreSQL's fast shutdown, as the official image's
        "StopSignal": "SIGINT",
        # (over the socket: answers only once the server takes connections)
        "Healthcheck": _healthcheck(["CMD", "pg_isready", "--quiet"], start_period=30),
    },
    version_argv=("postgres", "--version"),
)

REDIS = Recipe(
    name="redis",
    tag="sandkit-test/redis:7",
    packages=("redis-server",),
    entrypoint_script="redis-entrypoint.sh",
    entrypoint="sandkit-redis-entrypoint",
    directories=(Directory("/data", "redis", 0o755),),
    removed=(),
    config={
        "Env": [f"PATH={PATH}", "LANG=C.UTF-8"],
        "Entrypoint": ["sandkit-redis-entrypoint"],
        "Cmd": ["redis-server"],
        "User": "redis",
        "WorkingDir": "/data",
        "ExposedPorts": {"6379/tcp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGTERM",
        "Healthcheck": _healthcheck(["CMD-SHELL", '[ "$(redis-cli ping)" = PONG ]'], 10),
    },
    version_argv=("redis-server", "--version"),
)

PYTHON = Recipe(
    name="python",
    tag="sandkit-test/python:3.11",
    # Debian's matplotlib brings numpy, Pillow and the DejaVu fonts: what a notebook-like
    # snippet (numbers, a plot) needs. It comes by apt-get (setup, below), not debootstrap:
    # its fonttools depends on "python3-scipy | python3-munkres", and debootstrap takes the
    # first of alternatives, SciPy, which brings a C++ compiler, Boost and OpenBLAS (600 MB).
    packages=("python3",),
    entrypoint_script=None,
    entrypoint=None,
    directories=(),
    # The test suites and C headers of Python and numpy, which no snippet imports, and what
    # fonttools depends on for features matplotlib does not use: SymPy and the Unicode
    # Character Database's text files (70 MB).
    removed=(
        "usr/lib/python3/dist-packages/sympy",
        "usr/share/unicode",
        "usr/lib/python3/dist-packages/numpy/*/tests",
        "usr/lib/python3/dist-packages/numpy/core/include",
        "usr/lib/python3/dist-packages/matplotlib/tests",
        "usr/lib/python3.11/test",
        # (documentation in directories, which the stripping of files would leave empty)
        "usr/share/doc/*/examples",
        "usr/share/doc/util-linux/releases",
    ),
    config={
        # (MPLBACKEND: no display in a container; Agg draws the PNGs that results carry)
        "Env": [f"PATH={PATH}", "LANG=C.UTF-8", "MPLBACKEND=Agg"],
        "Cmd": ["python3"],
    },
    version_argv=("python3", "--version"),
    setup=(
        "apt-get update -q",
        "DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends "
        "python3-matplotlib python3-munkres",
        # matplotlib's font cache, made here once instead of on each container's first plot
        # (seconds); in root's home, as the image runs as root like the official one.
        "MPLBACKEND=Agg python3 -c 'import matplotlib.pyplot'",
    ),
)

RECIPES = {recipe.name: recipe for recipe in (POSTGRES, REDIS, PYTHON)}


# --- the cache -------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("SANDKIT_TEST_IMAGES") or DEFAULT_CACHE)


def archive_path(recipe: Recipe) -> Path:
    return cache_dir() / f"{recipe.name}-{recipe.key()}.tar"


def cached(name: str) -> Path | None:
    """The archive of image `name` if the cache has it for the current recipe, else None."""
    path = archive_path(RECIPES[name])
    if not path.is_file():
        return None
    if path.parent.stat().st_mode & 0o022:
        _check_private(path.parent)  # (only its owner may write there; anyone may read)
    return path


def why_not_buildable() -> str | None:
    """Why no image can be built here (None: it can)."""
    if os.geteuid() != 0:
        return "building needs root (debootstrap)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    release = f"{MIRROR}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(release, method="HEAD"), timeout=10):
            pass
    except OSError as e:
        return f"the Debian mirror is not reachable ({release}: {e})"
    return None


def ensure(name: str, *, rebuild: bool = False, log: Path | None = None) -> Path:
    """The archive of image `name`, built first if the cache lacks it (or `rebuild`)."""
    recipe = RECIPES[name]
    target = archive_path(recipe)
    if target.is_file() and not rebuild:
        return target
    with _build_lock():
        if target.is_file() and not rebuild:
            return target  # built by whoever held the lock before us
        _remove_stale_builds()
        with _build_directory(recipe) as workdir:
            archive = build(recipe, workdir, log or workdir / "debootstrap.log")
            archive.chmod(0o644)  # the rootless tests' user loads it too
            os.replace(archive, target)
        _remove_older_recipes(recipe)
    return target


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    directory = cache_dir()
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_private(directory)
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"service images: waiting for another build in {directory}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # (closing the file releases the lock)


@contextlib.contextmanager
def _build_directory(recipe: Recipe) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=cache_dir()))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_private(directory: Path) -> None:
    """Refuses a cache that someone else could fill: root loads its archives, and Docker too."""
    info = directory.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise RuntimeError(
            f"{directory} belongs to uid {info.st_uid} with mode {info.st_mode & 0o7777:o}: "
            "another user could plant an image there; make it yours and writable by you alone "
            f"(chown {os.geteuid()} {directory}; chmod go-w {directory})"
        )


def _remove_stale_builds() -> None:
    """What killed builds left (called under the lock: no build is running)."""
    for stale in cache_dir().glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _remove_older_recipes(recipe: Recipe) -> None:
    current = archive_path(recipe)
    for old in cache_dir().glob(f"{recipe.name}-*.tar"):
        if old != current:
            old.unlink(missing_ok=True)


# --- the build -------------------------------------------------------------------------------


def build(recipe: Recipe, workdir: Path, log: Path) -> Path:
    """Builds `recipe` in `workdir` (which it fills); returns the archive written there."""
    rootfs = workdir / "rootfs"
    _debootstrap(recipe, rootfs, log)
    _customise(recipe, rootfs)
    layer = workdir / "layer.tar"
    diff_id = _write_layer(rootfs, layer)
    shutil.rmtree(rootfs)
    archive = workdir / "image.tar"
    _write_docker_archive(recipe, layer, diff_id, archive)
    return archive


def _debootstrap(recipe: Recipe, rootfs: Path, log: Path) -> None:
    """debootstrap in new mount and PID namespaces (its /proc and /sys mounts, and any process
    it leaves, go with it), killed should we die first (setpriv's parent-death signal)."""
    argv = [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        SUITE,
        str(rootfs),
        MIRROR,
    ]
    with open(log, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"debootstrap of {recipe.name} failed ({done.returncode}):\n{tail}")


def _customise(recipe: Recipe, rootfs: Path) -> None:
    """Installs the entrypoint, makes the recipe's directories, runs its setup and strips the
    image, all by a shell chrooted into it: the image's absolute symlinks (/var/run -> /run)
    then lead where they lead in a container, never to the build machine's files, and owners
    are the image's users."""
    script = [
        "set -eu",
        *_entrypoint_install(recipe),
        *(
            f'mkdir -p {d.path} && chown {d.owner}:"$(id -gn {d.owner})" {d.path} '
            f"&& chmod {d.mode:o} {d.path}"
            for d in recipe.directories
        ),
        *recipe.setup,
        # (unquoted: the image's shell expands the globs)
        *(f"rm -rf /{pattern}" for pattern in (*STRIPPED, *recipe.removed)),
        # Documentation, but for each package's copyright (the terms stay with the files).
        "find /usr/share/doc -mindepth 2 ! -type d ! -name copyright -exec rm -f {} +",
        "find /usr/lib/locale -mindepth 1 -maxdepth 1 ! -name C.utf8 -exec rm -rf {} +",
        # /dev is made by whoever runs the image (docker, sandkit): debootstrap's nodes go.
        "find /dev -mindepth 1 -maxdepth 1 -exec rm -rf {} +",
        ": > /etc/machine-id",  # (systemd's "not set yet"; none runs here)
    ]
    entrypoint_source = (
        ENTRYPOINTS / recipe.entrypoint_script if recipe.entrypoint_script else os.devnull
    )
    with open(entrypoint_source, "rb") as source:
        subprocess.run(
            ["chroot", str(rootfs), "/bin/sh", "-c", "\n".join(script)],
            stdin=source,
            env={"PATH": PATH, "LC_ALL": "C"},
            check=True,
        )


def _entrypoint_install(recipe: Recipe) -> list[str]:
    """The shell command that writes the entrypoint (the shell's stdin) into the image."""
    if recipe.entrypoint is None:
        return []
    entrypoint = f"/usr/local/bin/{recipe.entrypoint}"
    return [f"cat > {entrypoint} && chmod 755 {entrypoint}"]


def _write_layer(rootfs: Path, layer: Path) -> str:
    """Tars `rootfs` into `layer` (sorted, numeric owners only, hard links kept) and returns its
    diff ID (sha256 of the tar)."""
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _sorted_tree(rootfs):
            tar.add(path, path.relative_to(rootfs).as_posix(), recursive=False, filter=_numeric)
    return "sha256:" + _sha256_of(layer)


def _sorted_tree(root: Path) -> Iterator[Path]:
    """Every path under `root` (not `root` itself), parents first, names sorted, symlinks
    not followed."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _sorted_tree(path)


def _numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The build machine's names for the image's ids would be wrong: Docker and sandkit use ids.
    info.uname = info.gname = ""
    return info


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _image_config(recipe: Recipe, diff_id: str) -> bytes:
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    packages = ",".join(recipe.packages)
    return json.dumps(
        {
            "architecture": _oci_architecture(),
            "os": "linux",
            "created": created,
            "config": recipe.config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [
                {
                    "created": created,
                    "created_by": f"tests/service_images.py: debootstrap --variant=minbase "
                    f"--include={packages} {SUITE}; entrypoint {recipe.entrypoint or 'none'}",
                }
            ],
        },
        sort_keys=True,
    ).encode()


def _oci_architecture() -> str:
    """The build machine's architecture (debootstrap's default) by its OCI name."""
    dpkg = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {"armhf": "arm", "i386": "386", "ppc64el": "ppc64le"}.get(dpkg, dpkg)


def _write_docker_archive(recipe: Recipe, layer: Path, diff_id: str, archive: Path) -> None:
    """`docker save`'s format: manifest.json naming the config and the layer's tar."""
    config = _image_config(recipe, diff_id)
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [recipe.tag], "Layers": [layer_name]}]
    ).encode()
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, config_name, config)
        tar.add(layer, layer_name, filter=_numeric)
        _add_bytes(tar, "manifest.json", manifest)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


# --- the command line ------------------------------------------------------------------------


def _build_command(names: list[str], rebuild: bool) -> int:
    for name in names:
        path = cached(name)
        if path and not rebuild:
            print(f"{name}: cached, {path} ({path.stat().st_size / 1e6:.0f} MB)")
            continue
        if reason := why_not_buildable():
            print(f"{name}: cannot build: {reason}", file=sys.stderr)
            return 1
        started = time.monotonic()
        path = ensure(name, rebuild=rebuild)
        took = time.monotonic() - started
        print(f"{name}: built in {took:.1f} s, {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.service_images", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build the images the cache lacks")
    build_parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(RECIPES))
    build_parser.add_argument("--rebuild", action="store_true", help="build even when cached")
    path_parser = commands.add_parser("path", help="print a cached image's archive")
    path_parser.add_argument("name", choices=list(RECIPES))
    args = parser.parse_args(argv)
    if args.command == "build":
        unknown = sorted(set(args.names) - RECIPES.keys())
        if unknown:
            parser.error(f"no image {unknown[0]!r}: the images are {', '.join(RECIPES)}")
        return _build_command(args.names or list(RECIPES), args.rebuild)
    path = cached(args.name)
    if path is None:
        print(f"{args.name}: not in {cache_dir()}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
