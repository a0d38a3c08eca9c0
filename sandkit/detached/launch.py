"""Starting a detached container's supervisor: `sandkit run -d` and ``detach=True`` alike.

The caller writes what to start into a new state directory (`state.create`, which also claims
the name), starts ``python -m sandkit.detached.supervisor`` in a session of its own and waits
for the one line the supervisor writes on the ready pipe. The process started exits at once,
leaving the supervisor it forked, which is so no child of the caller's (none stays a zombie).
A failed start leaves nothing: the supervisor is waited for, and the state directory and the
name go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import errors
from . import client, control, state


def start_supervisor(config: dict[str, Any], name: str | None) -> state.Record:
    """A running detached container made as ``config`` says (see supervisor.py), named
    ``name`` (None: a generated name, as Docker's). Raises `NameInUseError`, or the error that
    kept the container from starting (the class the supervisor reported)."""
    record = state.create(config, name)
    try:
        report = _launch(record)
    except BaseException:
        state.remove(record)
        raise
    if report.get("ok"):
        return record
    # It has given up: make sure it is gone before removing its directory.
    client.wait_for_exit(record.reload(), client.STOP_SLACK)
    state.remove(record)
    raise _reported_error(report, record)


def restart_supervisor(record: state.Record) -> None:
    """Start the supervisor of the stopped container ``record`` once more (`sandkit start`),
    its state directory and name kept. Raises the error that kept the container from starting."""
    report = _launch(record)
    if report.get("ok"):
        return
    client.wait_for_exit(record.reload(), client.STOP_SLACK)
    raise _reported_error(report, record)


def _launch(record: state.Record) -> dict[str, Any]:
    """Start the supervisor of ``record`` and read its report (empty when it died first)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        env = dict(os.environ)
        # The supervisor imports this very sandkit, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        with open(record.dir / "supervisor.log", "ab") as log:
            forker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandkit.detached.supervisor",
                    str(record.dir),
                    str(write_end),
                ],
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd="/",
                env=env,
                start_new_session=True,  # no terminal, and no Ctrl-C from the shell that started it
            )
        os.close(write_end)
        write_end = -1
        forker.wait()  # it forks the supervisor and exits
        with os.fdopen(read_end, "rb") as ready:
            read_end = -1
            line = ready.readline()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    try:
        report = json.loads(line) if line.strip() else {}
    except ValueError:
        report = {}
    return report if isinstance(report, dict) else {}


def _reported_error(report: dict[str, Any], record: state.Record) -> errors.SandkitError:
    """The supervisor's error as the class it reported, or a `ContainerStartError` with the
    end of its log when it died without a word."""
    if "error" not in report:
        return errors.ContainerStartError(_last_lines(record.dir / "supervisor.log"))
    return control.error_from(report, errors.ContainerStartError)


def _last_lines(path: Path, count: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    detail = "\n".join(lines[-count:])
    return "the container's supervisor exited before the container started" + (
        f":\n{detail}" if detail else ""
    )
