"""A pull or load killed mid-way leaves no staging for long (issue 15, "Also").

A subprocess ingests a layer from a pipe and is SIGKILLed once part of it is in the store's
staging area; the next open of the store removes that staging, a live one is never touched,
and `prune` reports the space it frees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from polling import wait_until

from sandkit.images.store import Store

from .conftest import sha, tar_bytes

MiB = 1 << 20
LAYER = tar_bytes([("big", "file", os.urandom(8 * MiB))])

INGEST = """
import sys
from sandkit.images.store import Store
store = Store(sys.argv[1])
store.ingest_layer(sys.stdin.buffer, digest=sys.argv[2], diff_id=sys.argv[2], size=int(sys.argv[3]))
"""


def staged_bytes(home: Path) -> int:
    return sum(f.stat().st_size for f in (home / "tmp").rglob("*") if f.is_file())


def start_ingest(home: Path) -> subprocess.Popen:
    """A subprocess that has written part of the layer into staging and waits for the rest."""
    proc = subprocess.Popen(
        [sys.executable, "-c", INGEST, str(home), sha(LAYER), str(len(LAYER))],
        stdin=subprocess.PIPE,
    )
    proc.stdin.write(LAYER[: 4 * MiB])
    proc.stdin.flush()
    wait_until(
        lambda: staged_bytes(home) >= 2 * MiB,
        "the subprocess to stage part of the layer",
        timeout=30,
    )
    return proc


def killed_ingest(home: Path) -> None:
    proc = start_ingest(home)
    proc.kill()
    proc.wait()
    proc.stdin.close()
    assert staged_bytes(home) >= 2 * MiB  # what a killed pull leaves


def test_the_next_open_removes_the_staging_of_a_killed_load(tmp_path: Path):
    home = tmp_path / "home"
    Store(home)
    killed_ingest(home)
    Store(home)
    assert list((home / "tmp").iterdir()) == []


def test_the_staging_of_a_live_load_is_kept(tmp_path: Path):
    home = tmp_path / "home"
    Store(home)
    proc = start_ingest(home)
    try:
        before = list((home / "tmp").iterdir())
        Store(home).prune()
        assert list((home / "tmp").iterdir()) == before
        proc.stdin.write(LAYER[4 * MiB :])
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0  # it finished undisturbed
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert Store(home).has_layer(sha(LAYER))


def test_prune_reports_the_staging_it_frees(tmp_path: Path):
    home = tmp_path / "home"
    store = Store(home)
    killed_ingest(home)
    staged = staged_bytes(home)
    report = store.prune()
    assert report.staging == 1
    assert report.bytes_freed >= staged
    assert list((home / "tmp").iterdir()) == []


def test_prune_reports_what_the_open_of_the_store_freed(tmp_path: Path, monkeypatch):
    """`sandkit image prune` opens the store (which sweeps) and then prunes: it says so."""
    home = tmp_path / "home"
    Store(home)
    killed_ingest(home)
    staged = staged_bytes(home)
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    out = subprocess.run(
        [sys.executable, "-m", "sandkit", "image", "prune"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 left by interrupted pulls or loads" in out.stdout
    assert "reclaimed 0" not in out.stdout
    report = Store(home).prune()
    assert report.bytes_freed == 0  # reported once, by the prune that followed the sweep
    assert staged > 0
