"""What `Network` and `Volume` share: a named thing that a ``with`` block makes on entering and
removes on leaving, unless it existed before (``get``), and that may be in use by containers."""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Record = TypeVar("Record", bound=_Named)


class OwnedResource(Generic[Record]):
    """``with`` support for a resource with ``create()`` and ``remove()``. ``_record`` is its
    stored definition once created; ``_owned`` is True when this object made it (and so removes
    it); ``_in_use`` is the error `remove` raises while containers still use it; ``_kind``
    names it in messages."""

    _in_use: ClassVar[type[Exception]]
    _kind: ClassVar[str]
    _record: Record | None
    _wanted_name: str | None
    _owned: bool

    def _created(self) -> Record:
        if self._record is None:
            raise RuntimeError(f"the {self._kind} is not created yet: use `with` or create()")
        return self._record

    @property
    def name(self) -> str:
        """The name containers and the CLI use for it."""
        if self._record is None and self._wanted_name is not None:
            return self._wanted_name
        return self._created().name

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
