"""Layers built to exhaust the host: huge tar headers, headers by the thousand, and entry orders
that used to cost quadratic time. Memory is measured in a child process (its peak RSS: VmHWM, as
ru_maxrss counts the parent's memory that a vforked child carries over exec), under an
address-space limit so that a regression fails the test instead of the machine."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile
from collections.abc import Iterator

import pytest

from sandkit.errors import UnsafeLayerError
from sandkit.images import fsutil, layers
from sandkit.images.fsutil import dir_size, remove_tree
from sandkit.images.layers import apply_tar

from .conftest import ingest, python_child
from .hostile_tar import END, StreamOf, header, member, pax

ADDRESS_SPACE = 2 << 30  # the child's limit: far above what applying a layer needs
PEAK_BOUND = 160 << 20  # generous: the child idles at about 30 MiB
MAX_SPECIAL_HEADER = 1 << 20  # Docker's (Go archive/tar's) limit on PAX and GNU long-name headers

CHILD = """
import resource, sys, tempfile
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from sandkit.errors import ImageError
from sandkit.images import fsutil, layers
from sandkit.images.fsutil import dir_size, remove_tree
from sandkit.images.layers import apply_tar
from tests.images.hostile_tar import END, StreamOf, header, member, pax

{layer}

with tempfile.TemporaryDirectory() as root:
    try:
        apply_tar(StreamOf(layer()), root)
        print("applied")
    except ImageError as e:
        print("refused:", e)
