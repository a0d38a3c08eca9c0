"""`ContainerOptions`: one typed, documented definition that every entry point takes."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import textwrap
from pathlib import Path

import pytest

import sandkit
from sandkit.cli.spec import RunSpec
from sandkit.runtime import handover
from sandkit.runtime import options as options_module

REPO = Path(sandkit.__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_checks_the_options_of_every_entry_point(tmp_path, monkeypatch):
    mypy = pytest.importorskip("mypy.api")
    program = tmp_path / "user_code.py"
    program.write_text(
        textwrap.dedent("""\
        import sandkit
        from sandkit.pytest_plugin import ContainerFactory

        sandkit.Container("host", memory="1g", cpus=1.5, mounts=["/a:/b"], disk_inodes=10)
        sandkit.Container("host", memory=1.5j)
        sandkit.Container("host", memroy="1g")
        sandkit.AsyncContainer("host", pids_limit="many")

        def test(sandkit_factory: ContainerFactory) -> None:
            sandkit_factory("host", lifetime="soon")
        """)
    )
    # MYPYPATH: an editable install is a path hook, which mypy does not follow.
    monkeypatch.setenv("MYPYPATH", str(REPO))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # the defaults, whatever the project's config says
    stdout, _, status = mypy.run(
        [
            "--config-file",
            str(config),
            "--python-version",
            "3.11",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(program),
        ]
    )
    errors = sorted(
        (int(line.split(":")[1]), line.split("  [")[-1].rstrip("]"))
        for line in stdout.splitlines()
        if ": error:" in line
    )
    assert errors == [(5, "arg-type"), (6, "call-arg"), (7, "arg-type"), (10, "arg-type")], stdout
    assert status == 1


def test_a_misspelt_option_is_refused_naming_the_options():
    for make in (sandkit.Container, sandkit.AsyncContainer):
        with pytest.raises(
            TypeError,
            match=r"'memroy' is not a container option; the options "
            r"are: env, workdir, .*, disk_inodes, .*seccomp\b",
        ):
            make("host", memroy="1g")


def test_every_option_is_documented_where_it_is_defined():
    source = inspect.getsource(options_module.ContainerOptions)
    body = ast.parse(source).body[0].body
    documented = {
        statement.target.id
        for statement, following in itertools.pairwise(body)
        if isinstance(statement, ast.AnnAssign)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
    }
    assert documented == set(sandkit.ContainerOptions.__annotations__)
    assert "disk_inodes" in documented


def test_a_run_spec_keeps_its_container_options_through_json(tmp_path):
    """`sandkit inspect` reads the flat form; a detached container's supervisor is handed the
    options themselves (runtime/handover.py) and starts the same container."""
    spec = RunSpec(
        image="host",
        options=sandkit.ContainerOptions(
            env={"A": "1"},
            mounts=[sandkit.Mount.bind(tmp_path, "/data", read_only=True)],
            rlimits={"nofile": (10, 20)},
            seccomp=None,
            memory="64m",
            hostname=None,
        ),
        command=["true"],
        tty=True,
    )
    data = json.loads(json.dumps(spec.to_json()))
    # one flat object, as `sandkit inspect` reads it
    assert data["mounts"][0]["target"] == "/data" and data["env"] == {"A": "1"} and data["tty"]
    handed = json.loads(json.dumps(handover.options_to_json(spec.options)))
    assert handover.options_from_json(handed) == spec.options
