"""Turning task-group exception groups back into the one error a user should read."""

from __future__ import annotations

from ...errors import RegistryError


def printable(text: str, limit: int = 300) -> str:
    """``text`` from a registry (a body, a header), cut at ``limit`` characters, with control and
    other invisible characters escaped (as skopeo does): a registry's message must not move the
    cursor, clear the screen or reorder text in a terminal or a log."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit]
    )


class SecondaryError(RegistryError):
    """A failure caused by another one (an apply thread whose download broke): never the news."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The root cause among parallel failures: the first that is not a mere consequence."""
    leaves = _leaves(group)
    primary = [e for e in leaves if not isinstance(e, SecondaryError)]
    return (primary or leaves)[0]
