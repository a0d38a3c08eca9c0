"""`sandkit pull/push/login/logout`, wired into a parser the way cli/images.py does."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from sandkit.cli.registry_commands import add_registry_commands
from sandkit.images.image import Image
from sandkit.images.store import Store

from .server import PASSWORD, USER, Registry, make_registry

pytestmark = pytest.mark.slow


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sandkit")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_push_and_pull_commands(
    plain_registry: Registry, busybox: Image, store: Store, capsys
) -> None:
    ref = plain_registry.ref("cli/app:1")
    busybox.tag(ref)
    assert run("push", ref) == 0
    out, err = capsys.readouterr()
    assert f"digest: {busybox.digest}" in out and "Push complete" in err
    busybox.remove()
    assert run("pull", "-q", ref) == 0
    out, err = capsys.readouterr()
    assert out == f"{ref}\n" and err == ""
    assert Image.get(ref).digest == busybox.digest


def test_pull_error_is_one_clear_line(plain_registry: Registry, capsys) -> None:
    assert run("pull", plain_registry.ref("cli/missing:1")) == 1
    assert "was not found" in capsys.readouterr().err


def test_login_logout_commands(tmp_path: Path, docker_config: Path, monkeypatch, capsys) -> None:
    reg = make_registry(tmp_path / "basic", "basic")
    try:
        monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
        assert run("login", "-u", USER, "--password-stdin", reg.host) == 0
        assert "Login Succeeded" in capsys.readouterr().out
        assert reg.host in json.loads(docker_config.read_text())["auths"]
        assert run("logout", reg.host) == 0
        assert run("logout", reg.host) == 1
        monkeypatch.setattr("sys.stdin", io.StringIO("wrong\n"))
        assert run("login", "-u", USER, "--password-stdin", reg.host) == 1
    finally:
        reg.close()
