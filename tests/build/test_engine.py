"""Dockerfile builds without RUN, end to end through `sandkit.Image.build`: the image config and
the layer tars are read back from the store's blobs (not through the engine), and compared with
what Docker's documentation says each instruction does."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandkit
from sandkit.errors import BuildContextError, BuildError, DockerfileSyntaxError
from sandkit.images.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    home = tmp_path / "home"
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return Store(home)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "sub" / "b.txt").write_text("beta\n")
    os.chmod(root / "src" / "sub" / "b.txt", 0o750)
    os.symlink("a.txt", root / "src" / "link")
    return root


def build(store: Store, ctx: Path, dockerfile: str, **options: object) -> sandkit.Image:
    (ctx / "Dockerfile").write_text(dockerfile)
    return sandkit.Image.build(ctx, store=store, progress="quiet", **options)  # type: ignore[arg-type]


def config_of(store: Store, image: sandkit.Image) -> dict:
    return json.loads(store.read_blob(image.id))


def layer_members(store: Store, image: sandkit.Image, index: int) -> dict[str, tarfile.TarInfo]:
    manifest = json.loads(store.read_blob(image.digest))
    blob = store.read_blob(manifest["layers"][index]["digest"])
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def test_metadata_instructions_set_the_config_as_docker(store: Store, ctx: Path) -> None:
    image = build(
        store,
        ctx,
        """ARG BASE_PORT=80
