"""The package and the CLI import the container runtime and the HTTP stack only when used:
`sandkit images` or `sandkit ps` should not pay ~0.2 s for modules they never call."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import sandkit

HEAVY = ["sandkit.runtime.container", "sandkit.images.registry.client", "httpx", "trio"]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import sandkit",
        "import sandkit.cli; sandkit.cli.build_parser()",
        "from sandkit import ImageError",
    ],
)
def test_importing_loads_no_runtime_and_no_http_stack(code: str) -> None:
    assert not _modules_after(code) & set(HEAVY)


def test_the_cli_parses_a_command_line_without_them() -> None:
    loaded = _modules_after("import sandkit.cli; sandkit.cli.build_parser().parse_args(['images'])")
    assert not loaded & set(HEAVY)


def test_the_api_names_import_on_first_use() -> None:
    from sandkit.api import Container, Image

    assert sandkit.Container is Container
    assert sandkit.Image is Image
    assert {"Container", "AsyncContainer", "ImageError"} <= set(dir(sandkit))
    with pytest.raises(AttributeError, match="has no attribute 'Containr'"):
        sandkit.Containr  # noqa: B018


def test_star_import_binds_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from sandkit import *", namespace)
    assert set(sandkit.__all__) <= set(namespace)
    assert namespace["AsyncContainer"] is sandkit.AsyncContainer


def test_a_program_that_never_copies_does_not_load_the_copy_code() -> None:
    """copy.py and trees.py (~13 ms) load with the first copy_in/copy_out/stat, not with
    the container runtime."""
    loaded = _modules_after("import sandkit.api, sandkit.aio")
    assert "sandkit.runtime.container" in loaded
    assert not loaded & {"sandkit.runtime.copy", "sandkit.runtime.trees"}
