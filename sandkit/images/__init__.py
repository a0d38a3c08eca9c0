"""Images: the local content-addressed store, archives, layers and registries.

sandkit.images.list()            local images (one entry per image, with its tags)
sandkit.images.load_all(path)    every image of an archive (`docker load`)
sandkit.images.prune()           drop untagged unused images, then unreferenced layers/blobs
"""

from __future__ import annotations

import builtins
import os

from .config import ImageConfig
from .image import Image
from .layers import LayerWarning
from .store import PruneReport, Store

__all__ = [
    "Image",
    "ImageConfig",
    "LayerWarning",
    "PruneReport",
    "Store",
    "list",
    "load_all",
    "prune",
]


def list(*, store: Store | None = None) -> builtins.list[Image]:  # noqa: A001 - the issue's name
    """Every local image, newest load first."""
    store = store or Store.default()
    recs = sorted(store.records(), key=lambda r: r.loaded, reverse=True)
    return [Image.from_record(store, r) for r in recs]


def load_all(
    path: str | os.PathLike[str], *, platform: str | None = None, store: Store | None = None
) -> builtins.list[Image]:
    """Load every image of an archive (what `docker load` does); artifacts are skipped."""
    from . import archive

    store = store or Store.default()
    return [
        Image.from_record(store, rec)
        for rec, _ in archive.load(store, path, platform=platform, load_all=True)
    ]


def prune(*, store: Store | None = None) -> PruneReport:
    """Remove the images that have no tag and no container using them, then the layers and blobs
    no image refers to; returns what was removed and the space freed."""
    return (store or Store.default()).prune()
