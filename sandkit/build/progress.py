"""What a build shows while it runs: one line per step ("CACHED" when reused), a RUN step's
output as it comes, warnings. ``plain`` writes text lines (logs, CI); ``rich`` styles the same
lines for a terminal; ``quiet`` shows nothing but errors (they are raised)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .parser import Instruction


class Progress:
    """Silent progress (``quiet``); the base of the others."""

    def step(self, ins: Instruction, *, cached: bool) -> None:
        """A step starts (or is reused from the cache)."""

    def skipped(self, stage: int, from_: Instruction) -> None:
        """A stage the target does not need."""

    def output(self, data: bytes) -> None:
        """Output of a RUN step."""

    def warning(self, text: str) -> None:
        """Something the user should know that does not stop the build."""

    def done(self, image_id: str, tags: tuple[str, ...]) -> None:
        """The image is in the store."""


class PlainProgress(Progress):
    """Text lines on ``stream`` (default stderr), as `docker build --progress plain` writes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.count = 0

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, ins: Instruction, *, cached: bool) -> None:
        self.count += 1
        self._line(f"#{self.count} {ins.original}" + (" CACHED" if cached else ""))

    def skipped(self, stage: int, from_: Instruction) -> None:
        self._line(f"skipped stage {stage} ({from_.original}): the target does not need it")

    def output(self, data: bytes) -> None:
        self.stream.write(data.decode(errors="replace"))
        self.stream.flush()

    def warning(self, text: str) -> None:
        self._line(f"WARNING: {text}")

    def done(self, image_id: str, tags: tuple[str, ...]) -> None:
        self._line(f"built {image_id}" + "".join(f"\nnamed {tag}" for tag in tags))


class RichProgress(PlainProgress):
    """The same lines, styled for a terminal with rich."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        super().__init__(stream)
        self.console = Console(file=self.stream, highlight=False)

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False)

    def step(self, ins: Instruction, *, cached: bool) -> None:
        self.count += 1
        state = " [green]CACHED[/]" if cached else ""
        self.console.print(f"[bold blue]#{self.count}[/] ", end="")
        self.console.print(ins.original, markup=False, end="")
        self.console.print(state)

    def warning(self, text: str) -> None:
        self.console.print("[yellow]WARNING:[/] ", end="")
        self.console.print(text, markup=False)


def make_progress(kind: str | Progress | None, stream: TextIO | None = None) -> Progress:
    """``"auto"`` (rich on a terminal, else plain), ``"plain"``, ``"rich"``, ``"quiet"``/None,
    or a Progress of the caller's own."""
    if isinstance(kind, Progress):
        return kind
    if kind in (None, "quiet"):
        return Progress()
    target = stream or sys.stderr
    if kind == "auto":
        kind = "rich" if target.isatty() else "plain"
    if kind == "plain":
        return PlainProgress(target)
    if kind == "rich":
        return RichProgress(target)
    raise ValueError(f"progress {kind!r}: use auto, plain, rich or quiet")
