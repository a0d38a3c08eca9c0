"""Progress events that pull and push report through the caller's ``progress`` callback."""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.frozen
class Progress:
    """One step of a pull or push, in Docker's words.

    ``status`` is one of: "resolving", "waiting", "exists" (already in the store / registry),
    "downloading" / "uploading" (bytes so far), "retrying" (``detail`` says why), "complete"
    (blob verified and applied in the same pass, or uploaded), "mounted" (cross-repository
    mount), "manifest" (image registered / manifest pushed; ``id`` is the manifest digest).
    ``id`` is the blob digest; ``current``/``total`` are bytes (total is None when unknown).
    """

    status: str
    id: str
    current: int = 0
    total: int | None = None
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


def silent(_event: Progress) -> None:
    """The default callback: report nothing."""
