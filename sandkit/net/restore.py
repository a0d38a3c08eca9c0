"""Running the ``*tables-restore`` programs (iptables, ip6tables, ebtables) that load a
network's rules in its namespace N: finding them, feeding them a ruleset, and turning their
failures into NetworkError. Its own module, imported by `firewall` and `portguard`, so that
neither the rules' text (`egress`) nor the ebtables guard needs the other to run a program."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import NetworkError, NetworkUnavailableError

TIMEOUT = 30.0  # for one run: far more than a few hundred rules take
# The sbin directories a non-root caller's PATH often lacks, searched after PATH.
SEARCH_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
_RUN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the PATH the program runs with


def find(*names: str, missing: str) -> str:
    """The path of the first of ``names`` installed (on PATH, then SEARCH_PATH);
    NetworkUnavailableError(``missing``) when none is."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=SEARCH_PATH)
        if found is not None:
            return found
    raise NetworkUnavailableError(missing)


def run(command: list[str], ruleset: str, env: dict[str, str] | None = None) -> None:
    """Run ``command`` (an ``*tables-restore``) with ``ruleset`` on its stdin, in this
    namespace, with ``env`` added to a fixed PATH; NetworkError naming the program, its exit
    status and what it said when it fails, or when it takes longer than `TIMEOUT`."""
    program = os.path.basename(command[0])
    try:
        done = subprocess.run(
            command,
            input=ruleset.encode(),
            capture_output=True,
            env={"PATH": _RUN_PATH, **(env or {})},
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{program} did not finish within {TIMEOUT:g} s") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-2000:]
        raise NetworkError(f"{program} failed (exit {done.returncode}): {message}")
