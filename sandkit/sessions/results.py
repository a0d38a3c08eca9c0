"""What a snippet gives back: `CodeResult`, `CodeError`, and `OutputChunk` while it runs."""

from __future__ import annotations

import codecs
from collections.abc import Mapping

import attrs

#: bytes of stdout and of stderr a CodeResult keeps by default (the rest is dropped, ``truncated``)
DEFAULT_MAX_CODE_OUTPUT = 1024 * 1024


@attrs.frozen
class CodeError:
    """An exception the snippet raised: its type name, message and traceback text (as Python
    prints it, without sandkit's own frames)."""

    name: str
    value: str
    traceback: str


@attrs.frozen
class OutputChunk:
    """Output of a running snippet, as it arrives (``stream`` is "stdout" or "stderr")."""

    stream: str
    data: str


@attrs.frozen
class CodeResult:
    """The outcome of `run_code`.

    ``value`` is the repr of the snippet's last expression (None when it has none, or it is None),
    ``rich`` its rich forms by MIME type (``_repr_html_``, ``_repr_png_``...), ``figures`` a PNG of
    each matplotlib figure the snippet left open. ``restarted``: the interpreter was ended (timed
    out beyond the grace period, died, or spoke garbage) and the next call gets a fresh one, with
    none of the state of this one.
    """

    stdout: str
    stderr: str
    value: str | None = None
    rich: Mapping[str, str | bytes] = attrs.field(factory=dict)
    figures: list[bytes] = attrs.field(factory=list)
    error: CodeError | None = None
    duration: float = 0.0
    timed_out: bool = False
    restarted: bool = False
    truncated: bool = False


class OutputCollector:
    """Keeps at most ``limit`` bytes of each stream (whatever the agent claims) and decodes them
    as UTF-8 chunk by chunk, so that a character split between chunks comes out whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = {"stdout": 0, "stderr": 0}
        self.text: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.truncated = False
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in self.kept
        }

    def add(self, stream: str, data: bytes) -> str:
        """Keep what fits of ``data``; returns the text it adds ("" when nothing fits)."""
        room = self.limit - self.kept[stream]
        if len(data) > room:
            data, self.truncated = data[: max(room, 0)], True
        self.kept[stream] += len(data)
        text = self._decoders[stream].decode(data)
        if text:
            self.text[stream].append(text)
        return text

    def finish(self, stream: str) -> str:
        """All the text kept of ``stream``."""
        tail = self._decoders[stream].decode(b"", final=True)
        return "".join(self.text[stream]) + tail