print([int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""


def apply_in_child(layer_source: str) -> tuple[str, int]:
    """Apply the layer that ``layer_source``'s ``layer()`` generator yields, in a child process;
    returns (outcome line, peak RSS in bytes)."""
    code = CHILD.format(limit=ADDRESS_SPACE, layer=layer_source)
    outcome, peak = python_child(code)
    return outcome, int(peak)


@pytest.mark.parametrize("typeflag", ["x", "g", "L", "K"])
def test_a_2_gib_special_header_is_refused_before_it_is_read(typeflag):
    # A PAX header (per file or global) or GNU long name/link claiming 2 GiB, streamed: the
    # layer is small once compressed, and tarfile read such a header whole into memory.
    outcome, peak = apply_in_child(f"""
def layer():
    yield header("PaxHeader", b"{typeflag}", 2 << 30)
    chunk = b"c" * (1 << 20)
    for _ in range(2048):
        yield chunk
    yield member("f", b"x")
    yield END
""")
    assert outcome.startswith("refused:") and f"{MAX_SPECIAL_HEADER}-byte limit" in outcome
    assert peak < PEAK_BOUND


@pytest.mark.slow
def test_3000_files_with_1_mib_pax_comments_stay_flat():
    # 3 GB of headers from a few MB of gzip: tarfile kept every member's headers until the end.
    # Each header is under the per-header limit; the tar's total of them is refused early.
    outcome, peak = apply_in_child("""
def layer():
    comment = b"c" * ((1 << 20) - 64)
    for i in range(3000):
        yield pax({"comment": comment})
        yield member(f"d{i}", typeflag=b"5") if i % 2 else member(f"f{i}", b"x")
    yield END
""")
    assert outcome.startswith("refused:") and "together exceed" in outcome
    assert peak < PEAK_BOUND


@pytest.mark.slow
def test_members_headers_are_not_kept_once_applied():
    # 3000 files and directories with 64 KiB PAX comments each (190 MiB in all, under every
    # limit): applied, and the host holds one member's headers at a time.
    outcome, peak = apply_in_child("""
def layer():
    comment = b"c" * (64 << 10)
    for i in range(3000):
        yield pax({"comment": comment, "SCHILY.xattr.user.big": "v" * 1000})
        yield member(f"d{i}", typeflag=b"5") if i % 2 else member(f"f{i}", b"x")
    yield END
""")
    assert outcome == "applied"
    assert peak < 128 << 20


def test_the_refusal_names_the_layer_and_leaves_nothing_behind(store):
    tar = pax({"comment": "c" * (MAX_SPECIAL_HEADER + 1)}) + member("f", b"x") + END
    blob = gzip.compress(tar)
    with pytest.raises(
        UnsafeLayerError, match=rf"layer sha256:[0-9a-f]+.*{MAX_SPECIAL_HEADER}-byte limit"
    ):
        ingest(store, blob, tar)
    assert os.listdir(store.home / "tmp") == [] and os.listdir(store.home / "layers") == []


def test_a_chain_of_special_headers_is_refused():
    # PAX headers before PAX headers: tarfile recursed once per header (a RecursionError after
    # a few hundred) and held each.
    tar = pax({"comment": "c"}) * 2000 + member("f", b"x") + END
    with (
        tempfile.TemporaryDirectory() as root,
        pytest.raises(UnsafeLayerError, match="more than 8 special headers"),
    ):
        apply_tar(io.BytesIO(tar), root)


def test_an_endless_old_gnu_sparse_map_is_refused(tmp_path):
    # Type 'S' with the "extended" flag set in every extension block: tarfile read blocks until
    # the stream ended, keeping 21 pieces per 512 bytes.
    sparse = header("s", b"S", 0, raw={482: b"\x01", 483: b"%011o\0" % 100})
    extension = bytearray(512)
    extension[504] = 1
    root = tmp_path / "l"
    root.mkdir()
    stream = StreamOf(_then_repeat(sparse, bytes(extension), 20_000))
    with pytest.raises(UnsafeLayerError, match=r"headers .* exceed"):
        apply_tar(stream, root)


def _then_repeat(first: bytes, block: bytes, times: int) -> Iterator[bytes]:
    yield first
    for _ in range(times):
        yield block


# --- linear cost -------------------------------------------------------------------------------


def _dirs_then_files(n: int) -> bytes:
    """n directories, then a file replacing each of them (in the order they were made)."""
    return b"".join(
        [member(f"d{i}", typeflag=b"5") for i in range(n)]
        + [member(f"d{i}", b"f") for i in range(n)]
        + [END]
    )


def _lines_run_in_layers_py(tar: bytes) -> int:
    """Apply ``tar`` on tmpfs when there is one (the cost measured is Python's, not the
    disk's) and count the lines of layers.py executed: an operation count, not a timing."""
    counted = [0]
    target = apply_tar.__code__.co_filename

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            counted[0] += 1
        return tracer

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as root:
        sys.settrace(tracer)
        try:
            apply_tar(io.BytesIO(tar), root)
        finally:
            sys.settrace(None)
    return counted[0]


def test_replacing_directories_by_files_costs_linear_time():
    # The reported layer: 40,000 entries (directories, then files in their place) took 55 s,
    # every replacement scanning every directory seen. Four times the entries must cost about
    # four times the work (quadratic work is sixteen times).
    small = _lines_run_in_layers_py(_dirs_then_files(500))
    large = _lines_run_in_layers_py(_dirs_then_files(2000))
    assert large < 6 * small, (small, large)


# --- deep trees ----------------------------------------------------------------------------------

DEPTH = 1500  # deeper than Python's recursion limit, within Linux's 4,096-byte paths


@pytest.fixture
def cleaned(tmp_path):
    """tmp_path, emptied after the test even if a deep tree stays there: pytest's own cleanup
    (shutil.rmtree) fails on one, in every later pytest session of this user."""
    yield tmp_path
    for child in tmp_path.iterdir():
        remove_tree(child)


def _deep_layer(then: bytes = b"") -> bytes:
    """A file 1,500 directories down, then ``then``."""
    return (
        pax({"path": "/".join(["d"] * DEPTH) + "/f"}) + member("placeholder", b"deep") + then + END
    )


def test_a_deep_directory_replaced_by_a_file(cleaned):
    # shutil.rmtree recursed once per level: a RecursionError traceback
    root = cleaned / "layer"
    root.mkdir()
    apply_tar(io.BytesIO(_deep_layer(member("d", b"a file now"))), root)
    assert (root / "d").read_bytes() == b"a file now"


def test_a_refused_deep_layer_leaves_no_staging(store, cleaned):
    # the store deletes the half-applied layer on error: that deletion recursed too, and the
    # RecursionError replaced the real error and left the staging directory behind
    tar = _deep_layer(member("../escape", b"x"))
    blob = gzip.compress(tar)
    with pytest.raises(UnsafeLayerError, match="escape"):
        ingest(store, blob, tar)
    assert os.listdir(store.home / "tmp") == [] and os.listdir(store.home / "layers") == []


def test_a_stored_deep_layer_can_be_measured_and_removed(store, cleaned):
    tar = _deep_layer()
    ingest(store, gzip.compress(tar), tar)
    fs = next((store.home / "layers").glob("*/fs"))
    assert dir_size(fs) == len(b"deep")  # what prune counts: os.walk recursed
    remove_tree(store.home / "layers")
    assert not (store.home / "layers").exists()


def test_entries_alternating_between_two_deep_directories_cost_one_open_each(cleaned, monkeypatch):
    # Each entry's parent was opened one directory at a time from the layer root: 2,000 entries
    # alternating between two 2,000-deep directories (a 31 KB gzip blob) took 33 s. Counted in
    # opens, not time.
    top = os.open(cleaned, os.O_RDONLY | os.O_DIRECTORY)
    try:
        probe = fsutil.openat2_no_symlinks(top, ".", os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(top)
    if probe is None:
        pytest.skip("this kernel has no openat2 (Linux >= 5.6): the walk opens each component")
    os.close(probe)
    depth, entries = 500, 400
    tops = ["/".join([top] * depth) for top in ("a", "b")]
    tar = (
        b"".join(pax({"path": f"{tops[i % 2]}/f{i}"}) + member("x", b"") for i in range(entries))
        + END
    )
    opens = [0]
    real_open, real_openat2 = os.open, fsutil.openat2_no_symlinks

    def counting(real):
        def call(*args, **kwargs):
            opens[0] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", counting(real_open))
    monkeypatch.setattr(layers, "openat2_no_symlinks", counting(real_openat2), raising=False)
    root = cleaned / "layer"
    root.mkdir()
    apply_tar(io.BytesIO(tar), root)
    # making the two paths costs about 2 x depth opens; then each entry opens its parent once and
    # creates its file
    assert opens[0] < 4 * depth + 4 * entries, opens[0]
    assert (root / tops[1] / f"f{entries - 1}").is_file()
