"""Interop with the real Docker engine (issue 20 item 6): the Dockerfiles of cases.py built by
`docker build` (classic builder) and by `sandkit build` give the same file tree (contents,
modes, owners, links) and the same config, both as Docker sees them: sandkit's image is saved,
`docker load`ed and run under Docker. And the Python DSL's renderings, built by Docker, give
the values the Python code passed.

Runs against a private dockerd (tests/dockerd.py) with its own data root, stopped at the end;
skipped where none can be started. Nothing is pulled: the base image is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerd
import pytest
from net.conftest import open_tun  # noqa: F401 - a fixture

from sandkit import Image

from .cases import BASE, CASES, Case
from .interop import (
    config_of,
    docker,
    docker_build,
    exported_tree,
    tree_difference,
    write_context,
)

pytestmark = pytest.mark.slow

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        try:
            daemon = stack.enter_context(dockerd.private_dockerd())
        except dockerd.DockerUnavailable as e:
            pytest.skip(f"docker interop: {e}")
        yield daemon.env


# Where base_image saves BASE: a place the unprivileged user of the rootless builds can read.
BASE_ARCHIVE = Path(tempfile.gettempdir()) / f"sandkit-interop-base-{os.getpid()}.tar"


@pytest.fixture(scope="module")
def base_image(docker_env, busybox_dir, tmp_path_factory) -> Iterator[str]:
    """BASE in Docker (imported from the busybox root filesystem) and, from `docker save`, in
    sandkit's store: the same image, byte for byte, under both."""
    work = tmp_path_factory.mktemp("interop-base")
    rootfs_tar = work / "rootfs.tar"
    with tarfile.open(rootfs_tar, "w") as tar:
        tar.add(busybox_dir, arcname=".")
    docker(
        docker_env,
        "import",
        "--change",
        f"ENV PATH={PATH}",
        "--change",
        'CMD ["sh"]',
        str(rootfs_tar),
        BASE,
    )
    docker(docker_env, "save", "-o", str(BASE_ARCHIVE), BASE)
    try:
        os.chmod(BASE_ARCHIVE, 0o644)
        Image.load(BASE_ARCHIVE)
        yield BASE
    finally:
        BASE_ARCHIVE.unlink()


@pytest.fixture(scope="module")
def docker_built(docker_env, base_image, tmp_path_factory) -> dict[str, tuple[Any, Any]]:
    """Every case built by Docker: (file tree, config) by case id."""
    work = tmp_path_factory.mktemp("interop-docker")
    results = {}
    for case in CASES:
        tag = f"docker-built/{case.id}:1"
        docker_build(docker_env, write_context(case, work / case.id), tag, case)
        results[case.id] = (exported_tree(docker_env, tag, work), config_of(docker_env, tag))
    return results


def sandkit_build(case: Case, context: Path) -> Image:
    return Image.build(
        context,
        tag=f"sandkit-built/{case.id}:1",
        build_args=dict(case.build_args) or None,
        target=case.target,
    )


