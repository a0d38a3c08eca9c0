"""`docker commit`: an overlay upper directory plus its image's config become a new image.

The layer is written by changes.py into the store's staging, stored uncompressed (its blob
digest is its DiffID, as `docker commit` keeps it locally) and the image recorded with an OCI
manifest, all under the store's loading lock so a prune cannot take the layer half-way.

``changes`` are `docker commit --change` lines: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
VOLUME, WORKDIR and STOPSIGNAL, with Dockerfile syntax (JSON or shell form for CMD/ENTRYPOINT).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ImageError
from .changes import Owner, write_layer_from_upper
from .store import ImageRecord, Store

_LIST_KEYS = {"CMD": "Cmd", "ENTRYPOINT": "Entrypoint"}
_TEXT_KEYS = {"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}


def now_rfc3339() -> str:
    """The current UTC time as image configs write it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bad_change(line: str, why: str) -> ImageError:
    return ImageError(
        f"commit change {line!r}: {why}; give a Dockerfile instruction such as 'CMD [\"sh\"]', "
        "'ENV K=V', 'EXPOSE 80/tcp', 'LABEL k=v', 'USER u', 'WORKDIR /d', 'VOLUME /d'"
    )


def _argv(line: str, rest: str) -> list[str]:
    """The JSON form (``["a", "b"]``), else the shell form run by /bin/sh -c."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise _bad_change(line, "the JSON form must be an array of strings")
    return ["/bin/sh", "-c", rest]


def _pairs(line: str, rest: str) -> dict[str, str]:
    """``K=V K2="v w"`` pairs, or the old ``K value with spaces`` form."""
    try:
        words = shlex.split(rest)
    except ValueError as e:
        raise _bad_change(line, str(e)) from None
    if words and "=" not in words[0]:
        key, _, value = rest.partition(" ")
        return {key: value.strip()}
    pairs = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise _bad_change(line, f"{word!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _port(line: str, word: str) -> str:
    number, _, proto = word.partition("/")
    if (
        not number.isdigit()
        or not 0 < int(number) < 65536
        or proto not in ("", "tcp", "udp", "sctp")
    ):
        raise _bad_change(line, f"{word!r} is not a port such as 80 or 53/udp")
    return f"{int(number)}/{proto or 'tcp'}"


def apply_change(config: dict[str, Any], line: str) -> None:
    """Apply one `--change` line to the ``config`` object of an image config (in place)."""
    word, _, rest = line.strip().partition(" ")
    instruction, rest = word.upper(), rest.strip()
    if not rest:
        raise _bad_change(line, "it has no arguments")
    if instruction in _LIST_KEYS:
        config[_LIST_KEYS[instruction]] = _argv(line, rest)
    elif instruction in _TEXT_KEYS:
        config[_TEXT_KEYS[instruction]] = rest
    elif instruction == "ENV":
        env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
        env.update(_pairs(line, rest))
        config["Env"] = [f"{k}={v}" for k, v in env.items()]
    elif instruction == "LABEL":
        config["Labels"] = {**(config.get("Labels") or {}), **_pairs(line, rest)}
    elif instruction == "EXPOSE":
        ports = dict.fromkeys(config.get("ExposedPorts") or {}, None)
        ports.update(dict.fromkeys((_port(line, w) for w in rest.split()), None))
        config["ExposedPorts"] = {p: {} for p in ports}
    elif instruction == "VOLUME":
        paths = _argv(line, rest) if rest.startswith("[") else rest.split()
        config["Volumes"] = {**(config.get("Volumes") or {}), **{p: {} for p in paths}}
    else:
        raise _bad_change(line, f"{word} cannot be changed by a commit")


def committed_config(
    base: dict[str, Any],
    *,
    changes: Sequence[str] = (),
    author: str = "",
    message: str = "",
    created_by: str = "",
    created: str | None = None,
) -> dict[str, Any]:
    """The image config of a commit on top of ``base`` (an OCI image config): the changes
    applied, one more history entry; ``created`` (RFC 3339) defaults to now."""
    out = copy.deepcopy(base)
    out["created"] = created or now_rfc3339()
    if author:
        out["author"] = author
    else:
        out.pop("author", None)
    inner = out.setdefault("config", {}) or {}
    out["config"] = inner
    for line in changes:
        apply_change(inner, line)
    entry: dict[str, Any] = {"created": out["created"], "created_by": created_by}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    out["history"] = [*_base_history(base), entry]
    return out


def _base_history(base: dict[str, Any]) -> list[dict[str, Any]]:
    """``base``'s history with one entry for each of its layers (an image made without history
    gets blank ones), so that the new entry stays paired with the new layer."""
    history = [h for h in base.get("history") or [] if isinstance(h, dict)]
    layers = len((base.get("rootfs") or {}).get("diff_ids") or [])
    missing = layers - sum(1 for h in history if not h.get("empty_layer"))
    blank = {"created": base.get("created") or "", "created_by": ""}
    return [*(dict(blank) for _ in range(max(0, missing))), *history]


def commit_image(
    store: Store,
    base: ImageRecord,
    write_layer: Callable[[BinaryIO], tuple[str, int]],
    *,
    tags: Sequence[str] = (),
    changes: Sequence[str] = (),
    author: str = "",
    message: str = "",
    created_by: str = "",
) -> ImageRecord:
    """A new image in ``store``: ``base`` plus the layer tar ``write_layer(out)`` writes (it
    returns its diff_id and size, as `write_layer_from_upper`). The changes are checked before
    anything is written; on any error nothing is left in the store."""
    base_config = json.loads(store.read_blob(base.id))
    config = committed_config(
        base_config, changes=changes, author=author, message=message, created_by=created_by
    )
    with store.loading(len(base.layers) + 1), store.staging() as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with open(layer_path, "wb") as out:
            diff_id, _ = write_layer(out)
        with open(layer_path, "rb") as tar:
            layer = store.add_layer(tar, diff_id)
        return store.create_image(config, [*base.layers, layer], tags=list(tags))


def commit_upper(
    store: Store,
    base: ImageRecord,
    upper: str | os.PathLike[str] | int,
    *,
    ignore: Sequence[str] = (),
    owner: Owner | None = None,
    **details: Any,
) -> ImageRecord:
    """`commit_image` of the overlay upper directory ``upper`` (see changes.py for ``ignore``
    and ``owner``); ``details`` are commit_image's keywords."""

    def write(out: BinaryIO) -> tuple[str, int]:
        return write_layer_from_upper(upper, out, ignore=ignore, owner=owner)

    return commit_image(store, base, write, **details)
