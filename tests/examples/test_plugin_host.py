"""examples/plugin_host: four plugins, each called in a container of its own."""

from __future__ import annotations

import os

import pytest

from .conftest import EXAMPLES, run_example

pytestmark = pytest.mark.slow


def test_the_plugin_host_survives_its_plugins_and_prints_what_each_did(example_env):
    done = run_example([str(EXAMPLES / "plugin_host" / "host.py")], example_env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert sorted(lines) == ["broken", "shout", "snoop", "stuck"]
    assert lines["shout"] == "returned {'text': 'HELLO FROM THE PLUGIN HOST', 'words': 5}"
    assert lines["broken"] == "raised ZeroDivisionError: division by zero"
    assert lines["stuck"] == "cut off after 2.0 s"
    # The file exists on the host, at the path the plugin was given: not in its container.
    assert lines["snoop"].startswith("raised FileNotFoundError: [Errno 2] No such file")
    assert "token-that-no-plugin-may-see" not in done.stdout + done.stderr


def test_a_plugin_directory_of_links_and_fifos_is_refused_file_by_file(example_env, tmp_path):
    """The host reads the plugins' sources itself: a link to a host file or a fifo (which would
    block the read forever) in the directory is skipped, never copied in."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "ok.py").write_text("def run(request):\n    return {'ok': True}\n")
    (plugins / "leak.py").symlink_to("/etc/shadow")
    os.mkfifo(plugins / "fifo.py")
    done = run_example(
        [str(EXAMPLES / "plugin_host" / "host.py"), str(plugins)], example_env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert lines["ok"] == "returned {'ok': True}"
    assert lines["leak"].startswith("skipped")
    assert lines["fifo"].startswith("skipped")
