"""Hole 5 of issue 14: a container's output or files must not take the host's memory through the
API's default arguments. Each case runs in a forked child of its own (root, and rootless as the
test user) and reports how far its resident set's high-water mark rose during the call."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import make_busybox_rootfs, run_unprivileged

import sandkit
from sandkit.runtime.container import DEFAULT_MAX_OUTPUT

MiB = 1 << 20
# What a call with default arguments may add to the host process: the output cap of both streams
# and a copy of each, or one read_file, with room for the interpreter's own noise.
BOUND_MIB = 4 * DEFAULT_MAX_OUTPUT // MiB + 96

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="runs root and rootless: needs root to create the test user"
    ),
]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _call(c: sandkit.Container, case: str) -> dict:
    if case == "endless":
        r = c.exec(["cat", "/dev/zero"], timeout=3)
        return {"timed_out": r.timed_out, "kept": len(r.stdout), "truncated": r.output_truncated}
    if case == "long_line":
        r = c.exec(["head", "-c", str(1 << 30), "/dev/zero"])
        return {"exit": r.exit_code, "kept": len(r.stdout), "truncated": r.output_truncated}
    try:
        c.read_file("/tmp/big")
        return {"error": None}
    except sandkit.errors.FileTooLargeError as e:
        return {"error": str(e)}


def _own_busybox() -> sandkit.Image:
    """Made by the child itself, in its own SANDKIT_HOME: the user reaches it (pytest's basetemp
    is private to root), and it owns the files it is root over."""
    return sandkit.Image.from_directory(
        make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
    )


def _growth_of(case: str) -> dict:
    """In a forked child of its own: the call's outcome, and how far it raised our peak RSS."""
    with sandkit.Container(_own_busybox()) as c:
        c.exec(["truncate", "-s", "3G", "/tmp/big"], check=True)  # sparse: costs no memory
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark starts again from the resident set now
        before = _status_kib("VmRSS")
        outcome = _call(c, case)
        growth = _status_kib("VmHWM") - before
    return {"growth_mib": growth / 1024, **outcome}


def _measure(case: str, mode: str) -> dict:
    return run_unprivileged(_growth_of, case, unprivileged=mode == "rootless")


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_endless_output_with_a_timeout_keeps_host_memory_bounded(mode):
    outcome = _measure("endless", mode)
    assert outcome["growth_mib"] < BOUND_MIB
    assert outcome["timed_out"] and outcome["truncated"]
    assert outcome["kept"] == DEFAULT_MAX_OUTPUT


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_a_one_gib_line_keeps_host_memory_bounded(mode):
    outcome = _measure("long_line", mode)
    assert outcome["growth_mib"] < BOUND_MIB
    assert outcome["exit"] == 0 and outcome["truncated"]
    assert outcome["kept"] == DEFAULT_MAX_OUTPUT


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_read_file_of_a_huge_sparse_file_is_refused_without_reading_it(mode):
    outcome = _measure("read_file", mode)
    assert outcome["growth_mib"] < BOUND_MIB
    assert outcome["error"] is not None
    assert str(3 << 30) in outcome["error"] and "open_file" in outcome["error"]


# --- the API around the bounds --------------------------------------------------------------


def test_open_file_streams_a_file_larger_than_read_file_takes(busybox):
    with sandkit.Container(busybox) as c:
        c.exec(["sh", "-c", "head -c 70000000 /dev/urandom > /tmp/big"], check=True)
        expected = c.exec(["sha256sum", "/tmp/big"]).stdout.split()[0].decode()
        with pytest.raises(sandkit.errors.FileTooLargeError, match="70000000 bytes"):
            c.read_file("/tmp/big")
        digest = hashlib.sha256()
        with c.open_file("/tmp/big") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == expected
        assert len(c.read_file("/tmp/big", max_size=70_000_000)) == 70_000_000
        for bad in (-1, "64m", None, True):
            with pytest.raises(sandkit.errors.LimitsError, match="max_size"):
                c.read_file("/etc/passwd", max_size=bad)  # type: ignore[arg-type]


@pytest.mark.trio
async def test_async_open_file_streams(busybox):
    async with sandkit.AsyncContainer(busybox) as c:
        await c.write_file("/tmp/f", b"x" * 300_000)
        with pytest.raises(sandkit.errors.FileTooLargeError):
            await c.read_file("/tmp/f", max_size=1000)
        async with await c.open_file("/tmp/f") as f:
            assert len(await f.read()) == 300_000


def test_max_output_takes_a_larger_int_and_refuses_nonsense(busybox):
    with sandkit.Container(busybox) as c:
        r = c.exec(
            ["head", "-c", str(DEFAULT_MAX_OUTPUT + 5), "/dev/zero"],
            max_output=DEFAULT_MAX_OUTPUT + 5,
        )
        assert len(r.stdout) == DEFAULT_MAX_OUTPUT + 5 and not r.output_truncated
        with pytest.raises(sandkit.errors.LimitsError, match="max_output"):
            c.exec(["true"], max_output=-1)
    with pytest.raises(sandkit.errors.LimitsError, match="max_output"):
        sandkit.Container(busybox, max_output="lots")