def test_enough_cases_and_every_instruction_used():
    assert len(CASES) >= 15
    used = {
        line.split()[0].upper()
        for case in CASES
        for line in case.dockerfile.splitlines()
        if line.strip()
    }
    assert used >= {
        "FROM",
        "RUN",
        "SHELL",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "WORKDIR",
        "USER",
        "ENTRYPOINT",
        "CMD",
        "EXPOSE",
        "LABEL",
        "VOLUME",
        "STOPSIGNAL",
        "HEALTHCHECK",
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sandkit_build_gives_dockers_tree_and_config(case, docker_env, docker_built, tmp_path):
    image = sandkit_build(case, write_context(case, tmp_path / "context"))
    archive = tmp_path / "built.tar"
    image.save(archive, format="docker")
    loaded = docker(docker_env, "load", "-i", str(archive))
    assert f"sandkit-built/{case.id}:1".encode() in loaded.stdout, loaded
    tree, config = docker_built[case.id]
    tag = f"sandkit-built/{case.id}:1"
    assert tree_difference(tree, exported_tree(docker_env, tag, tmp_path)) == {}
    assert config_of(docker_env, tag) == config
    if "/bin/sh" in tree:  # it runs under Docker
        r = docker(
            docker_env, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", tag,
            "-c", "echo runs",
        )  # fmt: skip
        assert r.stdout == b"runs\n"


def _build_rootless(case: Case, context: Path, archive: Path) -> None:
    """In the unprivileged user's process (its own SANDKIT_HOME): BASE loaded, ``case`` built
    and saved to ``archive``."""
    Image.load(BASE_ARCHIVE)
    sandkit_build(case, context).save(archive, format="docker")


@pytest.fixture(scope="module")
def subordinate_range() -> Iterator[None]:
    """The unprivileged user has a subordinate id range for the module (as a rootless builder
    needs one for --chown and RUN chown), whatever /etc/subuid held before; restored after."""
    from conftest import UNPRIVILEGED_USER
    from test_subid import START, _subid_entries

    with _subid_entries(f"{UNPRIVILEGED_USER}:{START}:65536"):
        yield


@pytest.mark.root
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_rootless_sandkit_build_gives_dockers_tree_and_config(
    case, docker_env, docker_built, as_unprivileged, subordinate_range, open_tun, tmp_path
):
    """The same, built by an unprivileged user (its container's ids from its subordinate
    range, so --chown and RUN chown work; RUN on the default bridge network, whose rootless
    outbound path, pasta, needs /dev/net/tun)."""
    from conftest import unprivileged_ids

    exchange = Path(tempfile.mkdtemp(prefix="sandkit-interop-rootless-"))
    try:
        context = write_context(case, exchange / "context")
        uid, gid = unprivileged_ids()
        for path in [exchange, *exchange.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)
        archive = exchange / "built.tar"
        as_unprivileged(_build_rootless, case, context, archive)
        tag = f"sandkit-built/{case.id}:1"
        docker(docker_env, "load", "-i", str(archive))
    finally:
        shutil.rmtree(exchange)
    tree, config = docker_built[case.id]
    assert tree_difference(tree, exported_tree(docker_env, tag, tmp_path)) == {}
    assert config_of(docker_env, tag) == config


# --- the DSL, read back by Docker's own parser -----------------------------------------------

TRICKY_ENV = {
    "QUOTES": "say \"hi\" and 'bye'",
    "BACKSLASHES": "C:\\dir\\file\\",
    "SUBSTITUTED": "$PATH:/extra",
    "LITERAL_DOLLAR": "\\$PATH",
    "SPACES": "  a  b  ",
    "UNICODE": "héllo wörld ✓",
    "EQUALS": "a=b=c",
    "EMPTY": "",
}


def test_the_dsl_renders_values_dockers_parser_reads_back_unchanged(
    docker_env, base_image, tmp_path
):
    """The DSL's Dockerfile, built by Docker: every ENV and LABEL value, exec-form argument and
    health check setting is the one given in Python (a `$VAR` substituted, as documented)."""
    recipe = (
        Image.from_(BASE, context=tmp_path)
        .env(TRICKY_ENV)
        .label({"org.example.title": 'a "quoted" title', "with space": "\\ and $PATH"})
        .entrypoint(["/bin/sh", "-c", "echo \"$0\" '$1'\n\ttabbed", "ünï"])
        .cmd(["a b", "", '"'])
        .healthcheck(["CMD-SHELL", "true"], interval=1.5, timeout=2, start_period=0.25, retries=2)
        .user("app:staff")
        .workdir("/w")
        .expose(80, "53/udp")
        .volume("/data")
        .stopsignal("SIGUSR1")
    )
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(recipe.dockerfile())
    case = Case("dsl", recipe.dockerfile())
    docker_build(docker_env, context, "dsl-by-docker:1", case)
    config = json.loads(docker(docker_env, "image", "inspect", "dsl-by-docker:1").stdout)[0][
        "Config"
    ]
    expected_env = dict(TRICKY_ENV, SUBSTITUTED=f"{PATH}:/extra", LITERAL_DOLLAR="$PATH")
    assert config["Env"] == [f"PATH={PATH}", *(f"{k}={v}" for k, v in expected_env.items())]
    assert config["Labels"] == {
        "org.example.title": 'a "quoted" title',
        "with space": f"\\ and {PATH}",
    }
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo \"$0\" '$1'\n\ttabbed", "ünï"]
    assert config["Cmd"] == ["a b", "", '"']
    assert config["Healthcheck"] == {
        "Test": ["CMD", "CMD-SHELL", "true"],
        "Interval": 1_500_000_000,
        "Timeout": 2_000_000_000,
        "StartPeriod": 250_000_000,
        "Retries": 2,
    }
    assert (config["User"], config["WorkingDir"], config["StopSignal"]) == (
        "app:staff",
        "/w",
        "SIGUSR1",
    )
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}}
