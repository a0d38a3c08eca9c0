"""`sandkit volume create/ls/inspect/rm/prune` and `run -v NAME:/path`, with Docker's output and
exit codes (the fields and codes of a private dockerd: tests/cli/test_volume_parity.py)."""

from __future__ import annotations

import json

import pytest

from .conftest import sandkit

pytestmark = [
    pytest.mark.slow,  # starts containers, the CLI or servers
    pytest.mark.usefixtures("own_home"),
]


def test_create_prints_the_name_and_ls_lists_docker_columns():
    made = sandkit("volume", "create", "--label", "team=db", "pgdata")
    assert (made.returncode, made.stdout) == (0, "pgdata\n"), made.stderr
    again = sandkit("volume", "create", "pgdata")  # an existing volume is kept, as Docker's
    assert (again.returncode, again.stdout) == (0, "pgdata\n")
    random_name = sandkit("volume", "create").stdout.strip()
    assert len(random_name) == 64
    header, *rows = sandkit("volume", "ls").stdout.splitlines()
    assert header.split() == ["DRIVER", "VOLUME", "NAME"]
    assert sorted(row.split() for row in rows) == sorted(
        [["local", "pgdata"], ["local", random_name]]
    )
    assert sorted(sandkit("volume", "ls", "-q").stdout.split()) == sorted(["pgdata", random_name])


def test_inspect_has_docker_fields_and_fails_for_unknown(tmp_path):
    sandkit("volume", "create", "--label", "a=b", "labelled")
    sandkit("volume", "create", "plain")
    shown = sandkit("volume", "inspect", "labelled", "plain")
    assert shown.returncode == 0, shown.stderr
    labelled, plain = json.loads(shown.stdout)
    assert set(labelled) == {
        "CreatedAt",
        "Driver",
        "Labels",
        "Mountpoint",
        "Name",
        "Options",
        "Scope",
    }
    assert (labelled["Labels"], plain["Labels"], plain["Options"]) == ({"a": "b"}, None, None)
    assert plain["Mountpoint"] == str(tmp_path / "home" / "volumes" / "plain" / "_data")
    assert plain["CreatedAt"].endswith("Z")
    missing = sandkit("volume", "inspect", "nosuch")
    assert (missing.returncode, json.loads(missing.stdout)) == (1, [])
    assert "no such volume" in missing.stderr


def test_rm_prints_names_and_fails_for_unknown_unless_forced():
    sandkit("volume", "create", "gone")
    removed = sandkit("volume", "rm", "gone", "nosuch")
    assert removed.stdout.split() == ["gone"]
    assert removed.returncode == 1
    assert "no such volume: nosuch" in removed.stderr
    assert sandkit("volume", "rm", "-f", "nosuch").returncode == 0


def test_prune_keeps_named_volumes_unless_all():
    sandkit("volume", "create", "named")
    kept = sandkit("volume", "prune", "-f")
    assert kept.stdout == "Total reclaimed space: 0B\n"
    assert sandkit("volume", "ls", "-q").stdout == "named\n"
    pruned = sandkit("volume", "prune", "-a", "-f")
    assert pruned.stdout == "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    assert sandkit("volume", "ls", "-q").stdout == ""


@pytest.mark.parametrize("name", ["x", "_x", "bad name"])
def test_malformed_names_fail_with_the_rule(name):
    made = sandkit("volume", "create", name)
    assert made.returncode == 1
    assert "letters, digits" in made.stderr
    assert sandkit("volume", "ls", "-q").stdout == ""


@pytest.mark.slow
@pytest.mark.root
def test_run_with_a_named_volume_keeps_data_between_containers():
    first = sandkit("run", "--rm", "-v", "cli-data:/data", "host", "sh", "-c", "echo hi >/data/f")
    assert first.returncode == 0, first.stderr
    second = sandkit("run", "--rm", "-v", "cli-data:/data:ro", "host", "sh", "-c", "cat /data/f")
    assert (second.returncode, second.stdout) == (0, "hi\n"), second.stderr
    assert sandkit("volume", "ls", "-q").stdout == "cli-data\n"
    assert sandkit("volume", "rm", "cli-data").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["x:/data", "relative/dir:/data"])
def test_run_refuses_a_source_that_is_neither_name_nor_path(spec):
    refused = sandkit("run", "--rm", "-v", spec, "host", "true")
    assert refused.returncode == 125
    assert "neither a volume name" in refused.stderr


@pytest.mark.root
def test_create_takes_dockers_local_driver_options():
    sized = sandkit("volume", "create", "-o", "size=16m", "sized")
    assert sized.returncode == 0, sized.stderr
    tmpfs = ["-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=8m", "inmemory"]
    assert sandkit("volume", "create", *tmpfs).returncode == 0
    shown = json.loads(sandkit("volume", "inspect", "sized", "inmemory").stdout)
    assert [v["Options"] for v in shown] == [
        {"size": str(16 << 20)},
        {"type": "tmpfs", "device": "tmpfs", "o": f"size={8 << 20}"},
    ]
    assert sandkit("volume", "rm", "sized", "inmemory").returncode == 0


@pytest.mark.parametrize("opts", [["-o", "type=nfs"], ["-o", "o=uid=1", "-o", "type=tmpfs"]])
def test_create_refuses_other_options_with_the_supported_ones(opts):
    refused = sandkit("volume", "create", *opts, "other")
    assert refused.returncode == 1
    assert "use -o size=SIZE" in refused.stderr
    assert sandkit("volume", "ls", "-q").stdout == ""
