"""`sandkit network create/ls/inspect/rm/prune`, with Docker's output and exit codes."""

from __future__ import annotations

import json
import os
import threading

import pytest

from sandkit.cli import containers
from sandkit.detached import control, state
from sandkit.errors import ContainerError

from .conftest import sandkit

pytestmark = pytest.mark.slow  # starts containers, the CLI or servers


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDKIT_HOME", str(tmp_path / "home"))


def test_create_prints_the_id_and_ls_lists_docker_columns():
    made = sandkit("network", "create", "--label", "team=db", "backend")
    assert made.returncode == 0, made.stderr
    network_id = made.stdout.strip()
    assert len(network_id) == 64
    listed = sandkit("network", "ls")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [row.split()[1:] for row in rows] == [
        ["bridge", "bridge", "local"],
        ["backend", "bridge", "local"],
    ]
    assert network_id[:12] in sandkit("network", "ls", "-q").stdout.split()


def test_inspect_has_docker_fields():
    sandkit("network", "create", "--subnet", "10.201.0.0/24", "--internal", "inner")
    shown = sandkit("network", "inspect", "inner")
    assert shown.returncode == 0, shown.stderr
    (network,) = json.loads(shown.stdout)
    assert network["Name"] == "inner"
    assert network["Driver"] == "bridge"
    assert network["Internal"] is True
    assert network["IPAM"]["Config"] == [{"Subnet": "10.201.0.0/24", "Gateway": "10.201.0.1"}]
    missing = sandkit("network", "inspect", "nosuch")
    assert missing.returncode == 1
    assert "No such network: nosuch" in missing.stderr


def test_rm_prints_names_and_fails_for_unknown():
    sandkit("network", "create", "gone")
    removed = sandkit("network", "rm", "gone", "nosuch")
    assert removed.stdout.split() == ["gone"]
    assert removed.returncode == 1
    assert "network 'nosuch' not found" in removed.stderr


@pytest.mark.parametrize("name", ["bridge", "host", "none", "bad name"])
def test_reserved_and_malformed_names_fail_with_the_fix(name):
    made = sandkit("network", "create", name)
    assert made.returncode == 1
    assert "Error:" in made.stderr
    assert sandkit("network", "ls", "-q").stdout.count("\n") == 1


def test_prune_removes_unused_user_networks():
    sandkit("network", "create", "one")
    sandkit("network", "create", "two")
    pruned = sandkit("network", "prune", "-f")
    assert pruned.stdout.split() == ["Deleted", "Networks:", "one", "two"]
    assert len(sandkit("network", "ls", "-q").stdout.split()) == 1


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="runs containers as root")
def test_run_on_a_user_network_with_an_alias(busybox_dir):
    """`sandkit run --network NAME --network-alias A`: the container has an address of the
    network's subnet and its /etc/hosts names it by its alias, as `docker run` does."""
    sandkit("network", "create", "--subnet", "10.202.0.0/24", "runnet")
    ran = sandkit(
        "run", "--rm", "--network", "runnet", "--network-alias", "web", str(busybox_dir),
        "sh", "-c", "ip -o -4 addr show eth0; grep web /etc/hosts",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "inet 10.202.0.2/24" in ran.stdout
    assert "10.202.0.2\t" in ran.stdout and ran.stdout.rstrip().endswith(" web")
    unknown = sandkit("run", "--rm", "--network", "nosuch", str(busybox_dir), "true")
    assert unknown.returncode == 125
    assert "network 'nosuch' not found" in unknown.stderr


def test_connect_fails_when_the_supervisor_hangs_up_without_an_answer(tmp_path, monkeypatch):
    """`network connect` waits for the supervisor's verdict: a connection closed without one
    (the container stopped meanwhile, or the supervisor failed on the request) is an error
    naming the supervisor's log, never a silent success."""
    me = os.getpid()
    record = state.Record(
        id="ab" * 32,
        dir=tmp_path,
        config={},
        state={
            "status": "running",
            "supervisor_pid": me,
            "supervisor_start": state.process_start_time(me),
        },
    )
    monkeypatch.setattr(state, "find", lambda ref: record)
    listener = control.listen(record.socket_path)
    listener.settimeout(10)

    def hang_up() -> None:  # a supervisor that reads the request and closes
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            conn.recv(control.MAX_MESSAGE)

    answering = threading.Thread(target=hang_up)
    answering.start()
    try:
        with pytest.raises(ContainerError, match="did not answer the connect request"):
            containers.ask_supervisor("c", {"op": "connect", "network": "n", "aliases": []})
    finally:
        answering.join()
        listener.close()