FROM scratch
ARG BASE_PORT
ARG LEVEL=info
ENV APP=/srv/app MODE="a b" LEVEL=${LEVEL:-debug}
LABEL org.example.mode="$MODE" plain=1
EXPOSE ${BASE_PORT} 53/udp
VOLUME ["/data", "/logs"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=1m30s --timeout=5s --retries=3 CMD ["check", "--quick"]
ENTRYPOINT ["serve"]
CMD port $BASE_PORT
USER 1000:1000
WORKDIR $APP
WORKDIR sub
""",
        build_args={"LEVEL": "warn"},
        tag="metadata:1",
    )
    cfg = config_of(store, image)["config"]
    assert cfg["Env"][1:] == ["APP=/srv/app", "MODE=a b", "LEVEL=warn"]
    assert cfg["Labels"] == {"org.example.mode": "a b", "plain": "1"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {
        "Test": ["CMD", "check", "--quick"],
        "Interval": 90 * 10**9,
        "Timeout": 5 * 10**9,
        "Retries": 3,
    }
    assert cfg["Entrypoint"] == ["serve"]
    # shell form: the shell runs it; RUN/CMD/ENTRYPOINT are not substituted by the builder
    assert cfg["Cmd"] == ["/bin/sh", "-c", "port $BASE_PORT"]
    assert cfg["User"] == "1000:1000"
    assert cfg["WorkingDir"] == "/srv/app/sub"
    assert image.tags == ("metadata:1",)
    # WORKDIR made the missing directories in a layer of their own
    assert set(layer_members(store, image, 0)) == {"srv", "srv/app"}
    assert set(layer_members(store, image, 1)) == {"srv", "srv/app", "srv/app/sub"}


def test_copy_files_directories_owners_and_modes(store: Store, ctx: Path) -> None:
    image = build(
        store,
        ctx,
        """FROM scratch
COPY src/ /app/
COPY --chown=7:8 --chmod=600 src/a.txt /etc/conf
COPY src/sub/b.txt src/a.txt /many/
""",
    )
    copied = layer_members(store, image, 0)
    assert set(copied) == {"app", "app/a.txt", "app/link", "app/sub", "app/sub/b.txt"}
    assert copied["app/sub/b.txt"].mode == 0o750 and copied["app/sub/b.txt"].uid == 0
    assert copied["app/link"].issym() and copied["app/link"].linkname == "a.txt"
    assert copied["app/a.txt"].mtime == int((ctx / "src" / "a.txt").stat().st_mtime)
    conf = layer_members(store, image, 1)
    assert (conf["etc/conf"].mode, conf["etc/conf"].uid, conf["etc/conf"].gid) == (0o600, 7, 8)
    assert conf["etc"].isdir() and conf["etc"].mode == 0o755
    assert set(layer_members(store, image, 2)) == {"many", "many/a.txt", "many/b.txt"}


def test_globs_and_dockerignore(store: Store, ctx: Path) -> None:
    (ctx / "one.py").write_text("1")
    (ctx / "two.py").write_text("2")
    (ctx / "keep.log").write_text("k")
    (ctx / "drop.log").write_text("d")
    (ctx / ".dockerignore").write_text("# logs\n*.log\n!keep.log\nsrc/sub\n")
    image = build(store, ctx, "FROM scratch\nCOPY *.py *.log /g/\nCOPY src /s\n")
    assert set(layer_members(store, image, 0)) == {"g", "g/one.py", "g/two.py", "g/keep.log"}
    assert set(layer_members(store, image, 1)) == {"s", "s/a.txt", "s/link"}
    with pytest.raises(BuildContextError, match=r"line 2.*excluded by \.dockerignore"):
        build(store, ctx, "FROM scratch\nCOPY drop.log /\n")


@contextlib.contextmanager
def hang_guard(seconds: int) -> Iterator[None]:
    """Turn a hang (a blocking open) into a failure: the deadline is far above the milliseconds
    the work takes, so it never decides a pass. (A regex backtracking inside C does not see the
    signal: there the old code hangs the run instead, which fails it just the same.)"""

    def fail(*_: object) -> None:
        raise AssertionError(f"still running after {seconds} s: the build hangs")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_pathological_dockerignore_pattern_is_matched_in_linear_time(
    store: Store, ctx: Path
) -> None:
    # With a backtracking regex, '*a*a...*a*b' against a name of 40 'a's takes years.
    (ctx / ("a" * 40)).write_text("x")
    (ctx / ("a" * 39 + "b")).write_text("x")
    (ctx / ".dockerignore").write_text("*a" * 16 + "b\n" + "**/" * 20 + "zz\n")
    with hang_guard(60):
        image = build(store, ctx, "FROM scratch\nCOPY " + "*a" * 16 + "* /g/\n")
    assert set(layer_members(store, image, 0)) == {"g", "g/" + "a" * 40}


def test_a_dockerignore_that_is_a_fifo_or_huge_is_refused(store: Store, ctx: Path) -> None:
    os.mkfifo(ctx / ".dockerignore")  # nobody writes it: reading would block forever
    with hang_guard(60), pytest.raises(BuildContextError, match="not a regular file"):
        build(store, ctx, "FROM scratch\nCOPY src /s\n")
    os.unlink(ctx / ".dockerignore")
    with open(ctx / ".dockerignore", "wb") as f:
        f.truncate(64 << 20)  # sparse: costs no disk, but would be read into memory
    with pytest.raises(BuildContextError, match=r"\.dockerignore.*larger than"):
        build(store, ctx, "FROM scratch\nCOPY src /s\n")
    _nothing_left(store)


def test_rebuild_reuses_the_cache_and_a_changed_file_rebuilds_from_its_copy(
    store: Store, ctx: Path
) -> None:
    dockerfile = "FROM scratch\nCOPY src/sub /sub\nCOPY src/a.txt /a\nENV X=1\n"
    out = io.StringIO()
    (ctx / "Dockerfile").write_text(dockerfile)
    first = sandkit.Image.build(ctx, store=store, progress="quiet")
    again = sandkit.build.build(ctx, store=store, progress="plain", stream=out)
    assert again.id == first.id and again.digest == first.digest
    assert out.getvalue().count("CACHED") == 3
    (ctx / "src" / "a.txt").write_text("changed\n")
    out = io.StringIO()
    changed = sandkit.build.build(ctx, store=store, progress="plain", stream=out)
    lines = out.getvalue().splitlines()
    assert [line.endswith("CACHED") for line in lines[:4]] == [False, True, False, False]
    assert changed.id != first.id
    assert (
        config_of(store, changed)["rootfs"]["diff_ids"][0]
        == (config_of(store, first)["rootfs"]["diff_ids"][0])
    )


def test_no_cache_and_source_date_epoch_give_the_same_image(
    store: Store, ctx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build(store, ctx, 'FROM scratch\nCOPY src /s\nWORKDIR /w\nCMD ["x"]\n')
    second = build(store, ctx, 'FROM scratch\nCOPY src /s\nWORKDIR /w\nCMD ["x"]\n', no_cache=True)
    assert first.id == second.id
    cfg = config_of(store, first)
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert {entry["created"] for entry in cfg["history"]} == {"2023-11-14T22:13:20Z"}


def test_multi_stage_copy_from_and_target(store: Store, ctx: Path) -> None:
    dockerfile = """FROM scratch AS files
COPY src /src
COPY src/a.txt /only/a.txt
FROM never-pulled:1 AS unused
FROM scratch AS final
COPY --from=files /src/sub /from-stage/
COPY --from=0 /only /only
"""
    image = build(store, ctx, dockerfile, tag="multi:1")
    assert set(layer_members(store, image, 0)) == {"from-stage", "from-stage/b.txt"}
    assert set(layer_members(store, image, 1)) == {"only", "only/a.txt"}
    files = build(store, ctx, dockerfile, target="files")
    assert len(config_of(store, files)["rootfs"]["diff_ids"]) == 2


def test_from_an_earlier_stage_and_entrypoint_resets_the_inherited_cmd(
    store: Store, ctx: Path
) -> None:
    image = build(
        store,
        ctx,
        'FROM scratch AS base\nCMD ["base"]\nENV A=1\nFROM base\nENTRYPOINT ["ep"]\n',
    )
    cfg = config_of(store, image)["config"]
    assert cfg["Entrypoint"] == ["ep"] and "Cmd" not in cfg
    assert "A=1" in cfg["Env"]


def test_add_unpacks_a_local_tar_keeping_its_owners(store: Store, ctx: Path) -> None:
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pkg/bin/tool")
        data = b"#!/bin/sh\n"
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o755, 33, 44, 1234
        tar.addfile(info, io.BytesIO(data))
    image = build(store, ctx, "FROM scratch\nADD bundle.tar.gz /opt/\nADD src/a.txt /plain\n")
    unpacked = layer_members(store, image, 0)
    tool = unpacked["opt/pkg/bin/tool"]
    assert (tool.mode, tool.uid, tool.gid, tool.mtime, tool.size) == (0o755, 33, 44, 1234, 10)
    assert "plain" in layer_members(store, image, 1)


# --- bad input: a clear error naming the line, and nothing half-made in the store ----------


def _nothing_left(store: Store) -> None:
    assert store.records() == []
    assert list((store.home / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("dockerfile", "error", "words"),
    [
        ("FROM scratch\nCOPY ../outside /x\n", BuildContextError, "line 2.*leads out of the build"),
        ("FROM scratch\nCOPY missing.txt /x\n", BuildContextError, "line 2.*does not exist"),
        ("FROM scratch\nCOPY escape /x\n", BuildContextError, "line 2.*symlink.*leads out"),
        ("FROM scratch\nCOPY up/secret /x\n", BuildContextError, "line 2.*symlink.*leads out"),
        ("FROM scratch\nCOPY nothing*.txt /x\n", BuildContextError, "line 2.*matches"),
        ("FROM scratch\nCOPY src/a.txt src/sub /x\n", BuildContextError, "ending in '/'"),
        ("FROM scratch\nADD https://example.com/x /x\n", BuildContextError, "line 2.*URL"),
        ("FROM scratch\nCOPY fifo /x\n", BuildContextError, "line 2.*fifo"),
        ("FROM scratch\nBOGUS\n", DockerfileSyntaxError, "line 2, column 1"),
        ("FROM scratch\nONBUILD RUN x\n", DockerfileSyntaxError, "ONBUILD"),
        ("FROM scratch\nENV A=${NEED:?NEED_is_required}\n", BuildError, "line 2: NEED_is_req"),
        ("FROM scratch\nWORKDIR ${A\n", DockerfileSyntaxError, "line 2.*missing '}'"),
        ("FROM absent:1\n", BuildError, "line 1.*not in the local store.*does not pull"),
        ("FROM scratch\nCOPY --from=nowhere /a /b\n", BuildError, "line 2.*--from=nowhere"),
        ("FROM scratch\nCOPY --chown=nobody src/a.txt /a\n", BuildError, "line 2.*nobody"),
        ("FROM scratch\nEXPOSE 80/xyz\n", DockerfileSyntaxError, "EXPOSE"),
        ("FROM scratch AS a\nFROM scratch AS A\n", DockerfileSyntaxError, "used twice"),
        ("FROM scratch AS a\nCOPY --from=a /x /y\n", DockerfileSyntaxError, "line 2.*cycle"),
        (
            "FROM scratch AS a\nCOPY --from=b /x /y\nFROM a AS b\n",
            DockerfileSyntaxError,
            "line 2.*'b' is this stage or a later one",
        ),
    ],
)
def test_bad_input_names_the_line_and_leaves_nothing(
    store: Store, ctx: Path, tmp_path: Path, dockerfile: str, error: type, words: str
) -> None:
    (tmp_path / "outside").write_text("host secret")
    os.symlink("/etc/passwd", ctx / "escape")
    os.symlink("..", ctx / "up")
    (tmp_path / "secret").write_text("host secret")
    os.mkfifo(ctx / "fifo")
    with pytest.raises(error, match=words):
        build(store, ctx, dockerfile + "COPY src/a.txt /last\n", tag="bad:1")
    _nothing_left(store)


def test_unknown_target_and_missing_dockerfile(store: Store, ctx: Path) -> None:
    with pytest.raises(BuildError, match=r"target stage 'nope'.*stages: base"):
        build(store, ctx, "FROM scratch AS base\n", target="nope")
    with pytest.raises(BuildContextError, match="does not exist"):
        sandkit.Image.build(ctx, dockerfile="Other.dockerfile", store=store, progress="quiet")
    _nothing_left(store)


def test_copy_from_an_image_never_follows_its_symlinks_to_the_host(
    store: Store, ctx: Path, tmp_path: Path
) -> None:
    from images.conftest import oci_layout, tar_bytes

    host = tmp_path / "host-dir"
    (host / "b").mkdir(parents=True)
    (host / "b" / "secret").write_text("host secret")
    (host / "secret").write_text("host secret")
    lower = tar_bytes([("a", "symlink", str(host)), ("link", "symlink", str(host))])
    # the upper layer replaces the symlink "a" by a directory with a "b" of its own: overlayfs
    # shows only the upper "a" (a directory never merges with a lower non-directory)
    upper = tar_bytes([("a", "dir", None), ("a/b", "dir", None), ("a/b/own", "file", b"own")])
    sandkit.Image.load(oci_layout(tmp_path / "hostile", [lower, upper], ref_name="hostile:1"),
                       store=store)  # fmt: skip
    image = build(
        store,
        ctx,
        "FROM scratch\nCOPY --from=hostile:1 /a /a\nCOPY --from=hostile:1 /link /link\n",
    )
    assert set(layer_members(store, image, 0)) == {"a", "a/b", "a/b/own"}
    link = layer_members(store, image, 1)["link"]
    assert link.issym() and link.linkname == str(host)  # copied as a link, not followed
    with pytest.raises(BuildContextError, match="does not exist"):
        build(store, ctx, "FROM scratch\nCOPY --from=hostile:1 /link/secret /s\n")


def test_env_substitutes_with_the_environment_before_the_instruction(
    store: Store, ctx: Path
) -> None:
    # the example of Docker's documentation (Dockerfile reference, "Environment replacement")
    image = build(
        store,
        ctx,
        "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\nEXPOSE 8000-8002/udp\n",
    )
    cfg = config_of(store, image)["config"]
    assert cfg["Env"][1:] == ["abc=bye", "def=hello", "ghi=bye"]  # abc keeps its place
    assert cfg["ExposedPorts"] == {"8000/udp": {}, "8001/udp": {}, "8002/udp": {}}


def test_add_archive_without_directory_entries_gets_its_directories(
    store: Store, ctx: Path
) -> None:
    with tarfile.open(ctx / "bare.tar", "w") as tar:
        info = tarfile.TarInfo("deep/er/file")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    image = build(store, ctx, "FROM scratch\nADD bare.tar /opt/x\n")
    members = layer_members(store, image, 0)
    assert set(members) == {"opt", "opt/x", "opt/x/deep", "opt/x/deep/er", "opt/x/deep/er/file"}
    assert all(members[d].isdir() for d in ("opt", "opt/x", "opt/x/deep", "opt/x/deep/er"))


def test_add_of_an_archive_bomb_stops_at_the_store_limit(
    tmp_path: Path, ctx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from images.smallfs import small_tmpfs

    from sandkit.errors import ImageError

    with tarfile.open(ctx / "bomb.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 64 << 20  # 64 MiB of zeros: a few KB compressed
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert (ctx / "bomb.tar.gz").stat().st_size < 1 << 20
    # a home of 16 MiB: the bomb must be stopped by the limit before it fills the disk
    with small_tmpfs(tmp_path / "small", "16m") as home:
        monkeypatch.setenv("SANDKIT_HOME", str(home / "home"))
        store = Store(home / "home", max_image_size="4m")
        with pytest.raises(ImageError, match=r"Dockerfile line 2 \(ADD\).*more than 4.0 MiB"):
            build(store, ctx, "FROM scratch\nADD bomb.tar.gz /\n")
        _nothing_left(store)


def test_add_of_an_archive_of_too_many_entries_is_refused(
    store: Store, ctx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Millions of empty members fit in a few MB compressed, and each costs host memory until
    # the layer is written: the count is capped (lowered here to keep the test small).
    from sandkit.build import archive

    monkeypatch.setattr(archive, "MAX_ARCHIVE_ENTRIES", 50)
    with tarfile.open(ctx / "many.tar", "w") as tar:
        for i in range(51):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO())
    with pytest.raises(BuildContextError, match=r"line 2.*more than 50 entries.*RUN step"):
        build(store, ctx, "FROM scratch\nADD many.tar /\n")
    _nothing_left(store)
    (ctx / "Dockerfile").write_text("FROM scratch\nADD many.tar /d/\n")
    monkeypatch.setattr(archive, "MAX_ARCHIVE_ENTRIES", 51)  # exactly at the cap: unpacked
    image = sandkit.Image.build(ctx, store=store, progress="quiet")
    assert len(layer_members(store, image, 0)) == 52  # d/ and its 51 files


def test_dockerfile_that_is_no_text_or_no_file(store: Store, ctx: Path) -> None:
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\nLABEL a=\xff\n")
    with pytest.raises(DockerfileSyntaxError, match=r"line 2.*UTF-8"):
        sandkit.Image.build(ctx, store=store, progress="quiet")
    os.mkfifo(ctx / "fifo.Dockerfile")  # opened without blocking, then refused
    with pytest.raises(BuildContextError, match="not a regular file"):
        sandkit.Image.build(ctx, dockerfile="fifo.Dockerfile", store=store, progress="quiet")
    _nothing_left(store)


@pytest.mark.trio
async def test_the_async_twin_builds_under_trio(store: Store, ctx: Path) -> None:
    from sandkit.build import build_async

    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY src/a.txt /a\n")
    image = await build_async(ctx, store=store, tag="async:1", progress="quiet")
    assert image.tags == ("async:1",)
    assert set(layer_members(store, image, 0)) == {"a"}


def test_the_async_twin_builds_under_asyncio(store: Store, ctx: Path) -> None:
    import asyncio

    from sandkit.build import build_async

    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY src/a.txt /a\n")
    image = asyncio.run(build_async(ctx, store=store, progress="quiet"))
    assert set(layer_members(store, image, 0)) == {"a"}


def _rootless_workdir_owners(ctx: str) -> dict[str, tuple[int, int]]:
    store = Store()  # the unprivileged user's own SANDKIT_HOME
    image = sandkit.Image.build(ctx, store=store, progress="quiet")
    manifest = json.loads(store.read_blob(image.digest))
    blob = store.read_blob(manifest["layers"][1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name.rstrip("/"): (m.uid, m.gid) for m in tar.getmembers()}


def test_rootless_layers_carry_the_images_ids_not_the_builders(as_unprivileged) -> None:
    import shutil
    import tempfile

    from conftest import unprivileged_ids

    import sandkit.build.engine  # noqa: F401 - loaded while the checkout is readable

    uid, gid = unprivileged_ids()
    ctx = Path(tempfile.mkdtemp(prefix="sandkit-build-ctx-"))  # reachable by that user
    try:
        (ctx / "a.txt").write_text("a")
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /srv/a\nWORKDIR /srv/app\n")
        for path in [ctx, *ctx.iterdir()]:
            os.chown(path, uid, gid)
        # /srv exists below (made by the COPY, applied as the caller's files): the WORKDIR
        # layer repeats it with the image's ids, 0:0, as Docker's does
        owners = as_unprivileged(_rootless_workdir_owners, str(ctx))
    finally:
        shutil.rmtree(ctx)
    assert owners == {"srv": (0, 0), "srv/app": (0, 0)}
