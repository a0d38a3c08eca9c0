"""The sources COPY and ADD read: the build context (with ``.dockerignore``) or another stage's
or image's layers; both seen as a read-only tree of relative POSIX paths that cannot be left.

Think like the attacker: a context may come from an untrusted checkout. A source path with
``..``, or a symlink on the way to a source that points out of the context, is refused
(:class:`BuildContextError`); symlinks met inside a copied directory are copied as symlinks, never
followed; fifos, sockets and devices are refused (reading a fifo would block the build forever).
"""

from __future__ import annotations

import enum
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import BuildContextError
from ..images.layers import OPAQUE_XATTRS
from .parser import docker_lines

_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS
MAX_DOCKERIGNORE = 1 << 20  # patterns are a few lines; each is matched against every path


@attrs.frozen
class Pattern:
    """One line of ``.dockerignore`` (or a COPY source with wildcards): a path pattern, ``!``
    for an exception."""

    glob: Glob
    exclusion: bool


def parse_dockerignore(text: str) -> list[Pattern]:
    """The patterns of a ``.dockerignore`` file, as Docker's patternmatcher reads them: blank
    lines and ``#`` comments skipped, each pattern cleaned, a leading ``/`` dropped."""
    patterns = []
    for raw in docker_lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/")
        if cleaned in ("", "."):
            continue
        patterns.append(Pattern(Glob.compile(cleaned), exclusion))
    return patterns


class _Wild(enum.Enum):
    """The wildcards of a pattern segment (a literal ``*`` or ``?`` is a one-character str)."""

    STAR = "*"
    ANY = "?"


# One character of a pattern segment: a wildcard, a literal character, or a character class
# (negated, and its (low, high) ranges; a single character is a range of one).
_Token = _Wild | str | tuple[bool, tuple[tuple[str, str], ...]]


@attrs.frozen
class Glob:
    """A Go filepath.Match pattern plus ``**`` (any number of whole directories), as Docker's
    patternmatcher, matched without backtracking regexes.

    Think like the attacker: ``.dockerignore`` and COPY sources come from the build's author,
    and a backtracking regex takes exponential time on ``*a*a*a*a*a*a*a*a*a*a*a*a*b``; the
    star matcher below takes at most len(pattern) * len(path) steps."""

    segments: tuple[tuple[_Token, ...] | str, ...]  # "**" for a ``**`` segment

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        """``pattern`` (a cleaned .dockerignore line or COPY source) split into segments."""
        return cls(
            tuple("**" if segment == "**" else _tokens(segment) for segment in pattern.split("/"))
        )

    def match(self, path: str) -> bool:
        """Whether the whole of ``path`` (slash-separated, relative) matches."""
        return _star_match(self.segments, path.split("/"), "**", _segment_matches)


def _segment_matches(tokens: tuple[_Token, ...] | str, name: str) -> bool:
    assert not isinstance(tokens, str)  # "**" is the star, never matched one to one
    return _star_match(tokens, name, _Wild.STAR, _char_matches)


def _char_matches(token: _Token, char: str) -> bool:
    if token is _Wild.ANY:
        return True
    if isinstance(token, str):
        return token == char
    assert isinstance(token, tuple)  # a class; a star never reaches here (_star_match's)
    negated, ranges = token
    return any(low <= char <= high for low, high in ranges) != negated


