"""A small strict Dockerfile parser: text in, a list of :class:`Instruction` out.

It follows the grammar of Docker's own parser (moby/buildkit ``frontend/dockerfile/parser``):
parser directives (``# escape=`` and ``# syntax=``) before anything else, comment lines, line
continuations with the escape character (comment and empty lines inside a continuation are
dropped), a case-insensitive keyword, ``--name=value`` flags, and the JSON ("exec") form of the
instructions that have one. Unlike Docker's parser it checks each instruction's arguments here,
so that every mistake is reported with the line and column it comes from, before a build starts.

Variables are NOT substituted here: that needs the build's state (ARG, ENV, build args) and is
done by the engine with :mod:`sandkit.build.substitution`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import attrs

from ..errors import DockerfileSyntaxError

# The instructions a build runs, and for each the flags it takes (as Docker's documentation
# lists them; BuildKit-only flags such as RUN --mount are refused with a clear error).
FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "RUN": frozenset(),
    "CMD": frozenset(),
    "ENTRYPOINT": frozenset(),
    "SHELL": frozenset(),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}),
    "ENV": frozenset(),
    "ARG": frozenset(),
    "LABEL": frozenset(),
    "WORKDIR": frozenset(),
    "USER": frozenset(),
    "EXPOSE": frozenset(),
    "VOLUME": frozenset(),
    "STOPSIGNAL": frozenset(),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
# Instructions whose arguments may be a JSON array of strings.
JSON_FORM = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
# Instructions whose shell form is one string handed to the shell, not a list of words.
SHELL_STRING = frozenset({"RUN", "CMD", "ENTRYPOINT"})
REFUSED = {
    "ONBUILD": "ONBUILD triggers are not supported by sandkit build; run the instructions in the "
    "Dockerfile that uses this image instead",
    "MAINTAINER": 'MAINTAINER is deprecated; use LABEL maintainer="..." instead',
}

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?:=(.*))?$", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


@attrs.frozen
class Instruction:
    """One Dockerfile instruction, before variable substitution.

    ``args`` are the words (or the JSON array's items); for the shell form of RUN, CMD and
    ENTRYPOINT it is the single command string. ENV and LABEL keep ``key, value`` pairs
    flattened (``("A", "1", "B", "2")``), ARG keeps each ``NAME`` or ``NAME=default`` word.
    """

    cmd: str
    args: tuple[str, ...]
    flags: tuple[tuple[str, str], ...] = ()
    json: bool = False
    line: int = 0
    original: str = ""

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The value of ``--name=value``, else ``default``."""
        for key, value in self.flags:
            if key == name:
                return value
        return default


@attrs.frozen
class _Logical:
    """A logical line (continuations joined) and where each of its characters came from."""

    text: str
    where: tuple[tuple[int, int], ...]  # (line, column) of each character, 1-based

    def at(self, offset: int) -> tuple[int, int]:
        if not self.where:
            return (0, 1)
        return self.where[min(max(offset, 0), len(self.where) - 1)]

    def fail(self, message: str, offset: int = 0) -> DockerfileSyntaxError:
        line, column = self.at(offset)
        return DockerfileSyntaxError(message, line, column)


def docker_lines(text: str) -> list[str]:
    """``text`` split into lines as Docker's scanner splits them: at "\\n" only (a "\\r" before
    it dropped), not at the other breaks `str.splitlines` knows (\\v, \\f, \\x1c-\\x1e, \\x85,
    U+2028/9), which would make sandkit read other instructions than Docker from one file."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start one
    return lines


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile; :class:`DockerfileSyntaxError` for the first mistake."""
    lines = docker_lines(text)
    escape, first = _directives(lines)
    instructions = [
        _instruction(logical, escape) for logical in _logical_lines(lines, first, escape)
    ]
    if not instructions:
        raise DockerfileSyntaxError("the Dockerfile has no instructions: start it with FROM", 1)
    first_step = next((ins for ins in instructions if ins.cmd != "ARG"), None)
    if first_step is None or first_step.cmd != "FROM":
        line = first_step.line if first_step else instructions[-1].line
        raise DockerfileSyntaxError(
            "the first instruction after the global ARGs must be FROM", line
        )
    return instructions


def _directives(lines: list[str]) -> tuple[str, int]:
    """The escape character and the index of the first line after the parser directives."""
    escape = "\\"
    seen: set[str] = set()
    for index, raw in enumerate(lines):
        match = _DIRECTIVE.match(raw.strip())
        if not match or match.group(1).lower() not in ("escape", "syntax", "check"):
            return escape, index
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileSyntaxError(f"parser directive {name!r} is given twice", index + 1)
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileSyntaxError(
                    f"invalid escape character {value!r}: use \\ or `",
                    index + 1,
                    raw.index(value) + 1,
                )
            escape = value
    return escape, len(lines)


def _logical_lines(lines: list[str], first: int, escape: str) -> Iterator[_Logical]:
    """Join continued lines; drop comments and empty lines (also inside a continuation)."""
    text: list[str] = []
    where: list[tuple[int, int]] = []
    for index in range(first, len(lines)):
        raw = lines[index]
        stripped = raw.lstrip()
        if not stripped or (stripped.startswith("#")):
            continue
        column = len(raw) - len(stripped) + 1 if not text else 1
        body = stripped if not text else raw
        continued = body.rstrip().endswith(escape)
        if continued:
            body = body.rstrip()[:-1]
        text.append(body)
        where.extend((index + 1, column + i) for i in range(len(body)))
        if not continued:
            yield _Logical("".join(text), tuple(where))
            text, where = [], []
    if text:
        yield _Logical("".join(text), tuple(where))


def _instruction(logical: _Logical, escape: str) -> Instruction:
    text = logical.text
    keyword = text.split(None, 1)[0]
    cmd = keyword.upper()
    if cmd in REFUSED:
        raise logical.fail(REFUSED[cmd])
    if cmd not in FLAGS:
        known = ", ".join(sorted(FLAGS))
        raise logical.fail(f"unknown instruction {keyword!r}: the instructions are {known}")
    rest_at = len(keyword)
    while rest_at < len(text) and text[rest_at].isspace():
        rest_at += 1
    flags, rest_at = _flags(logical, cmd, rest_at)
    rest = text[rest_at:].rstrip()
    line = logical.at(0)[0]
    base = Instruction(cmd, (), flags, line=line, original=text.strip())
    if cmd in JSON_FORM and rest.startswith("["):
        items = _json_array(rest)
        if items is not None:
            return _checked(logical, attrs.evolve(base, args=items, json=True), rest_at)
    if cmd == "SHELL":
        raise logical.fail('SHELL takes a JSON array of strings: SHELL ["/bin/sh", "-c"]', rest_at)
    if cmd == "HEALTHCHECK":
        return _checked(logical, _healthcheck(rest, base), rest_at)
    if cmd in SHELL_STRING:
        args: tuple[str, ...] = (rest,) if rest else ()
    elif cmd in ("ENV", "LABEL"):
        args = _pairs(logical, cmd, rest, rest_at, escape)
    else:
        args = tuple(word for word, _ in _words(logical, rest, rest_at, escape))
    return _checked(logical, attrs.evolve(base, args=args), rest_at)


def _healthcheck(rest: str, base: Instruction) -> Instruction:
    """HEALTHCHECK NONE, or HEALTHCHECK CMD followed by a command in shell or JSON form."""
    kind, _, command = rest.partition(" ")
    command = command.strip()
    if kind.upper() != "CMD" or not command:
        return attrs.evolve(base, args=tuple(rest.split()))
    items = _json_array(command) if command.startswith("[") else None
    if items is not None:
        return attrs.evolve(base, args=("CMD", *items), json=True)
    return attrs.evolve(base, args=("CMD", command))


def _flags(logical: _Logical, cmd: str, at: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """The leading ``--name=value`` words, checked against what ``cmd`` accepts."""
    text = logical.text
    flags: list[tuple[str, str]] = []
    while text.startswith("--", at):
        end = at
        while end < len(text) and not text[end].isspace():
            end += 1
        word = text[at:end]
        next_at = end
        while next_at < len(text) and text[next_at].isspace():
            next_at += 1
        if word == "--":
            return tuple(flags), next_at
        match = _FLAG.match(word)
        if not match:
            raise logical.fail(f"malformed flag {word!r}: write --name=value", at)
        name, value = match.group(1), match.group(2)
        if name not in FLAGS[cmd]:
            allowed = ", ".join(f"--{f}" for f in sorted(FLAGS[cmd])) or "none"
            raise logical.fail(f"{cmd} does not take the flag --{name} (it takes: {allowed})", at)
        if value is None or value == "":
            raise logical.fail(f"flag --{name} needs a value: --{name}=VALUE", at)
        if any(key == name for key, _ in flags):
            raise logical.fail(f"flag --{name} is given twice", at)
        flags.append((name, value))
        at = next_at
    return tuple(flags), at


def _json_array(rest: str) -> tuple[str, ...] | None:
    """The items of a JSON array of strings, or None when ``rest`` is not one (shell form)."""
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return tuple(value)


def _words(logical: _Logical, rest: str, at: int, escape: str) -> Iterator[tuple[str, int]]:
    """Whitespace-separated words (quotes and escapes kept for substitution), with offsets."""
    word: list[str] = []
    start = 0
    quote = ""
    index = 0
    while index < len(rest):
        char = rest[index]
        if not word and not quote and char.isspace():
            index += 1
            continue
        if not word:
            start = index
        if char == escape and quote != "'" and index + 1 < len(rest):
            word.append(rest[index : index + 2])
            index += 2
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char.isspace():
            yield "".join(word), at + start
            word = []
            index += 1
            continue
        word.append(char)
        index += 1
    if quote:
        raise logical.fail(
            f"unterminated quote {quote}: close it on the same instruction", at + start
        )
    if word:
        yield "".join(word), at + start


def _pairs(logical: _Logical, cmd: str, rest: str, at: int, escape: str) -> tuple[str, ...]:
    """ENV and LABEL: ``K=V K2=V2`` pairs, or the old ``K the rest`` form."""
    words = list(_words(logical, rest, at, escape))
    if not words:
        raise logical.fail(f"{cmd} needs at least one KEY=VALUE", at)
    if "=" not in words[0][0]:
        key, key_at = words[0]
        value = rest[key_at - at + len(key) :].strip()
        if not value:
            raise logical.fail(f"{cmd} {key} has no value: write {cmd} {key}=VALUE", key_at)
        return (key, value)
    pairs: list[str] = []
    for word, word_at in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise logical.fail(f"{cmd} expects KEY=VALUE, found {word!r}", word_at)
        pairs += [key, value]
    return tuple(pairs)


def _checked(logical: _Logical, ins: Instruction, at: int) -> Instruction:
    """Argument counts and shapes that Docker checks when it turns the tree into instructions."""
    cmd, args = ins.cmd, ins.args
    need = {
        "FROM": 1,
        "COPY": 2,
        "ADD": 2,
        "WORKDIR": 1,
        "USER": 1,
        "EXPOSE": 1,
        "VOLUME": 1,
        "STOPSIGNAL": 1,
        "HEALTHCHECK": 1,
        "ARG": 1,
        "RUN": 1,
        "SHELL": 1,
    }.get(cmd, 0)
    if len(args) < need:
        raise logical.fail(_usage(cmd), at)
    if cmd == "FROM" and not (len(args) == 1 or (len(args) == 3 and args[1].upper() == "AS")):
        raise logical.fail("FROM takes IMAGE [AS NAME]", at)
    if cmd in ("WORKDIR", "USER", "STOPSIGNAL") and len(args) != 1:
        raise logical.fail(f"{cmd} takes exactly one argument", at)
    if cmd == "ARG":
        for word in args:
            if not _NAME.match(word.partition("=")[0]):
                raise logical.fail(f"ARG name {word.partition('=')[0]!r} is not a valid name", at)
    if cmd == "HEALTHCHECK":
        _check_healthcheck(logical, ins, at)
    return ins


def _check_healthcheck(logical: _Logical, ins: Instruction, at: int) -> None:
    kind = ins.args[0].upper()
    if kind == "NONE":
        if len(ins.args) != 1 or ins.flags:
            raise logical.fail("HEALTHCHECK NONE takes no other arguments", at)
    elif kind != "CMD" or len(ins.args) < 2:
        raise logical.fail("HEALTHCHECK takes [OPTIONS] CMD command, or NONE", at)


def _usage(cmd: str) -> str:
    return {
        "FROM": "FROM needs an image: FROM IMAGE[:TAG] [AS NAME], or FROM scratch",
        "COPY": "COPY needs a source and a destination: COPY SRC... DEST",
        "ADD": "ADD needs a source and a destination: ADD SRC... DEST",
        "RUN": "RUN needs a command",
        "ARG": "ARG needs a name: ARG NAME[=DEFAULT]",
        "SHELL": 'SHELL needs a JSON array: SHELL ["/bin/sh", "-c"]',
    }.get(cmd, f"{cmd} needs an argument")
