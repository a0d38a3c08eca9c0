"""What `Network` and `Volume` share: a named thing that a ``with`` block makes on entering and
removes on leaving, unless it existed before (``get``), and that may be in use by containers."""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Self


class OwnedResource:
    """``with`` support for a resource with ``create()`` and ``remove()``. ``_owned`` is True
    when this object made the resource (and so removes it); ``_in_use`` is the error `remove`
    raises while containers still use it."""

    _in_use: ClassVar[type[Exception]]
    _owned: bool

    def create(self) -> Self:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._owned:
            return
        try:
            self.remove()
        except self._in_use:
            # While an exception unwinds, containers that use it may still be stopping in an
            # outer block: keep the resource rather than hide the real error.
            if exc is None:
                raise
