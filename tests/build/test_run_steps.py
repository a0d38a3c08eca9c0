"""RUN steps in sandkit containers: their changes (added, changed, deleted files) become the
step's layer as Docker writes it (whiteouts for deletions), the cache reuses them, and a failing
RUN stops the build with its exit code and output and no image."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from images.conftest import oci_layout
from images.test_image_run import busybox_layers

import sandkit
from sandkit.build.progress import PlainProgress
from sandkit.errors import BuildError
from sandkit.images.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    home = tmp_path / "home"
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    store = Store(home)
    config = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    sandkit.Image.load(oci_layout(tmp_path / "bb", busybox_layers(), ref_name="busybox:test",
                                  config=config), store=store)  # fmt: skip
    return store


def build(store: Store, ctx: Path, dockerfile: str, **options: object) -> sandkit.Image:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return sandkit.Image.build(ctx, store=store, network="none", **options)  # type: ignore[arg-type]


def last_layer(store: Store, image: sandkit.Image) -> dict[str, tarfile.TarInfo | bytes]:
    manifest = json.loads(store.read_blob(image.digest))
    blob = store.read_blob(manifest["layers"][-1]["digest"])
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            out[member.name.rstrip("/")] = data.read() if data else member
    return out


def test_run_changes_become_a_layer_with_whiteouts(store: Store, tmp_path: Path) -> None:
    image = build(
        store,
        tmp_path / "ctx",
        """FROM busybox:test
ARG GREETING=hello
ENV TARGET=/srv
WORKDIR $TARGET
RUN echo "$GREETING from $(pwd)" > made.txt && rm /etc/group
SHELL ["/bin/sh", "-c"]
RUN ["sh", "-c", "echo exec form >> /srv/made.txt"]
""",
    )
    first = last_layer(store, image)
    assert first["srv/made.txt"] == b"hello from /srv\nexec form\n"
    manifest = json.loads(store.read_blob(image.digest))
    assert len(manifest["layers"]) == 4  # busybox, WORKDIR, two RUNs
    blob = store.read_blob(manifest["layers"][2]["digest"])
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = set(tar.getnames())
    assert "etc/.wh.group" in names  # as Docker writes a deletion
    with sandkit.Container(image) as c:
        r = c.exec(["sh", "-c", "cat made.txt; ls /etc; echo $GREETING"])
    assert r.stdout == b"hello from /srv\nexec form\npasswd\n\n"  # ARGs do not stay in the image


def test_an_unchanged_run_is_cached(store: Store, tmp_path: Path) -> None:
    dockerfile = "FROM busybox:test\nRUN busybox od -An -N8 -tx1 /dev/urandom > /stamp\n"
    out = io.StringIO()
    first = build(store, tmp_path / "ctx", dockerfile, progress="quiet")
    again = sandkit.build.build(tmp_path / "ctx", store=store, network="none", progress="plain",
                                stream=out)  # fmt: skip
    assert (
        again.id == first.id
        and "RUN busybox od -An -N8 -tx1 /dev/urandom > /stamp CACHED" in out.getvalue()
    )
    fresh = build(store, tmp_path / "ctx", dockerfile, no_cache=True, progress="quiet")
    assert fresh.id != first.id


def test_a_failing_run_names_the_line_and_code_and_leaves_no_image(
    store: Store, tmp_path: Path
) -> None:
    before = {rec.id for rec in store.records()}
    shown = io.StringIO()
    with pytest.raises(BuildError) as caught:
        build(
            store,
            tmp_path / "ctx",
            "FROM busybox:test\nRUN echo partial > /p\nRUN echo step; echo boom >&2; exit 3\n",
            tag="never:1",
            progress=PlainProgress(shown),
        )
    assert "step\n" in shown.getvalue() and "boom\n" in shown.getvalue()  # shown as it ran
    message = str(caught.value)
    assert "line 3" in message and "exit code 3" in message and "boom" in message
    assert {rec.id for rec in store.records()} == before
    assert list((store.home / "tmp").iterdir()) == []


def test_a_run_that_chowns_the_workdir_keeps_it_for_the_next_user(
    store: Store, tmp_path: Path
) -> None:
    # Docker: the second RUN, as nobody, may write where the first one gave it the directory
    image = build(
        store,
        tmp_path / "ctx",
        "FROM busybox:test\nWORKDIR /work/deep\nWORKDIR relative\n"
        "RUN chown nobody /work/deep/relative\nUSER nobody\nRUN touch mine\n",
        progress="quiet",
    )
    assert "work/deep/relative/mine" in last_layer(store, image)
