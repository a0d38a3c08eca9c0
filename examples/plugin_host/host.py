"""A plugin host: calls a function of each plugin it does not trust, each plugin in a container
of its own, and prints what came back.

    pip install sandkit
    sandkit pull python:3.12-slim       # any image with python3 (3.8 or later); or set
                                        # SANDKIT_EXAMPLE_IMAGE to one in your store
    python examples/plugin_host/host.py [PLUGIN_DIR]     # default: plugins/ next to this file

A plugin is a module PLUGIN_DIR/NAME.py with a function `run(request: dict) -> dict`. The host
copies the module into a fresh container (no network, bounded memory and processes, the image
read-only) and calls `NAME:run` there with `Container.call`: the request and the answer cross
as msgpack data, never as pickles, so a plugin can hand the host nothing but data. A plugin that
raises gives a `sandkit.RemoteError` (its type, message and traceback), one that hangs is cut
off by the call's timeout, and one that looks for the host's files finds the container's own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import sandkit

IMAGE = os.environ.get("SANDKIT_EXAMPLE_IMAGE", "python:3.12-slim")
CALL_TIMEOUT = 2.0  # seconds a plugin's function may take
MAX_PLUGIN_BYTES = 1024 * 1024
LIMITS = {"network": "none", "memory": "128m", "pids_limit": 32, "read_only": True}


def call_plugin(source: Path, request: dict) -> str:
    """Runs `source`'s run(request) in a new container; a line saying how it went."""
    with sandkit.Container(
        IMAGE,
        mounts=[sandkit.Mount.tmpfs("/plugins")],  # (the only writable place)
        workdir="/plugins",  # (call() imports from the working directory)
        **LIMITS,
    ) as c:
        c.write_file(f"/plugins/{source.name}", source.read_bytes())
        try:
            answer = c.call(f"{source.stem}:run", request, timeout=CALL_TIMEOUT)
        except sandkit.RemoteError as e:
            return f"raised {e.type_name}: {e.message}"
        except sandkit.errors.CallTimeoutError:
            return f"cut off after {CALL_TIMEOUT} s"
        return f"returned {answer!r}"


def plugins_in(directory: Path) -> list[Path]:
    """The plugin modules of `directory`: regular files only, none too large to copy."""
    found = []
    for path in sorted(directory.glob("*.py")):
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_PLUGIN_BYTES:
            print(f"{path.stem:8} skipped: not a regular file of at most {MAX_PLUGIN_BYTES} bytes")
            continue
        found.append(path)
    return found


def main(argv: list[str]) -> int:
    plugin_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "plugins"
    with tempfile.TemporaryDirectory() as private:
        # A file only the host may read, whose path every plugin is told: knowing it is no help.
        host_file = Path(private) / "api-token"
        host_file.write_text("token-that-no-plugin-may-see\n")
        request = {"text": "hello from the plugin host", "host_file": str(host_file)}
        for plugin in plugins_in(plugin_dir):
            print(f"{plugin.stem:8} {call_plugin(plugin, request)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
