"""The build engine: a list of :class:`~sandkit.build.parser.Instruction` in, an image in the store
out (the Dockerfile parser and the Python DSL both feed it the same list).

Stages run in order; a stage the target does not need (through ``FROM <stage>`` or
``COPY --from``) is skipped, as BuildKit does. Each stage keeps its layers, its image config and
its history; metadata instructions change the config only ("empty_layer" in the history),
COPY/ADD/WORKDIR write a layer (layer.py), RUN runs in a sandkit container (run.py).

Cache and determinism: every step has a key, the hash of its parent's key, the instruction as
substituted, and what else decides its result (the contents of what COPY copies, the
environment a RUN sees). ``$SANDKIT_HOME/build-cache/<key>.json`` keeps, per key, the time the
step was first built and the layer it made; a rebuild reuses both, so an unchanged build gives
the same image id. ``created`` comes from ``SOURCE_DATE_EPOCH`` when set, else from that cache.
Nothing is registered in the store before the last step succeeds: a failed build leaves no
image (its finished layers stay, unreferenced, for the cache; `sandkit image prune` removes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs

from ..errors import BuildContextError, BuildError, DockerfileSyntaxError, ImageNotFoundError
from ..images.fsutil import write_json_atomic
from ..images.platform import host_platform
from ..images.store import ImageRecord, LayerRecord, Store
from .context import ContextTree, LayersTree, clean_source
from .layer import Entry, entry_from_host, store_layer
from .parser import Instruction
from .progress import Progress
from .substitution import substitute

DEFAULT_SHELL = ("/bin/sh", "-c")
# Part of every step's cache key: raised when what a step makes changes (a fix in how a layer
# is written), so that steps cached by an older sandkit are built again.
CACHE_VERSION = 2
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


@attrs.define
class Stage:
    """What a stage has built so far."""

    index: int
    name: str
    platform: dict[str, str]
    layers: list[LayerRecord] = attrs.field(factory=list)
    base_dirs: tuple[Path, ...] = ()
    config: dict[str, Any] = attrs.field(factory=dict)
    history: list[dict[str, Any]] = attrs.field(factory=list)
    args: dict[str, str | None] = attrs.field(factory=dict)
    cmd_set: bool = False
    key: str = ""
    created: str = ""


@attrs.frozen
class BuildRequest:
    """The options of one build (what `sandkit build` and Image.build take)."""

    context: Path
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = attrs.field(factory=dict)
    target: str | None = None
    no_cache: bool = False
    network: str = "bridge"
    labels: Mapping[str, str] = attrs.field(factory=dict)


class Builder:
    """Runs the instructions of one build against ``store``."""

    def __init__(self, store: Store, request: BuildRequest, progress: Progress) -> None:
        self.store = store
        self.request = request
        self.progress = progress
        self.context = ContextTree(request.context)
        self.cache_dir = store.home / "build-cache"
        self.cache_dir.mkdir(mode=0o700, exist_ok=True)
        self.stages: dict[int, Stage] = {}
        self.names: dict[str, int] = {}
        self.used_args: set[str] = set()
        self.epoch = _source_date_epoch()

    # --- the whole build -----------------------------------------------------------------------

    async def build(self, instructions: Sequence[Instruction]) -> ImageRecord:
        """Run the stages the target needs and register the target's image (with the tags)."""
        global_args, stages = _split_stages(instructions)
        self.global_args = self._declare_globals(global_args)
        self._name_stages(stages)
        target = self._target_index(stages)
        needed = self._needed(stages, target)
        for index, body in enumerate(stages):
            if index in needed:
                self.stages[index] = await self._run_stage(index, body)
            else:
                self.progress.skipped(index, body[0])
        unused = set(self.request.build_args) - self.used_args
        if unused:
            self.progress.warning(
                f"build args not used by any ARG: {', '.join(sorted(unused))} (ignored)"
            )
        # File and store work runs on a worker thread: the event loop (sandkit's, for the sync
        # API) keeps serving other containers meanwhile.
        return await anyio.to_thread.run_sync(self._register, self.stages[target])

    def _declare_globals(self, args: list[Instruction]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for ins in args:
            for word in ins.args:
                name, value = self._arg_value(ins, word, values)
                values[name] = value
        return values

    def _name_stages(self, stages: list[list[Instruction]]) -> None:
        for index, body in enumerate(stages):
            from_ = body[0]
            if len(from_.args) == 3:
                name = from_.args[2].lower()
                if name in self.names:
                    raise DockerfileSyntaxError(f"stage name {name!r} is used twice", from_.line)
                self.names[name] = index

    def _target_index(self, stages: list[list[Instruction]]) -> int:
        target = self.request.target
        if target is None:
            return len(stages) - 1
        if target.lower() not in self.names:
            known = ", ".join(sorted(self.names)) or "none: name stages with FROM ... AS NAME"
            raise BuildError(f"target stage {target!r} is not in the Dockerfile (stages: {known})")
        return self.names[target.lower()]

    def _stage_ref(self, ref: str, before: int, line: int = 0, *, copy: bool = False) -> int | None:
        """The index of the earlier stage ``ref`` names (by name or number), else None (an
        image). In FROM a later stage's name is an image's (``FROM alpine AS alpine``), as in
        BuildKit; COPY --from this stage or a later one would make a cycle: refused."""
        index = self.names.get(ref.lower())
        if index is None and ref.isdigit():
            index = int(ref)
        if index is None or (index >= before and not copy):
            return None
        if index >= before:
            raise DockerfileSyntaxError(
                f"stage {ref!r} is this stage or a later one: a stage can only use the stages "
                "before it (this would be a cycle); reorder the stages",
                line,
            )
        return index

    def _needed(self, stages: list[list[Instruction]], target: int) -> set[int]:
        needed: set[int] = set()
        todo = [target]
        while todo:
            index = todo.pop()
            if index in needed:
                continue
            needed.add(index)
            body = stages[index]
            from_ = body[0]
            refs = [(from_, self._from_image(from_), False)]
            refs += [(ins, ins.flag("from") or "", True) for ins in body if ins.flag("from")]
            for ins, ref, copy in refs:
                word = substitute(ref, self._global_env(), line=ins.line)
                dep = self._stage_ref(word, index, ins.line, copy=copy)
                if dep is not None:
                    todo.append(dep)
        return needed

    def _global_env(self) -> dict[str, str]:
        return {k: v for k, v in self.global_args.items() if v is not None}

    def _from_image(self, ins: Instruction) -> str:
        return ins.args[0]

    # --- one stage -------------------------------------------------------------------------------

    async def _run_stage(self, index: int, body: list[Instruction]) -> Stage:
        from_ = body[0]
        stage = await anyio.to_thread.run_sync(self._start_stage, index, from_)
        self.progress.step(from_, cached=False)
        for ins in body[1:]:
            handler = self._handlers().get(ins.cmd)
            if handler is None:  # FROM is handled above; the parser knows no others
                raise DockerfileSyntaxError(f"{ins.cmd} cannot be used here", ins.line)
            if ins.cmd == "RUN":
                await self._run(stage, ins)
            else:
                await anyio.to_thread.run_sync(handler, stage, ins)
        return stage

    def _handlers(self) -> dict[str, Callable[[Stage, Instruction], None]]:
        return {
            "RUN": lambda stage, ins: None,
            "ARG": self._arg,
            "ENV": self._env,
            "LABEL": self._label,
            "WORKDIR": self._workdir,
            "USER": lambda s, i: self._set(s, i, "User", self._word(s, i, i.args[0])),
            "CMD": self._cmd,
            "ENTRYPOINT": self._entrypoint,
            "SHELL": lambda s, i: self._set(s, i, "Shell", list(i.args)),
            "EXPOSE": self._expose,
            "VOLUME": self._volume,
            "STOPSIGNAL": lambda s, i: self._set(s, i, "StopSignal", self._word(s, i, i.args[0])),
            "HEALTHCHECK": self._healthcheck,
            "COPY": self._copy,
            "ADD": self._copy,
        }

    def _start_stage(self, index: int, from_: Instruction) -> Stage:
        ref = substitute(self._from_image(from_), self._global_env(), line=from_.line)
        name = from_.args[2].lower() if len(from_.args) == 3 else ""
        self._check_platform(from_)
        earlier = self._stage_ref(ref, index)
        if earlier is not None:
            parent = self.stages[earlier]
            return attrs.evolve(
                parent,
                index=index,
                name=name,
                layers=list(parent.layers),
                config=json.loads(json.dumps(parent.config)),
                history=list(parent.history),
                args={},
                cmd_set=False,
            )
        if ref.lower() == "scratch":
            plat = host_platform()
            platform = {"architecture": plat.architecture, "os": plat.os}
            if plat.variant:
                platform["variant"] = plat.variant
            return Stage(
                index,
                name,
                platform,
                config={"Env": [DEFAULT_PATH]},
                key=_hash(["scratch"]),
                created=self._time(""),
            )
        return self._from_store(index, name, ref, from_)

    def _check_platform(self, from_: Instruction) -> None:
        wanted = from_.flag("platform")
        if wanted and substitute(wanted, self._global_env(), line=from_.line) != str(
            host_platform()
        ):
            raise BuildError(
                f"Dockerfile line {from_.line}: FROM --platform={wanted} asks for another platform "
                f"than this host's ({host_platform()}); sandkit builds for the host only: remove "
                "the flag"
            )

    def _from_store(self, index: int, name: str, ref: str, from_: Instruction) -> Stage:
        try:
            rec = self.store.resolve(ref)
        except ImageNotFoundError:
            raise BuildError(
                f"Dockerfile line {from_.line}: image {ref!r} is not in the local store; sandkit "
                f"build does not pull: run `sandkit pull {ref}` (or `sandkit load`) first"
            ) from None
        self.store.refresh_layers(rec)
        blob = json.loads(self.store.read_blob(rec.id))
        platform = {k: blob[k] for k in ("architecture", "os", "variant") if blob.get(k)}
        return Stage(
            index,
            name,
            platform,
            layers=list(rec.layers),
            config=dict(blob.get("config") or {}),
            history=list(blob.get("history") or []),
            key=_hash(["image", rec.id]),
            created=str(blob.get("created") or ""),
        )

    # --- substitution and arguments --------------------------------------------------------

    def _env_of(self, stage: Stage) -> dict[str, str]:
        """What ``$VAR`` means in this stage: its ARGs, overridden by its ENV (as Docker)."""
        values = {k: v for k, v in stage.args.items() if v is not None}
        for item in stage.config.get("Env") or []:
            key, _, value = item.partition("=")
            values[key] = value
        return values

    def _word(self, stage: Stage, ins: Instruction, word: str) -> str:
        return substitute(word, self._env_of(stage), line=ins.line)

    def _arg_value(
        self, ins: Instruction, word: str, env: Mapping[str, str | None]
    ) -> tuple[str, str | None]:
        name, sep, default = word.partition("=")
        self.used_args.add(name)
        if name in self.request.build_args:
            return name, self.request.build_args[name]
        if sep:
            known = {k: v for k, v in env.items() if v is not None}
            return name, substitute(default, known, line=ins.line)
        return name, None

    def _arg(self, stage: Stage, ins: Instruction) -> None:
        for word in ins.args:
            env: dict[str, str | None] = dict(self._env_of(stage))
            name, value = self._arg_value(ins, word, env)
            if value is None and "=" not in word:
                value = self.global_args.get(name)
            stage.args[name] = value
        self._metadata(stage, ins)

    # --- metadata instructions ---------------------------------------------------------------

    def _set(self, stage: Stage, ins: Instruction, key: str, value: Any) -> None:
        stage.config[key] = value
        self._metadata(stage, ins)

    def _metadata(self, stage: Stage, ins: Instruction) -> None:
        self._step(stage, ins, self._created_by(stage, ins), layer=None, extra=[])

    def _env(self, stage: Stage, ins: Instruction) -> None:
        # Every value is substituted with the environment from before the instruction: in
        # Docker's example `ENV abc=bye def=$abc` after `ENV abc=hello` gives def=hello.
        pairs = self._pairs(stage, ins)
        env = list(stage.config.get("Env") or [])
        for key, value in pairs.items():  # a key already set keeps its place, as in Docker
            index = next((i for i, item in enumerate(env) if item.partition("=")[0] == key), None)
            if index is None:
                env.append(f"{key}={value}")
            else:
                env[index] = f"{key}={value}"
        self._set(stage, ins, "Env", env)

    def _pairs(self, stage: Stage, ins: Instruction) -> dict[str, str]:
        """The KEY=VALUE pairs of ENV or LABEL, substituted (a later KEY wins)."""
        return {
            self._word(stage, ins, key): self._word(stage, ins, raw)
            for key, raw in zip(ins.args[::2], ins.args[1::2], strict=True)
        }

    def _label(self, stage: Stage, ins: Instruction) -> None:
        labels = {**(stage.config.get("Labels") or {}), **self._pairs(stage, ins)}
        self._set(stage, ins, "Labels", labels)

    def _command(self, stage: Stage, ins: Instruction) -> list[str]:
        if ins.json:
            return list(ins.args)
        shell = list(stage.config.get("Shell") or DEFAULT_SHELL)
        return [*shell, ins.args[0]] if ins.args else []

    def _cmd(self, stage: Stage, ins: Instruction) -> None:
        stage.cmd_set = True
        self._set(stage, ins, "Cmd", self._command(stage, ins))

    def _entrypoint(self, stage: Stage, ins: Instruction) -> None:
        if not stage.cmd_set:
            # Docker: an ENTRYPOINT resets the CMD inherited from the base image.
            stage.config.pop("Cmd", None)
        self._set(stage, ins, "Entrypoint", self._command(stage, ins))

    def _expose(self, stage: Stage, ins: Instruction) -> None:
        ports = dict(stage.config.get("ExposedPorts") or {})
        for raw in ins.args:
            port = self._word(stage, ins, raw)
            first, last, proto = _port_range(port, ins)
            ports.update({f"{number}/{proto}": {} for number in range(first, last + 1)})
        self._set(stage, ins, "ExposedPorts", ports)

    def _volume(self, stage: Stage, ins: Instruction) -> None:
        volumes = dict(stage.config.get("Volumes") or {})
        for raw in ins.args:
            path = self._word(stage, ins, raw)
            if not path:
                raise DockerfileSyntaxError("VOLUME needs a path", ins.line)
            volumes[path] = {}
        self._set(stage, ins, "Volumes", volumes)

    def _healthcheck(self, stage: Stage, ins: Instruction) -> None:
        if ins.args[0].upper() == "NONE":
            self._set(stage, ins, "Healthcheck", {"Test": ["NONE"]})
            return
        test = ["CMD", *ins.args[1:]] if ins.json else ["CMD-SHELL", ins.args[1]]
        check: dict[str, Any] = {"Test": test}
        for flag, key in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ):
            if (value := ins.flag(flag)) is not None:
                check[key] = _duration(value, ins)
        if (retries := ins.flag("retries")) is not None:
            if not retries.isdigit():
                raise DockerfileSyntaxError(
                    f"HEALTHCHECK --retries={retries}: give a number", ins.line
                )
            check["Retries"] = int(retries)
        self._set(stage, ins, "Healthcheck", check)

    def _workdir(self, stage: Stage, ins: Instruction) -> None:
        path = posixpath.normpath(
            posixpath.join(
                stage.config.get("WorkingDir") or "/", self._word(stage, ins, ins.args[0])
            )
        )
        stage.config["WorkingDir"] = path
        entries, created = self._dir_chain(stage, path.lstrip("/"), self._dir_mtime())
        if not created:
            self._metadata(stage, ins)
            return
        layer = store_layer(self.store, entries)
        self._step(stage, ins, self._created_by(stage, ins), layer=layer, extra=[layer.diff_id])

    # --- COPY and ADD --------------------------------------------------------------------------

    def _copy(self, stage: Stage, ins: Instruction) -> None:
        words = [self._word(stage, ins, word) for word in ins.args]
        sources, dest = words[:-1], words[-1]
        what = f"Dockerfile line {ins.line} ({ins.cmd})"
        tree = self._source_tree(stage, ins)
        found = self._expand_sources(tree, sources, what)
        if len(found) > 1 and not dest.endswith("/"):
            raise BuildContextError(
                f"{what}: with more than one source the destination must be a directory "
                f"ending in '/': write {dest}/"
            )
        workdir = stage.config.get("WorkingDir") or "/"
        dest_path = posixpath.normpath(posixpath.join(workdir, dest)).lstrip("/")
        into_dir = dest.endswith(("/", "/.")) or dest == "." or len(found) > 1
        into_dir = into_dir or self._is_dir_below(stage, dest_path)
        entries = self._copied_entries(stage, ins, tree, found, dest_path, into_dir, what)
        mtime = max((e.mtime for e in entries.values()), default=0)
        # Every directory on the way to what is written is in the layer (the destination
        # itself too, and the directories of an unpacked archive that lists no entry for them).
        missing = {posixpath.dirname(path) for path in entries} | {dest_path if into_dir else ""}
        for parent in sorted(missing - set(entries) - {""}):
            for entry in self._dir_chain(stage, parent, mtime)[0]:
                entries.setdefault(entry.path, entry)
        layer = store_layer(self.store, list(entries.values()))
        self._step(stage, ins, self._created_by(stage, ins), layer=layer, extra=[layer.diff_id])

    def _copied_entries(
        self,
        stage: Stage,
        ins: Instruction,
        tree: ContextTree | LayersTree,
        found: list[str],
        dest_path: str,
        into_dir: bool,
        what: str,
    ) -> dict[str, Entry]:
        """What the sources give, owned and moded as --chown and --chmod say."""
        uid, gid = self._owner(stage, ins)
        chmod = _chmod(ins)
        entries: dict[str, Entry] = {}
        for source in found:
            for entry in self._copied(tree, source, dest_path, into_dir, what, ins):
                mode = entry.mode if chmod is None or entry.kind == "symlink" else chmod
                owner = (entry.uid, entry.gid) if ins.flag("chown") is None else (uid, gid)
                entries[entry.path] = attrs.evolve(entry, uid=owner[0], gid=owner[1], mode=mode)
        entries.pop("", None)  # COPY dir / : the image's root keeps its own metadata
        return entries

    def _source_tree(self, stage: Stage, ins: Instruction) -> ContextTree | LayersTree:
        ref = ins.flag("from")
        if ref is None:
            return self.context
        ref = self._word(stage, ins, ref)
        earlier = self._stage_ref(ref, stage.index, ins.line, copy=True)
        if earlier is not None:
            source = self.stages[earlier]
            return LayersTree(self._dirs(source), f"stage {ref!r}")
        try:
            rec = self.store.resolve(ref)
        except ImageNotFoundError:
            raise BuildError(
                f"Dockerfile line {ins.line}: COPY --from={ref}: no earlier stage and no local "
                f"image of that name; sandkit build does not pull: run `sandkit pull {ref}` first"
            ) from None
        self.store.refresh_layers(rec)
        return LayersTree(tuple(self.store.layer_dir(layer.diff_id) for layer in rec.layers), ref)

    def _dirs(self, stage: Stage) -> tuple[Path, ...]:
        return tuple(self.store.layer_dir(layer.diff_id) for layer in stage.layers)

    def _expand_sources(
        self, tree: ContextTree | LayersTree, sources: list[str], what: str
    ) -> list[str]:
        found: list[str] = []
        for source in sources:
            if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE):
                raise BuildContextError(
                    f"{what}: {source!r} is a URL; sandkit build copies local files only: download "
                    "it in a RUN step, or put it in the context"
                )
            rel = clean_source(source, what)
            if isinstance(tree, ContextTree) and any(c in rel for c in "*?["):
                matches = tree.glob(rel)
                if not matches:
                    raise BuildContextError(
                        f"{what}: no file in the build context matches {source!r}"
                    )
                found += matches
            else:
                found.append(rel)
        return found

    def _copied(
        self,
        tree: ContextTree | LayersTree,
        source: str,
        dest: str,
        into_dir: bool,
        what: str,
        ins: Instruction,
    ) -> list[Entry]:
        walked = list(tree.walk(source, what))
        _, top_st, top_host = walked[0]
        if stat.S_ISDIR(top_st.st_mode):
            # A directory's contents are copied, not the directory itself (as Docker).
            return [
                entry_from_host(posixpath.join(dest, sub) if sub else dest, host, st, what=what)
                for sub, st, host in walked
            ]
        target = posixpath.join(dest, posixpath.basename(source)) if into_dir else dest
        if ins.cmd == "ADD" and stat.S_ISREG(top_st.st_mode):
            from .archive import tar_entries

            unpacked = tar_entries(
                top_host, dest, what, self.store.home / "tmp", self.store.budget()
            )
            if unpacked is not None:
                return unpacked
        return [entry_from_host(target, top_host, top_st, what=what)]

    def _is_dir_below(self, stage: Stage, path: str) -> bool:
        found = LayersTree(self._dirs(stage), "the image").lookup(path)
        return found is not None and stat.S_ISDIR(found[1].st_mode)

    def _dir_chain(self, stage: Stage, path: str, mtime: int) -> tuple[list[Entry], bool]:
        """Directory entries for ``path`` and its parents, and whether any is new: existing ones
        keep the metadata the layers below give them (a layer entry replaces it), missing ones
        are made 0755 root with ``mtime``."""
        below = LayersTree(self._dirs(stage), "the image")
        entries = []
        created = False
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            found = below.lookup(rel)
            if found is not None and stat.S_ISDIR(found[1].st_mode):
                entries.append(self._dir_entry(rel, found[1]))
            else:
                created = True
                entries.append(Entry(rel, "dir", 0o755, 0, 0, mtime))
        return entries, created

    def _dir_entry(self, rel: str, st: os.stat_result) -> Entry:
        """A directory of the layers below, as the image has it (its ids the image's)."""
        uid, gid = self._image_ids(st)
        return Entry(rel, "dir", stat.S_IMODE(st.st_mode), uid, gid, int(st.st_mtime))

    def _image_ids(self, st: os.stat_result) -> tuple[int, int]:
        """The image's ids of a file of an applied layer: as they are for root; rootless, the
        caller is the image's root and a subordinate range's ids count from 1 (idmap.py); an id
        the mapping does not know is root's, as the store keeps it."""
        if os.geteuid() == 0:
            return st.st_uid, st.st_gid
        mapping = self.store.mapping
        if mapping is None:
            return 0, 0

        def inner(host: int, start: int, count: int) -> int:
            return host - start + 1 if start <= host < start + count else 0

        return (
            inner(st.st_uid, mapping.uids.start, mapping.inner_uids - 1),
            inner(st.st_gid, mapping.gids.start, mapping.inner_gids - 1),
        )

    def _owner(self, stage: Stage, ins: Instruction) -> tuple[int, int]:
        chown = ins.flag("chown")
        if chown is None:
            return 0, 0
        user, _, group = self._word(stage, ins, chown).partition(":")
        uid = self._id_of(stage, ins, user, "etc/passwd")
        gid = (
            self._id_of(stage, ins, group, "etc/group")
            if group
            else uid
            if user.isdigit()
            else self._primary_gid(stage, ins, user)
        )
        return uid, gid

    def _id_of(self, stage: Stage, ins: Instruction, name: str, table: str) -> int:
        if name.isdigit():
            return int(name)
        for fields in self._table(stage, table):
            if fields[0] == name and len(fields) > 2 and fields[2].isdigit():
                return int(fields[2])
        raise BuildError(
            f"Dockerfile line {ins.line}: --chown: {name!r} is not in the image's /{table}: use "
            "a numeric id or add the user first"
        )

    def _primary_gid(self, stage: Stage, ins: Instruction, user: str) -> int:
        for fields in self._table(stage, "etc/passwd"):
            if fields[0] == user and len(fields) > 3 and fields[3].isdigit():
                return int(fields[3])
        return self._id_of(stage, ins, user, "etc/passwd")

    def _table(self, stage: Stage, table: str) -> list[list[str]]:
        found = LayersTree(self._dirs(stage), "the image").lookup(table)
        if found is None or not stat.S_ISREG(found[1].st_mode) or found[1].st_size > 4 << 20:
            return []
        return [line.split(":") for line in found[0].read_text(errors="replace").splitlines()]

    def _dir_mtime(self) -> int:
        return self.epoch if self.epoch is not None else 0

    # --- RUN -----------------------------------------------------------------------------------

    async def _run(self, stage: Stage, ins: Instruction) -> None:
        from .run import run_step

        key = self._key(stage, ins, self._run_inputs(stage))
        cached = self._cached(key)
        if cached is not None and cached.get("layer"):
            layer = LayerRecord(**cached["layer"])
            self.progress.step(ins, cached=True)
            self._advance(stage, ins, key, cached["created"], layer)
            return
        self.progress.step(ins, cached=False)
        layer = await run_step(
            self.store,
            layers=self._dirs(stage),
            config=stage.config,
            command=self._command(stage, ins),
            env=self._run_env(stage),
            network=self.request.network,
            output=self.progress.output,
            line=ins.line,
        )
        created = self._time("")
        self._save_cache(key, created, layer)
        self._advance(stage, ins, key, created, layer)

    def _run_env(self, stage: Stage) -> list[str]:
        env = {k: v for k, v in stage.args.items() if v is not None}
        for item in stage.config.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return [f"{k}={v}" for k, v in env.items()]

    def _run_inputs(self, stage: Stage) -> list[Any]:
        return [
            self._run_env(stage),
            stage.config.get("User"),
            stage.config.get("WorkingDir"),
            stage.config.get("Shell"),
        ]

    # --- steps, cache and the final image ---------------------------------------------------

    def _step(
        self,
        stage: Stage,
        ins: Instruction,
        created_by: str,
        *,
        layer: LayerRecord | None,
        extra: list[Any],
    ) -> None:
        key = self._key(stage, ins, extra)
        cached = self._cached(key)
        created = cached["created"] if cached else self._time("")
        if cached is None:
            self._save_cache(key, created, layer)
        self.progress.step(ins, cached=cached is not None)
        self._advance(stage, ins, key, created, layer, created_by)

    def _advance(
        self,
        stage: Stage,
        ins: Instruction,
        key: str,
        created: str,
        layer: LayerRecord | None,
        created_by: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "created": self._time(created),
            "created_by": created_by or self._created_by(stage, ins),
        }
        if layer is None:
            entry["empty_layer"] = True
        else:
            stage.layers.append(layer)
        stage.history.append(entry)
        stage.key = key
        stage.created = created

    def _key(self, stage: Stage, ins: Instruction, extra: list[Any]) -> str:
        return _hash(
            [
                CACHE_VERSION,
                stage.key,
                ins.cmd,
                list(ins.args),
                list(ins.flags),
                ins.json,
                extra,
                stage.config,
                stage.args,
            ]
        )

    def _cached(self, key: str) -> dict[str, Any] | None:
        if self.request.no_cache:
            return None
        try:
            record = json.loads((self.cache_dir / f"{key}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        layer = record.get("layer")
        if layer and not (
            self.store.has_blob(layer["digest"]) and self.store.has_layer(layer["diff_id"])
        ):
            return None  # pruned since: built again
        return record

    def _save_cache(self, key: str, created: str, layer: LayerRecord | None) -> None:
        record = {"created": created, "layer": attrs.asdict(layer) if layer else None}
        write_json_atomic(self.cache_dir / f"{key}.json", record)

    def _time(self, stored: str) -> str:
        if self.epoch is not None:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.epoch))
        return stored or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _created_by(self, stage: Stage, ins: Instruction) -> str:
        if ins.cmd == "RUN":
            return "RUN " + " ".join(self._command(stage, ins))
        if ins.json:
            return f"{ins.cmd} {json.dumps(list(ins.args))}"
        if ins.cmd in ("ENV", "LABEL"):
            pairs = zip(ins.args[::2], ins.args[1::2], strict=True)
            return f"{ins.cmd} " + " ".join(f"{k}={v}" for k, v in pairs)
        flags = "".join(f"--{k}={v} " for k, v in ins.flags)
        return f"{ins.cmd} {flags}{' '.join(ins.args)}"

    def _register(self, stage: Stage) -> ImageRecord:
        config = dict(stage.config)
        if self.request.labels:
            config["Labels"] = {**(config.get("Labels") or {}), **self.request.labels}
        image = {
            **stage.platform,
            "created": self._time(stage.created),
            "config": config,
            "history": stage.history,
        }
        return self.store.create_image(image, stage.layers, tags=list(self.request.tags))


