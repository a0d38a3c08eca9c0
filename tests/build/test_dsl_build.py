"""The DSL built by sandkit's engine (issue 20 item 4): a chain and the equivalent Dockerfile
give the same image digest, a container given a recipe builds it on start, and a failed step
leaves no image behind."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from images.conftest import oci_layout

import sandkit
from sandkit import Image
from sandkit.build.dsl import ImageRecipe
from sandkit.errors import BuildContextError, BuildError, ImageNotFoundError

pytestmark = pytest.mark.slow

BASE = "dsl-test/busybox:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RUN_LINE = 'RUN echo "$FLAVOUR" > flavour && ls src > listing\n'
EQUIVALENT_DOCKERFILE = """\
FROM dsl-test/busybox:1
ARG FLAVOUR=plain
ENV APP=/app GREETING="hello world"
WORKDIR /app
COPY ["src/", "/app/src/"]
{run}LABEL org.example.title=dsl
EXPOSE 8080
USER app
CMD ["sh", "-c", "ls /app/src"]
"""


@pytest.fixture(scope="module")
def base(busybox_dir, tmp_path_factory) -> str:
    """BASE in the store: the busybox root filesystem as a one-layer image (loaded from an OCI
    layout, so that the engine under test does not make its own base)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(busybox_dir, arcname=".")
    layout = oci_layout(
        tmp_path_factory.mktemp("dsl-base") / "layout",
        [layer.getvalue()],
        config={"Env": [f"PATH={PATH}"], "Cmd": ["sh"]},
        ref_name=BASE,
    )
    Image.load(layout, tag=BASE)
    return BASE


def recipe(context: Path, *, with_run: bool) -> ImageRecipe:
    """The DSL twin of EQUIVALENT_DOCKERFILE."""
    chain = (
        Image.from_(BASE, context=context)
        .arg("FLAVOUR", "plain")
        .env(APP="/app", GREETING="hello world")
        .workdir("/app")
        .copy("src/", "/app/src/")
    )
    if with_run:
        chain = chain.run('echo "$FLAVOUR" > flavour && ls src > listing')
    return (
        chain.label({"org.example.title": "dsl"})
        .expose(8080)
        .user("app")
        .cmd(["sh", "-c", "ls /app/src"])
    )


def context_with_sources(path):
    (path / "src").mkdir(parents=True)
    (path / "src" / "main.py").write_text("print('hi')\n")
    (path / "src" / "util.py").write_text("X = 1\n")
    return path


@pytest.mark.parametrize("with_run", [False, True])
def test_the_chain_renders_as_the_equivalent_dockerfile(tmp_path, with_run):
    expected = EQUIVALENT_DOCKERFILE.format(run=RUN_LINE if with_run else "")
    assert recipe(tmp_path, with_run=with_run).dockerfile() == expected


def same_digest(context: Path, *, with_run: bool, no_cache: bool) -> None:
    from_dsl = recipe(context, with_run=with_run).build(
        tag="dsl-test/from-dsl:1", no_cache=no_cache
    )
    dockerfile = context.parent / "Dockerfile"
    dockerfile.write_text(EQUIVALENT_DOCKERFILE.format(run=RUN_LINE if with_run else ""))
    from_file = Image.build(
        context, dockerfile=dockerfile, tag="dsl-test/from-file:1", no_cache=no_cache
    )
    assert from_dsl.digest and from_dsl.digest == from_file.digest
    assert from_dsl.id == from_file.id


def test_a_chain_and_the_equivalent_dockerfile_give_the_same_digest(base, tmp_path, monkeypatch):
    """Built independently (no cache; `created` fixed by SOURCE_DATE_EPOCH, as Docker's is)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    same_digest(context_with_sources(tmp_path / "context"), with_run=False, no_cache=True)


def test_the_dockerfile_build_takes_the_chains_cached_steps(base, tmp_path):
    """With a RUN step (whose files are as new as the build): the Dockerfile build after the
    chain's finds every step in the cache, the same instructions on the same parents."""
    same_digest(context_with_sources(tmp_path / "context"), with_run=True, no_cache=False)


def test_a_container_given_a_recipe_builds_it_on_start(base, tmp_path):
    context = context_with_sources(tmp_path / "context")
    with sandkit.Container(recipe(context, with_run=False), network="none") as c:
        r = c.exec(["sh", "-c", "pwd; ls src; id -un; echo $GREETING"])
    assert r.stdout == b"/app\nmain.py\nutil.py\napp\nhello world\n"


def test_a_recipe_with_a_run_step_in_a_container(base, tmp_path):
    context = context_with_sources(tmp_path / "context")
    with sandkit.Container(recipe(context, with_run=True), network="none") as c:
        assert c.exec(["cat", "/app/flavour", "/app/listing"]).stdout == (
            b"plain\nmain.py\nutil.py\n"
        )


def test_a_pool_given_a_recipe_builds_it_once_and_serves_its_image(base, tmp_path):
    context = context_with_sources(tmp_path / "context")
    with sandkit.Pool(recipe(context, with_run=True), size=2, network="none") as pool:
        for _ in range(3):
            with pool.container() as c:
                assert c.exec(["cat", "/app/flavour"]).stdout == b"plain\n"


def test_a_failing_run_raises_and_leaves_no_image(base, tmp_path):
    failing = Image.from_(BASE, context=tmp_path).run("echo about to fail; exit 7")
    with pytest.raises(BuildError, match="7"):
        failing.build(tag="dsl-test/failing:1")
    with pytest.raises(ImageNotFoundError):
        Image.get("dsl-test/failing:1")


def test_a_copy_from_outside_the_context_is_refused_and_leaves_no_image(base, tmp_path):
    (tmp_path / "secret").write_text("host secret\n")
    context = context_with_sources(tmp_path / "context")
    escaping = Image.from_(BASE, context=context).copy("../secret", "/stolen")
    with pytest.raises(BuildContextError, match="secret"):
        escaping.build(tag="dsl-test/escaping:1")
    with pytest.raises(ImageNotFoundError):
        Image.get("dsl-test/escaping:1")


def test_a_recipe_that_copies_nothing_from_the_context_never_reads_it(base, tmp_path):
    """Its context (default: the working directory, which may be a home directory) is not
    needed: here it does not even exist."""
    image = (
        Image.from_(BASE, context=tmp_path / "absent")
        .copy("/etc/passwd", "/copied", from_=BASE)
        .env(A="1")
        .build()
    )
    assert "A=1" in image.config.env
