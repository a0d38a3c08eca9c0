"""The Dockerfile parser: Docker's grammar (continuations, comments, directives, flags, JSON and
shell forms) and a clear error with line and column for each mistake."""

from __future__ import annotations

import pytest

from sandkit.build.parser import Instruction, parse
from sandkit.errors import DockerfileSyntaxError


def test_instructions_in_docker_forms() -> None:
    text = """# syntax=docker/dockerfile:1
ARG BASE=alpine
from ${BASE} AS build
RUN echo one \\
  # a comment inside a continuation is dropped

  two
RUN ["echo", "exec form"]
COPY --chown=1:2 --from=build a "b c" /dst/
ENV A=1 B="2 3"
ENV OLD the rest of the line
HEALTHCHECK --interval=5s CMD ["true"]
CMD echo done
"""
    got = parse(text)
    assert [ins.cmd for ins in got] == [
        "ARG",
        "FROM",
        "RUN",
        "RUN",
        "COPY",
        "ENV",
        "ENV",
        "HEALTHCHECK",
        "CMD",
    ]
    assert got[1].args == ("${BASE}", "AS", "build")
    assert got[2] == Instruction("RUN", ("echo one   two",), line=4, original="RUN echo one   two")
    assert got[3].json and got[3].args == ("echo", "exec form")
    assert got[4].flags == (("chown", "1:2"), ("from", "build"))
    assert got[4].args == ("a", '"b c"', "/dst/")
    assert got[5].args == ("A", "1", "B", '"2 3"')
    assert got[6].args == ("OLD", "the rest of the line")
    assert got[7].json and got[7].args == ("CMD", "true") and got[7].flag("interval") == "5s"
    assert got[8].args == ("echo done",) and not got[8].json


@pytest.mark.parametrize("separator", ["\v", "\f", "\x1c", "\x85", "\u2028"])
def test_lines_break_at_newline_only_as_in_docker(separator: str) -> None:
    # Docker's scanner splits at "\n" alone: these stay inside the RUN's command.
    got = parse(f"FROM scratch\r\nRUN echo a{separator}CMD b\n")
    assert [ins.cmd for ins in got] == ["FROM", "RUN"]
    assert got[1].args == (f"echo a{separator}CMD b",)


def test_escape_directive_changes_the_continuation_character() -> None:
    got = parse("# escape=`\nFROM scratch\nCOPY a `\n  C:\\b\n")
    assert got[1].args == ("a", "C:\\b")


def test_malformed_json_is_the_shell_form_as_in_docker() -> None:
    # Docker runs `RUN ["a"` through the shell: it is not valid JSON.
    assert parse('FROM scratch\nRUN ["a"\n')[1].args == ('["a"',)


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("FROM a\nBOGUS x\n", 2, 1, "unknown instruction 'BOGUS'"),
        ("FROM a\nONBUILD RUN x\n", 2, 1, "ONBUILD"),
        ("FROM a\nCOPY onlyone\n", 2, 6, "COPY SRC... DEST"),
        ("FROM a\nRUN --mount=type=cache make\n", 2, 5, "does not take the flag --mount"),
        ("FROM a\nCOPY --from x y\n", 2, 6, "--from=VALUE"),
        ("FROM a\nCOPY --chmod=1 --chmod=2 x y\n", 2, 16, "given twice"),
        ('FROM a\nENV A="unclosed\n', 2, 5, "unterminated quote"),
        ("FROM a\n  LABEL a=1 \\\n   b\n", 3, 4, "KEY=VALUE"),
        ("FROM a\nSHELL /bin/sh -c\n", 2, 7, "JSON array"),
        ("FROM a\nWORKDIR /a /b\n", 2, 9, "exactly one"),
        ("FROM a\nARG 1x=2\n", 2, 5, "not a valid name"),
        ("FROM a AS\n", 1, 6, "IMAGE [AS NAME]"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, 13, "NONE"),
        ("RUN true\n", 1, 1, "must be FROM"),
        ("# only a comment\n\n", 1, 1, "no instructions"),
        ("# escape=x\nFROM a\n", 1, 10, "escape character"),
    ],
)
def test_mistakes_name_line_and_column(text: str, line: int, column: int, words: str) -> None:
    with pytest.raises(DockerfileSyntaxError) as caught:
        parse(text)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert words in str(caught.value)
    assert f"line {line}, column {column}" in str(caught.value)
