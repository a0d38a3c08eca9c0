"""The Python DSL for builds: ``Image.from_("base:1").run(...).copy(...).cmd([...])``.

A chain is an `ImageRecipe`: an immutable list of Dockerfile instructions. It is rendered as
Dockerfile text (`dockerfile()`) and built by the same engine, cache and store as
`sandkit build`, so a chain and the equivalent Dockerfile give the same image, digest included.
Every value is rendered in a form the Dockerfile parser reads back as exactly that value (exec
forms as JSON, ENV and LABEL values double-quoted), and text that no Dockerfile line can hold
(a newline in a shell-form command, a line ending in the escape character) is refused here,
so no argument can turn into an instruction of its own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import BuildError

if TYPE_CHECKING:
    from ..images.image import Image

# Characters no Dockerfile line can carry: the line would end there. Docker ends lines at \n
# only, but Python's str.splitlines (sandkit's parser) at all of these too, and refusing them is
# the one choice under which both read the DSL's text as the same instructions.
_LINE_BREAKS = re.compile("[\n\r\x00\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# A key of ENV, ARG or LABEL: no space, quote or '=' (they would split the pair).
_NAME = re.compile(r"[^\s=\"'\\]+")
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# In a double-quoted value, '"' and '\' are escaped; '\$' is kept so that it stays a literal '$'
# (a bare '$VAR' is substituted, as in a Dockerfile).
_QUOTED_SPECIAL = re.compile(r'\\(?!\$)|"')
# A value that reads the same quoted or not: no whitespace, quote or escape character.
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=${}-]+")


def _refuse_line_breaks(what: str, text: str) -> str:
    if _LINE_BREAKS.search(text):
        raise BuildError(
            f"{what} {text!r} contains a line break (or NUL), which no Dockerfile line can hold: "
            "remove it (for a multi-line script, pass the exec form: run(['sh', '-c', script]))"
        )
    return text


def _quoted(what: str, value: str) -> str:
    """``value`` as ENV and LABEL read it back: as it is when it has nothing the parser treats
    specially (as a person would write it, so the line matches a hand-written Dockerfile's),
    else in double quotes."""
    _refuse_line_breaks(what, value)
    if _PLAIN.fullmatch(value):
        return value
    return '"' + _QUOTED_SPECIAL.sub(lambda m: "\\" + m.group(0), value) + '"'


def _exec_form(what: str, argv: Sequence[str]) -> str:
    """A JSON array: the exec form of RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK."""
    if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
        raise BuildError(f"{what} takes a list of strings for its exec form, not {argv!r}")
    if not argv:
        raise BuildError(f"{what} needs at least one argument (the program to run)")
    return json.dumps(list(argv), ensure_ascii=False)


def _shell_form(what: str, command: str) -> str:
    """A shell-form command: one line that does not read as a JSON array (`_with` refuses one
    that would continue on the next line)."""
    text = _refuse_line_breaks(what, command).strip()
    if not text:
        raise BuildError(f"{what} needs a command")
    if text.startswith("["):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            raise BuildError(
                f"{what} {command!r} reads as the exec form (a JSON array): pass a list instead"
            )
    return text


def _command(what: str, command: str | Sequence[str]) -> str:
    return _shell_form(what, command) if isinstance(command, str) else _exec_form(what, command)


def _word(what: str, text: str) -> str:
    """A single word (a path, user, port, signal): no whitespace, no line break."""
    if not isinstance(text, str) or not text or any(c.isspace() for c in text):
        raise BuildError(f"{what} must be a non-empty string without whitespace, not {text!r}")
    return text


def _pairs(what: str, items: Mapping[str, str], key_pattern: re.Pattern[str]) -> str:
    if not items:
        raise BuildError(f"{what} needs at least one NAME=value pair")
    rendered = []
    for key, value in items.items():
        if not key_pattern.fullmatch(key):
            raise BuildError(f"{what} name {key!r} is not valid: use letters, digits and '_'")
        rendered.append(f"{key}={_quoted(what, str(value))}")
    return " ".join(rendered)


def _duration(what: str, seconds: float) -> str:
    """A HEALTHCHECK duration in whole milliseconds ("1500ms"), as Docker parses it."""
    if seconds < 0:
        raise BuildError(f"HEALTHCHECK {what} must not be negative, not {seconds!r}")
    return f"{round(seconds * 1000)}ms"


@attrs.frozen
class _Step:
    """One instruction: its keyword and its arguments as the Dockerfile line has them."""

    keyword: str
    text: str
    # The recipe a COPY --from reads (rendered as an earlier stage), if any.
    source: ImageRecipe | None = None


@attrs.frozen
class ImageRecipe:
    """An image to build: a base and the instructions on it (see the module's docstring).

    Each method returns a new recipe, so a chain can be branched. ``build(tag=...)`` builds it
    (a step already built is taken from the cache), and a `Container` given a recipe builds it
    on start. ``context`` is the directory COPY and ADD read from (default: the working
    directory when `from_` was called).
    """

    base: str | ImageRecipe
    context: Path
    steps: tuple[_Step, ...] = ()
    platform: str | None = None

    @classmethod
    def from_(
        cls,
        base: str | ImageRecipe,
        *,
        context: str | os.PathLike[str] | None = None,
        platform: str | None = None,
    ) -> ImageRecipe:
        """A recipe on ``base`` (see `Image.from_`)."""
        if isinstance(base, str):
            _word("FROM image", base)
        if platform is not None:
            _word("FROM --platform", platform)
        return cls(
            base, Path(context if context is not None else os.getcwd()).absolute(), (), platform
        )

    def _with(self, keyword: str, text: str, source: ImageRecipe | None = None) -> ImageRecipe:
        if text.endswith("\\"):  # a word such as WORKDIR's: the next line would continue it
            raise BuildError(
                f"{keyword} {text!r} ends in '\\', which a Dockerfile reads as 'continued on the "
                "next line': remove it"
            )
        return attrs.evolve(self, steps=(*self.steps, _Step(keyword, text, source)))

    # --- instructions ------------------------------------------------------------------------

    def run(self, command: str | Sequence[str]) -> ImageRecipe:
        """RUN: a string runs under the shell (``SHELL``, default ``/bin/sh -c``), a list as is."""
        return self._with("RUN", _command("RUN", command))

    def copy(
        self,
        src: str | Sequence[str],
        dest: str,
        *,
        chown: str | None = None,
        chmod: str | int | None = None,
        from_: str | ImageRecipe | None = None,
    ) -> ImageRecipe:
        """COPY ``src`` (a path or glob in the context, or a list of them) to ``dest``;
        ``from_``: another recipe (built as an earlier stage) or an image to copy from."""
        text = self._transfer_text("COPY", src, dest, chown, chmod, from_)
        return self._with("COPY", text, from_ if isinstance(from_, ImageRecipe) else None)

    def add(
        self,
        src: str | Sequence[str],
        dest: str,
        *,
        chown: str | None = None,
        chmod: str | int | None = None,
    ) -> ImageRecipe:
        """ADD: as `copy`, and a local tar archive is unpacked at ``dest``."""
        return self._with("ADD", self._transfer_text("ADD", src, dest, chown, chmod, None))

    def env(self, values: Mapping[str, str] | None = None, /, **more: str) -> ImageRecipe:
        """ENV NAME=value...; ``$VAR`` in a value is substituted as in a Dockerfile (``\\$``
        keeps a literal ``$``)."""
        return self._with("ENV", _pairs("ENV", {**(values or {}), **more}, _NAME))

    def arg(self, name: str, default: str | None = None) -> ImageRecipe:
        """ARG NAME[=default]: set with ``build(build_args={NAME: ...})``."""
        if not _ARG_NAME.fullmatch(name):
            raise BuildError(f"ARG name {name!r} is not valid: use letters, digits and '_'")
        return self._with("ARG", name if default is None else _pairs("ARG", {name: default}, _NAME))

    def label(self, values: Mapping[str, str] | None = None, /, **more: str) -> ImageRecipe:
        """LABEL key=value... (keys with dots or dashes go in the mapping)."""
        items = {**(values or {}), **more}
        if not items:
            raise BuildError("LABEL needs at least one key=value pair")
        return self._with(
            "LABEL",
            " ".join(f"{_quoted('LABEL', k)}={_quoted('LABEL', str(v))}" for k, v in items.items()),
        )

    def workdir(self, path: str) -> ImageRecipe:
        """WORKDIR: made if missing; relative paths are taken from the previous WORKDIR."""
        return self._with("WORKDIR", _word("WORKDIR", path))

    def user(self, user: str | int) -> ImageRecipe:
        """USER name[:group] or uid[:gid]."""
        return self._with("USER", _word("USER", str(user)))

    def entrypoint(self, command: str | Sequence[str]) -> ImageRecipe:
        """ENTRYPOINT: a list (exec form) or a string (run under the shell)."""
        return self._with("ENTRYPOINT", _command("ENTRYPOINT", command))

    def cmd(self, command: str | Sequence[str]) -> ImageRecipe:
        """CMD: a list (exec form) or a string (run under the shell)."""
        return self._with("CMD", _command("CMD", command))

    def shell(self, argv: Sequence[str]) -> ImageRecipe:
        """SHELL: the program shell-form RUN, CMD and ENTRYPOINT run under from here on."""
        return self._with("SHELL", _exec_form("SHELL", argv))

    def expose(self, *ports: int | str) -> ImageRecipe:
        """EXPOSE 80 53/udp ..."""
        if not ports:
            raise BuildError("EXPOSE needs at least one port")
        return self._with("EXPOSE", " ".join(_word("EXPOSE port", str(p)) for p in ports))

    def volume(self, *paths: str) -> ImageRecipe:
        """VOLUME: paths a container gets a fresh volume at."""
        if not paths:
            raise BuildError("VOLUME needs at least one path")
        return self._with("VOLUME", _exec_form("VOLUME", [_word("VOLUME", p) for p in paths]))

    def stopsignal(self, signal: str | int) -> ImageRecipe:
        """STOPSIGNAL: a name ("SIGINT") or number the container is stopped with."""
        return self._with("STOPSIGNAL", _word("STOPSIGNAL", str(signal)))

    def healthcheck(
        self,
        command: str | Sequence[str] | None,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        start_period: float | None = None,
        retries: int | None = None,
    ) -> ImageRecipe:
        """HEALTHCHECK CMD ... (times in seconds), or ``None`` for HEALTHCHECK NONE."""
        if command is None:
            return self._with("HEALTHCHECK", "NONE")
        flags = [
            f"--{name}={_duration(name, value)}"
            for name, value in (
                ("interval", interval),
                ("timeout", timeout),
                ("start-period", start_period),
            )
            if value is not None
        ]
        if retries is not None:
            flags.append(f"--retries={int(retries)}")
        return self._with(
            "HEALTHCHECK", " ".join([*flags, "CMD", _command("HEALTHCHECK", command)])
        )

    def _transfer_text(
        self,
        keyword: str,
        src: str | Sequence[str],
        dest: str,
        chown: str | None,
        chmod: str | int | None,
        from_: str | ImageRecipe | None,
    ) -> str:
        sources = [src] if isinstance(src, str) else list(src)
        if not sources:
            raise BuildError(f"{keyword} needs at least one source")
        paths = [_refuse_line_breaks(keyword, p) for p in [*sources, dest]]
        flags = []
        if chown is not None:
            flags.append(f"--chown={_word(keyword + ' --chown', chown)}")
        if chmod is not None:
            flags.append(f"--chmod={_chmod_text(keyword, chmod)}")
        if isinstance(from_, str):
            flags.append(f"--from={_word(keyword + ' --from', from_)}")
        elif from_ is not None:
            flags.append(f"--from={_STAGE_PLACEHOLDER}")
        return " ".join([*flags, json.dumps(paths, ensure_ascii=False)])

    # --- rendering and building --------------------------------------------------------------

    def dockerfile(self) -> str:
        """The Dockerfile this recipe is: every recipe it copies from (or stands on) first, as
        a stage named ``stage-N``, then this one."""
        stages: list[ImageRecipe] = []
        _collect_stages(self, stages)
        names = {id(recipe): f"stage-{n}" for n, recipe in enumerate(stages[:-1])}
        return "".join(_render_stage(recipe, names) for recipe in stages)

    def build(self, tag: str | None = None, **options: Any) -> Image:
        """Build (each step already built is taken from the cache, as for `Image.build`) and
        return the image; ``tag`` names it in the store; ``options`` as `build_async`'s."""
        from .. import _portal

        return _portal.run(functools.partial(self.build_async, tag, **options))

    async def build_async(
        self,
        tag: str | None = None,
        *,
        build_args: Mapping[str, str] | None = None,
        no_cache: bool = False,
        network: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Any = None,
    ) -> Image:
        """`build` for trio and asyncio programs: ``build_args`` for the ARGs, ``no_cache``,
        ``network`` of the RUN steps (default "bridge", as Docker's), ``labels`` added to the
        image, ``progress`` ("auto", "plain", "rich", "quiet"); as `Image.build`."""
        from . import build_instructions, parse

        options = {"network": network, "labels": labels, "progress": progress}
        with tempfile.TemporaryDirectory(prefix="sandkit-dsl-") as empty:
            # A recipe that copies nothing from the context builds in an empty one: the engine
            # need not read (or hash) the working directory.
            return await build_instructions(
                parse(self.dockerfile()),
                self.context if self._uses_context() else empty,
                tag=tag,
                build_args=build_args,
                no_cache=no_cache,
                **{k: v for k, v in options.items() if v is not None},
            )

    def _uses_context(self) -> bool:
        stages: list[ImageRecipe] = []
        _collect_stages(self, stages)
        return any(
            step.keyword in ("COPY", "ADD") and not _copies_from_elsewhere(step)
            for recipe in stages
            for step in recipe.steps
        )


# COPY --from=<recipe> is rendered with the recipe's stage name, known only once the whole
# Dockerfile is laid out (only steps with a `source` carry the placeholder).
_STAGE_PLACEHOLDER = "<stage>"


def _copies_from_elsewhere(step: _Step) -> bool:
    return step.source is not None or "--from=" in step.text.split("[", 1)[0]


def _chmod_text(keyword: str, chmod: str | int) -> str:
    text = format(chmod, "o") if isinstance(chmod, int) else chmod
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise BuildError(
            f"{keyword} --chmod takes an octal mode such as 0o755 or '755', not {chmod!r}"
        )
    return text


def _collect_stages(recipe: ImageRecipe, out: list[ImageRecipe]) -> None:
    """Every recipe ``recipe`` depends on, depth first, then ``recipe``; each once."""
    if any(r is recipe for r in out):
        return
    if isinstance(recipe.base, ImageRecipe):
        _collect_stages(recipe.base, out)
    for step in recipe.steps:
        if step.source is not None:
            _collect_stages(step.source, out)
    out.append(recipe)


def _render_stage(recipe: ImageRecipe, names: dict[int, str]) -> str:
    base = names[id(recipe.base)] if isinstance(recipe.base, ImageRecipe) else recipe.base
    platform = f"--platform={recipe.platform} " if recipe.platform else ""
    name = f" AS {names[id(recipe)]}" if id(recipe) in names else ""
    lines = [f"FROM {platform}{base}{name}"]
    for step in recipe.steps:
        text = step.text
        if step.source is not None:
            text = text.replace(
                f"--from={_STAGE_PLACEHOLDER}", f"--from={names[id(step.source)]}", 1
            )
        lines.append(f"{step.keyword} {text}")
    return "\n".join(lines) + "\n"
