"""The image CLI commands, driven through argparse as cli/images.py wires them."""

from __future__ import annotations

import argparse
import json

from sandkit.cli.image_commands import add_image_commands

from .conftest import oci_layout, tar_bytes


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_image_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_load_images_tag_inspect_save_rmi_prune(tmp_path, store, capsys):
    layout = oci_layout(tmp_path / "l", [tar_bytes([("f", "file", b"x")])])
    assert run("load", "-i", str(layout)) == 0
    assert "Loaded image: example.com/test/img:1" in capsys.readouterr().out
    assert run("tag", "example.com/test/img:1", "other:2") == 0
    assert run("images", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["repository"], r["tag"]) for r in rows} == {
        ("example.com/test/img", "1"),
        ("other", "2"),
    }
    assert run("inspect", "other:2") == 0
    assert json.loads(capsys.readouterr().out)[0]["repo_tags"]
    assert run("save", "-o", str(tmp_path / "out.tar"), "other:2") == 0
    assert run("rmi", "other:2") == 0 and "Untagged" in capsys.readouterr().out
    assert run("rmi", "example.com/test/img:1") == 0 and "Deleted" in capsys.readouterr().out
    assert run("images", "-q") == 0 and capsys.readouterr().out == ""
    assert run("image", "prune") == 0
    assert run("image", "prune", "-f") == 0  # Docker users type -f out of habit
    assert run("rmi", "nothere") == 1 and "not in the local store" in capsys.readouterr().err
    assert run("load", "-i", str(tmp_path / "out.tar"), "-q") == 0
