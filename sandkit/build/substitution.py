"""Variable substitution in Dockerfile words, as Docker's shell lexer does it.

``$NAME`` and ``${NAME}`` take a variable's value (empty when unset); ``${NAME:-word}`` gives
``word`` when NAME is unset or empty, ``${NAME-word}`` only when unset; ``${NAME:+word}`` gives
``word`` when NAME is set and not empty, ``${NAME+word}`` when set; ``${NAME:?message}`` and
``${NAME?message}`` stop the build with ``message``. Single quotes keep their text as it is,
double quotes allow substitution, and both are removed; the escape character makes the next
character literal (inside double quotes only before ``$``, ``"`` and itself, as in a shell).

Docker substitutes in the arguments of ADD, ARG, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL,
USER, VOLUME and WORKDIR; RUN, CMD and ENTRYPOINT are left to the shell in the container.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import BuildError, DockerfileSyntaxError


def substitute(word: str, env: Mapping[str, str], *, line: int = 0, escape: str = "\\") -> str:
    """``word`` with its variables replaced and its quotes removed."""
    return _Lexer(word, env, line, escape).word(stop="")


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], line: int, escape: str) -> None:
        self.text = text
        self.env = env
        self.line = line
        self.escape = escape
        self.pos = 0

    def _error(self, message: str) -> DockerfileSyntaxError:
        return DockerfileSyntaxError(f"{message} in: {self.text}", self.line, self.pos + 1)

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def word(self, stop: str) -> str:
        """Text up to ``stop`` (one character, or "" for the end), substituted."""
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if stop and char == stop:
                return "".join(out)
            self.pos += 1
            if char == self.escape:
                out.append(self._peek())
                self.pos += 1
            elif char == "'":
                out.append(self._single_quoted())
            elif char == '"':
                out.append(self._double_quoted())
            elif char == "$":
                out.append(self._variable())
            else:
                out.append(char)
        if stop:
            raise self._error(f"missing {stop!r}")
        return "".join(out)

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise self._error("unterminated single quote")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == self.escape and self._peek() in ('"', "$", self.escape):
                out.append(self._peek())
                self.pos += 1
            elif char == "$":
                out.append(self._variable())
            else:
                out.append(char)
        raise self._error("unterminated double quote")

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] == "_"
        ):
            self.pos += 1
        return self.text[start : self.pos]

    def _variable(self) -> str:
        """After a ``$``: ``NAME``, ``{NAME...}``, or a lone ``$`` kept as it is."""
        if self._peek() == "{":
            self.pos += 1
            return self._braced()
        if self._peek()[:1].isalpha() or self._peek() == "_":
            return self.env.get(self._name(), "")
        if self._peek()[:1].isdigit():
            # A shell's positional parameter: one digit, always empty in a Dockerfile.
            self.pos += 1
            return ""
        return "$"

    def _braced(self) -> str:
        name = self._name()
        if not name or name[0].isdigit():
            raise self._error("bad substitution: ${ must be followed by a variable name")
        value = self.env.get(name)
        op = self._peek()
        if op == "}":
            self.pos += 1
            return value or ""
        if not op:
            raise self._error("missing '}'")
        colon = op == ":"
        if colon:
            self.pos += 1
            op = self._peek()
        if op not in ("-", "+", "?"):
            raise self._error(f"unsupported modifier in ${{{name}...}}: use :-, -, :+, +, :? or ?")
        self.pos += 1
        word = self.word(stop="}")
        self.pos += 1
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return value if is_set and value is not None else word
        if op == "+":
            return word if is_set else ""
        if not is_set:
            raise BuildError(
                f"Dockerfile line {self.line}: {word or name + ' is not set'}: set it with an "
                f"ARG or ENV before this line, or with --build-arg {name}=VALUE"
            )
        return value or ""
