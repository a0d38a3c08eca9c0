"""The sources COPY and ADD read: the build context (with ``.dockerignore``) or another stage's
or image's layers; both seen as a read-only tree of relative POSIX paths that cannot be left.

Think like the attacker: a context may come from an untrusted checkout. A source path with
``..``, or a symlink on the way to a source that points out of the context, is refused
(:class:`BuildContextError`); symlinks met inside a copied directory are copied as symlinks, never
followed; fifos, sockets and devices are refused (reading a fifo would block the build forever).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import attrs

from ..errors import BuildContextError
from ..images.layers import OPAQUE_XATTRS
from .parser import docker_lines

_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS


@attrs.frozen
class Pattern:
    """One line of ``.dockerignore``: a path pattern, ``!`` for an exception."""

    regex: re.Pattern[str]
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
        patterns.append(Pattern(re.compile(_glob_regex(cleaned)), exclusion))
    return patterns


def _glob_regex(pattern: str) -> str:
    """A Go filepath.Match pattern (plus ``**`` for any number of directories) as a regex."""
    out = []
    for index, segment in enumerate(pattern.split("/")):
        sep = "/" if index else ""
        if segment == "**":
            out.append(f"(?:{sep}.*)?" if index else "(?:.*)?")
            continue
        out.append(re.escape(sep) + _segment_regex(segment))
    regex = "".join(out)
    if regex.startswith("(?:.*)?"):
        regex = "(?:.*/)?" + regex[len("(?:.*)?") :].lstrip("/")
    return f"^{regex}$"


def _segment_regex(segment: str) -> str:
    out = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and index + 1 < len(segment):
            index += 1
            out.append(re.escape(segment[index]))
        elif char == "[":
            end = segment.find("]", index + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = segment[index + 1 : end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def ignored(rel: str, patterns: list[Pattern]) -> bool:
    """Whether ``rel`` is excluded: the last pattern matching it or one of its parents wins."""
    parents = _with_parents(rel)
    result = False
    for pattern in patterns:
        if any(pattern.regex.match(path) for path in parents):
            result = not pattern.exclusion
    return result


def _with_parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


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
            text = (self.root / ".dockerignore").read_text()
        except FileNotFoundError:
            text = ""
        self.patterns = parse_dockerignore(text)

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
        regex = re.compile(_glob_regex(pattern))
        depth = pattern.count("/")
        found = []
        for sub, _ in self._below(self.root, "", "", f"pattern {pattern!r}"):
            if sub.count("/") == depth and regex.match(sub):
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