def _star_match(
    pattern: Sequence[Any], text: Sequence[Any], star: Any, one: Callable[[Any, Any], bool]
) -> bool:
    """Whether ``pattern`` matches all of ``text``: ``star`` matches any run of items, every
    other pattern item one item (``one`` says whether it does). The classic two-pointer
    matcher: on a mismatch only the last star grows by one, so time is O(len * len), never
    exponential."""
    p = t = 0
    last_star, star_t = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] != star and one(pattern[p], text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == star:
            last_star, star_t = p, t
            p += 1
        elif last_star >= 0:
            star_t += 1
            p, t = last_star + 1, star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == star:
        p += 1
    return p == len(pattern)


def _tokens(segment: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char in "*?":
            out.append(_Wild(char))
        elif char == "\\" and index + 1 < len(segment):
            index += 1
            out.append(segment[index])
        elif char == "[" and segment.find("]", index + 1) >= 0:
            end = segment.find("]", index + 1)
            out.append(_char_class(segment[index + 1 : end]))
            index = end
        else:
            out.append(char)
        index += 1
    return tuple(out)


def _char_class(body: str) -> _Token:
    """``[...]``: ``!`` or ``^`` first negates; ``a-z`` is a range; ``\\`` escapes."""
    negated = body[:1] in ("!", "^")
    chars = body[1:] if negated else body
    ranges = []
    index = 0
    while index < len(chars):
        if chars[index] == "\\" and index + 1 < len(chars):
            index += 1
        low = chars[index]
        if index + 2 < len(chars) and chars[index + 1] == "-":
            ranges.append((low, chars[index + 2]))
            index += 3
        else:
            ranges.append((low, low))
            index += 1
    return (negated, tuple(ranges))


def ignored(rel: str, patterns: list[Pattern]) -> bool:
    """Whether ``rel`` is excluded: the last pattern matching it or one of its parents wins."""
    parents = _with_parents(rel)
    result = False
    for pattern in patterns:
        if any(pattern.glob.match(path) for path in parents):
            result = not pattern.exclusion
    return result


def _with_parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def read_bounded(path: Path, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` (FileNotFoundError passes).

    Think like the attacker: the context's author chooses what the path is; a fifo would block
    the build forever and a symlink to /dev/zero (or a huge file) would fill the host's memory,
    so only a regular file is read, and only up to the limit."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuildContextError(
                f"{what} {str(path)!r} is not a regular file (a fifo, device or directory): "
                "replace it with a plain file"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BuildContextError(
            f"{what} {str(path)!r} is larger than {limit} bytes: a file this large is not a "
            f"{what}; shorten it"
        )
    return data


def clean_source(source: str, what: str) -> str:
    """A source path relative to its tree; ``..`` that would leave it is refused."""
    cleaned = posixpath.normpath("/" + source).lstrip("/")
    if any(part == ".." for part in posixpath.normpath(source).split("/")):
        raise BuildContextError(
            f"{what}: source {source!r} leads out of the build context: put the file inside "
            "the context directory, or build from a directory that contains it"
        )
    return "" if cleaned == "." else cleaned


class ContextTree:
    """The build context directory, seen through ``.dockerignore``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise BuildContextError(
                f"build context {str(root)!r} is not a directory: pass the directory whose files "
                "COPY and ADD use (often '.')"
            )
        try:
            data = read_bounded(self.root / ".dockerignore", ".dockerignore", MAX_DOCKERIGNORE)
        except FileNotFoundError:
            data = b""
        self.patterns = parse_dockerignore(data.decode("utf-8", errors="replace"))

    def __str__(self) -> str:
        return "the build context"

    def real(self, rel: str, what: str) -> Path:
        """The host path of ``rel``, following symlinks only while they stay inside the context;
        BuildContextError when it is missing, ignored, or a link leads out."""
        if rel and ignored(rel, self.patterns):
            raise BuildContextError(
                f"{what}: {rel!r} is excluded by .dockerignore: remove it from .dockerignore "
                "or copy something else"
            )
        current = ""
        todo = [p for p in rel.split("/") if p]
        links = 0
        while todo:
            part = todo.pop(0)
            candidate = posixpath.join(current, part) if current else part
            host = self.root / candidate
            try:
                st = host.lstat()
            except FileNotFoundError:
                raise BuildContextError(
                    f"{what}: {rel!r} does not exist in the build context {str(self.root)!r}: "
                    "check the path (it is relative to the context, not to the Dockerfile)"
                ) from None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                target = os.readlink(host)
                if links > _MAX_LINKS or target.startswith("/"):
                    raise self._escapes(rel, what, target)
                joined = posixpath.normpath(posixpath.join(current, target))
                if joined == ".." or joined.startswith("../"):
                    raise self._escapes(rel, what, target)
                todo = [p for p in joined.split("/") if p and p != "."] + todo
                current = ""
                continue
            current = candidate
        return self.root / current

    def _escapes(self, rel: str, what: str, target: str) -> BuildContextError:
        return BuildContextError(
            f"{what}: {rel!r} goes through a symlink to {target!r}, which leads out of the build "
            "context (or loops): copy the file into the context instead of linking to it"
        )

    def walk(self, rel: str, what: str) -> Iterator[tuple[str, os.stat_result, Path]]:
        """``rel`` itself (symlinks on the way followed) and, for a directory, everything below
        it that .dockerignore keeps, symlinks not followed; paths relative to ``rel``."""
        top = self.real(rel, what)
        rel_top = str(top.relative_to(self.root)) if top != self.root else ""
        yield "", top.stat(), top
        if top.is_dir():
            for sub, st in self._below(top, rel_top, "", what):
                yield sub, st, top / sub

    def _below(
        self, top: Path, rel_top: str, sub: str, what: str
    ) -> Iterator[tuple[str, os.stat_result]]:
        for name in sorted(os.listdir(top / sub) if sub else os.listdir(top)):
            child = posixpath.join(sub, name) if sub else name
            full_rel = posixpath.join(rel_top, child) if rel_top else child
            if ignored(full_rel, self.patterns):
                continue
            st = (top / child).lstat()
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                yield from self._below(top, rel_top, child, what)

    def glob(self, pattern: str) -> list[str]:
        """The context paths (not ignored) matching a COPY source with wildcards, sorted."""
        glob = Glob.compile(pattern)
        depth = pattern.count("/")
        found = []
        for sub, _ in self._below(self.root, "", "", f"pattern {pattern!r}"):
            if sub.count("/") == depth and glob.match(sub):
                found.append(sub)
        return found


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class LayersTree:
    """The merged filesystem of an image's applied layers (bottom first), read without mounting:
    overlay whiteouts hide lower entries and opaque directories stop the merge, as overlayfs
    does. Used for COPY --from; symlinks are copied as they are, never followed."""

    def __init__(self, layers: tuple[Path, ...], name: str) -> None:
        self.layers = layers
        self.name = name

    def __str__(self) -> str:
        return self.name

    def lookup(self, rel: str) -> tuple[Path, os.stat_result] | None:
        """The host path and lstat of ``rel`` in the topmost layer that has it; None when no
        layer has it, or a layer above deletes it (whiteout) or hides it (opaque directory)."""
        parts = [p for p in rel.split("/") if p]
        for layer in reversed(self.layers):
            for depth in range(1, len(parts) + 1):
                host = layer.joinpath(*parts[:depth])
                try:
                    st = host.lstat()
                except (FileNotFoundError, NotADirectoryError):
                    break
                if _is_whiteout(st):
                    return None
                if depth == len(parts):
                    return host, st
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if _is_opaque(host):
                    return self._in_layer(layer, parts)
            if not parts:
                return layer, layer.lstat()
        return None

    @staticmethod
    def _in_layer(layer: Path, parts: list[str]) -> tuple[Path, os.stat_result] | None:
        host = layer.joinpath(*parts)
        try:
            st = host.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if _is_whiteout(st) else (host, st)

    def walk(self, rel: str, what: str) -> Iterator[tuple[str, os.stat_result, Path]]:
        """As `ContextTree.walk`, over the merged layers."""
        found = self.lookup(rel)
        if found is None:
            raise BuildContextError(f"{what}: {rel or '/'!r} does not exist in {self.name}")
        host, st = found
        yield "", st, host
        if stat.S_ISDIR(st.st_mode):
            yield from self._below(rel, "")

    def _entries(self, rel: str) -> dict[str, tuple[Path, os.stat_result]]:
        """The merged listing of directory ``rel``: each layer's entries from the top down,
        until a layer where ``rel`` (or a directory above it) is not a directory, is deleted or
        is opaque."""
        seen: dict[str, tuple[Path, os.stat_result]] = {}
        hidden: set[str] = set()
        parts = [p for p in rel.split("/") if p]
        for layer in reversed(self.layers):
            state = _directory_in(layer, parts)
            if state == "missing":
                continue
            if state == "hidden":
                break
            directory = layer.joinpath(*parts)
            for name in os.listdir(directory):
                if name in seen or name in hidden:
                    continue
                child_st = (directory / name).lstat()
                if _is_whiteout(child_st):
                    hidden.add(name)
                else:
                    seen[name] = (directory / name, child_st)
            if state == "opaque":
                break
        return seen

    def _below(self, rel: str, sub: str) -> Iterator[tuple[str, os.stat_result, Path]]:
        here = posixpath.join(rel, sub) if sub else rel
        for name, (host, st) in sorted(self._entries(here).items()):
            child = posixpath.join(sub, name) if sub else name
            yield child, st, host
            if stat.S_ISDIR(st.st_mode):
                yield from self._below(rel, child)


def _directory_in(layer: Path, parts: list[str]) -> str:
    """What one layer holds at ``parts``, checked component by component with lstat (so that a
    symlink in a layer, even to an absolute host path, is never followed): "dir", "opaque"
    (a directory here, and the layers below do not show through), "missing" (look below), or
    "hidden" (missing here, and nothing below shows through: a whiteout, a file or a symlink,
    or an opaque directory, on the way)."""
    opaque = False
    for depth in range(len(parts) + 1):
        path = layer.joinpath(*parts[:depth])
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return "hidden" if opaque else "missing"
        if not stat.S_ISDIR(st.st_mode):
            return "hidden"
        opaque = opaque or (depth > 0 and _is_opaque(path))
    return "opaque" if opaque else "dir"