def _split_stages(
    instructions: Sequence[Instruction],
) -> tuple[list[Instruction], list[list[Instruction]]]:
    global_args: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            stages.append([ins])
        elif not stages:
            if ins.cmd != "ARG":
                raise DockerfileSyntaxError(
                    "the first instruction after the global ARGs must be FROM", ins.line
                )
            global_args.append(ins)
        else:
            stages[-1].append(ins)
    if not stages:
        raise DockerfileSyntaxError("the Dockerfile has no FROM", 1)
    return global_args, stages


def _port_range(port: str, ins: Instruction) -> tuple[int, int, str]:
    """EXPOSE's PORT[-PORT][/PROTO]: the first and last port and the protocol (default tcp)."""
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?", port, re.IGNORECASE)
    first = int(match.group(1)) if match else 0
    last = int(match.group(2) or first) if match else 0
    if match is None or not 0 < first <= last < 65536:
        raise DockerfileSyntaxError(
            f"EXPOSE {port!r}: write PORT, PORT-PORT, or either with /tcp, /udp or /sctp", ins.line
        )
    return first, last, (match.group(3) or "tcp").lower()


def _duration(value: str, ins: Instruction) -> int:
    """A Go duration ("30s", "1m30s", "500ms") in nanoseconds."""
    total, at = 0, 0
    for match in _DURATION.finditer(value):
        if match.start() != at:
            break
        total += int(float(match.group(1)) * _UNIT_NS[match.group(2)])
        at = match.end()
    if at != len(value) or not value:
        raise DockerfileSyntaxError(
            f"{ins.cmd}: {value!r} is not a duration: write e.g. 30s or 1m30s", ins.line
        )
    return total


def _chmod(ins: Instruction) -> int | None:
    value = ins.flag("chmod")
    if value is None:
        return None
    if not re.fullmatch(r"[0-7]{3,4}", value):
        raise DockerfileSyntaxError(
            f"--chmod={value}: give octal permissions such as 755 or 0644", ins.line
        )
    return int(value, 8)


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds: unset or fix it")
    return int(value)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _hash(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()
