"""Variable substitution against the cases of Docker's own shell lexer tests
(moby/buildkit frontend/dockerfile/shell/envVarTest, environment PWD=/home, SHELL=bash, NULL="")."""

from __future__ import annotations

import pytest

from sandkit.build.substitution import substitute
from sandkit.errors import BuildError, DockerfileSyntaxError

ENV = {"PWD": "/home", "SHELL": "bash", "NULL": ""}

CASES = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he\\'llo", "he'llo"),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\\\", "hello\\"),
    ('"hel\'lo"', "hel'lo"),
    ("'hello\\'", "hello\\"),
    ("'hello\\there'", "hello\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("he\\${}xx", "he${}xx"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ("'$PWD'", "$PWD"),
    ("'\"hello\"'", '"hello"'),
    ("he${PWD+000}xx", "he000xx"),
    ("he${PWD-000}xx", "he/homexx"),
    ("he${XXX-000}xx", "he000xx"),
    ("he${XXX+000}xx", "hexx"),
    ("he${NULL-000}xx", "hexx"),
    ("he${NULL:-000}xx", "he000xx"),
]

SYNTAX_ERRORS = [
    "he'llo",
    "he\\\\'llo",
    '"hello',
    '"hello\\"',
    "'hello",
    "${}",
    "he${}xx",
    "he${.}",
    "he${XXX:YYY}",
    "he${PWD",
    "he${PWD=000}xx",
]


@pytest.mark.parametrize(("word", "expected"), CASES)
def test_substitutes_as_docker(word: str, expected: str) -> None:
    assert substitute(word, ENV) == expected


@pytest.mark.parametrize("word", SYNTAX_ERRORS)
def test_malformed_words_are_syntax_errors_with_the_line(word: str) -> None:
    with pytest.raises(DockerfileSyntaxError) as caught:
        substitute(word, ENV, line=7)
    assert caught.value.line == 7
    assert word in str(caught.value)


@pytest.mark.parametrize("word", ["he${XXX?}", "he${XXX:?}", "he${NULL:?}", "${XXX:?give XXX}"])
def test_required_variables_stop_the_build(word: str) -> None:
    with pytest.raises(BuildError, match="line 3") as caught:
        substitute(word, ENV, line=3)
    assert "--build-arg" in str(caught.value)


def test_backtick_escape_character() -> None:
    assert substitute("C:\\dir`$PWD", ENV, escape="`") == "C:\\dir$PWD"
