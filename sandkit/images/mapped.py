"""Rootless layers with their owners: a layer applied inside a user namespace that has the
containers' id mapping (``sandkit/idmap.py``), so that chown works and a file the layer gives to
uid 70 is uid 70 inside every container (on the host: the caller's subordinate id START+69).

The store's process decompresses and hashes as ever (one pass over the download); the plain tar
goes through a pipe to a forked helper that is root of the user namespace and runs the same
`apply_tar`. Owners past the mapping (a hostile 4294967294) become root's inside, that is the
caller's: nothing ever lands on a host id outside the caller's own and its subordinate range.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO

from .. import idmap
from .layers import ApplyReport, apply_tar

if TYPE_CHECKING:
    from .budget import DiskBudget

_CHUNK = 1 << 20


def apply_tar_mapped(
    stream: BinaryIO,
    root: str | os.PathLike[str],
    budget: DiskBudget | None,
    *,
    layer: str,
    mapping: idmap.RangeMapping,
) -> ApplyReport:
    """`apply_tar` in a user namespace with ``mapping``; what the helper charged is charged to
    ``budget`` here too (the helper checks the limits against what was charged before it)."""

    def job(data_fd: int | None) -> tuple[ApplyReport, int, int]:
        assert data_fd is not None
        if budget is not None:
            budget.after_fork()
        before = (budget.bytes, budget.inodes) if budget is not None else (0, 0)
        with open(data_fd, "rb", closefd=False) as data:
            report = apply_tar(
                data,
                root,
                budget,
                layer=layer,
                id_limits=(mapping.inner_uids, mapping.inner_gids),
            )
            while data.read(_CHUNK):  # the tar's end padding: the feeder writes it all
                pass
        after = (budget.bytes, budget.inodes) if budget is not None else (0, 0)
        return report, after[0] - before[0], after[1] - before[1]

    report, nbytes, inodes = idmap.run_mapped(mapping, job, feed=lambda fd: _copy(stream, fd))
    if budget is not None and (nbytes or inodes):
        budget.charge(nbytes, inodes, f"layer {layer}")
    return report


def _copy(stream: BinaryIO, fd: int) -> None:
    buf = bytearray(_CHUNK)
    while n := stream.readinto(buf):  # type: ignore[attr-defined]
        view = memoryview(buf)[:n]
        while view:
            view = view[os.write(fd, view) :]
