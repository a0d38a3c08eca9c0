"""Containers started as users get them by default: from a spare made ahead of need (the suite
turns spares off with SANDKIT_PRESPAWN=0, see conftest.py). No pytest in here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from polling import wait_until

import sandkit
from sandkit.runtime import prespawn

STARTS = ("fresh", "spare")


@contextmanager
def started(image: sandkit.Image, start: str, **options: object) -> Iterator[sandkit.Container]:
    """A running container; with ``start="spare"`` one that took a spare made for the same
    options, which is checked (its init was among the spares just before), not assumed."""
    if start == "fresh":
        with sandkit.Container(image, **options) as c:
            yield c
        return
    before = os.environ.get("SANDKIT_PRESPAWN")
    os.environ["SANDKIT_PRESPAWN"] = "1"
    try:
        with sandkit.Container(image, **options):
            pass  # the next container like this one is wanted: a spare is made for it
        wait_until(prespawn.spares, "a spare container")
        spares = {ready.init.pid for ready in prespawn.spares()}
        with sandkit.Container(image, **options) as c:
            # Spares off again before this one stops, or its stop has the next spare made,
            # which would outlive the test.
            _restore(before)
            assert c._core._init.pid in spares, "the container did not start from the spare"
            yield c
    finally:
        _restore(before)
        prespawn.drain()


def _restore(setting: str | None) -> None:
    if setting is None:
        os.environ.pop("SANDKIT_PRESPAWN", None)
    else:
        os.environ["SANDKIT_PRESPAWN"] = setting
