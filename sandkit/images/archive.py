"""Reading and writing image archives: `docker save` (classic and Docker 25+) and OCI layouts.

Accepted inputs: a tar (plain or gzip-compressed) or a directory, holding either a docker
``manifest.json`` or an OCI ``index.json``. Docker 25+ writes both; ``manifest.json`` is used
then, because Docker 25 may leave ``index.json`` without manifests. Every blob is verified
against its digest (and size) before it is used; layers are streamed straight into the store.
"""

from __future__ import annotations

import bz2
import errno
import io
import json
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ImageError, ImageNotFoundError
from . import reference
from .budget import ChargedWriter, DiskBudget
from .digest import check_digest, hex_of, sha256_bytes, verify_bytes
from .documents import (
    check_config,
    check_descriptor,
    check_layer_type,
    image_descriptors,
    load_json,
)
from .fsutil import open_regular_beneath
from .layers import DECOMPRESSION_ERRORS, open_decompressed, split_name
from .platform import Platform, choose
from .store import CONFIG_TYPES, INDEX_TYPES, ImageRecord, Store
from .tarstream import BoundedTarFile, BudgetedFile

_JSON_LIMIT = 8 << 20  # manifests and configs are KBs; refuse to buffer absurd ones
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"
_MAX_LINKS = 40  # links followed inside an archive, as the kernel's MAXSYMLINKS
# What decompressing an archive into the store's tmp/ raises. A name of its own: mypy cannot
# check a starred tuple of unknown length inside an `except (...)`.
_BAD_SPOOL: tuple[type[BaseException], ...] = (*DECOMPRESSION_ERRORS, lzma.LZMAError, OSError)


# --- sources ---------------------------------------------------------------------------------


class _Source:
    """Files of an archive by relative name; names are checked so they cannot leave it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read(self, name: str, what: str) -> bytes:
        try:
            with self.open(name) as f:
                data = f.read(_JSON_LIMIT + 1)
        except (FileNotFoundError, KeyError):
            raise ImageError(
                f"{self.path}: {what} {name!r} is missing; the archive is incomplete"
            ) from None
        if len(data) > _JSON_LIMIT:
            raise ImageError(
                f"{self.path}: {what} {name!r} is larger than {_JSON_LIMIT} bytes; refused"
            )
        return data

    def json(self, name: str, what: str) -> Any:
        try:
            return json.loads(self.read(name, what))
        except ValueError as e:
            raise ImageError(
                f"{self.path}: {what} {name!r} is not valid JSON ({e}); the archive is corrupt"
            ) from None
        except RecursionError:
            raise ImageError(
                f"{self.path}: {what} {name!r} nests its JSON too deeply to be read; "
                "the archive is corrupt or hostile"
            ) from None

    @staticmethod
    def norm(name: str) -> str:
        return "/".join(split_name(name, "archive member"))


class _DirSource(_Source):
    """A docker-save or OCI layout directory. Every file is opened inside it (openat2 with
    RESOLVE_BENEATH) and must be a regular file: a symlink out of the directory would make a
    host file the image's config or layer (or its digest error a hash oracle), a FIFO would
    hang the load and a device would never end. Symlinks that stay inside are followed: Docker
    links reused layers so."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(
                f"cannot open the image directory {str(path)!r}: {e.strerror}"
            ) from None

    def open(self, name: str) -> BinaryIO:
        try:
            f = open_regular_beneath(self.dir_fd, self.norm(name))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise FileNotFoundError(name) from None
            if e.errno == errno.EXDEV:
                raise ImageError(
                    f"{self.path}: {name!r} is a symlink that leads outside the directory; an "
                    "image directory must hold its own files, so it was refused"
                ) from None
            if e.errno == errno.ELOOP:
                raise ImageError(
                    f"{self.path}: {name!r} is a symlink that cannot be followed safely (a loop, "
                    "a /proc link, or any symlink on kernels before 5.6): replace it by the file"
                ) from None
            raise ImageError(f"{self.path}: cannot open {name!r}: {e.strerror}") from None
        if f is None:
            raise ImageError(
                f"{self.path}: {name!r} is not a regular file (a FIFO, device or directory); "
                "the directory is not an image archive as docker or skopeo write it"
            )
        return f

    def exists(self, name: str) -> bool:
        """Whether ``name`` is there; one that is there but unsafe raises (it is not "absent")."""
        try:
            self.open(name).close()
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        os.close(self.dir_fd)


def _decompressed(f: BinaryIO) -> BinaryIO | None:
    """A decompressing reader of ``f`` (gzip, zstd, bzip2, xz, as docker load takes), or None."""
    magic = f.read(6)
    f.seek(0)
    if magic[:3] == b"BZh":
        return bz2.BZ2File(f)  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(f)  # type: ignore[return-value]
    kind, stream = open_decompressed(f)
    return stream if kind else None


def _plain_tar(path: Path, spool_dir: Path, budget: DiskBudget) -> BinaryIO:
    """``path`` opened, or its decompressed copy if compressed (as skopeo does): members are read
    in the manifest's order, and each step back in a compressed stream inflated it again from
    the start (a 4 MB tar.gz cost 208 s of CPU). The copy is an unnamed file in the store's
    tmp/: it goes away with the process, however that ends."""
    f = open(path, "rb")  # noqa: SIM115 - returned, or closed here
    try:
        stream = _decompressed(f)
        if stream is None:
            return f
        spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - returned, or closed here
        try:
            # Charged as it is written: a small archive of zeros inflates without bound.
            shutil.copyfileobj(
                stream, ChargedWriter(spool, budget, f"the decompressed copy of {path}"), 1 << 20
            )
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        f.close()
        return spool
    except _BAD_SPOOL as e:
        f.close()
        raise ImageError(
            f"{path} is a damaged compressed archive, or it cannot be unpacked into the "
            f"image store's tmp/ ({e})"
        ) from None
    except BaseException:
        f.close()
        raise


class _TarSource(_Source):
    def __init__(self, path: Path, spool_dir: Path, budget: DiskBudget) -> None:
        super().__init__(path)
        self.file = _plain_tar(path, spool_dir, budget)
        try:
            # headers only, each bounded (tarstream.py); members are read on demand
            self.tar = BoundedTarFile(fileobj=BudgetedFile(self.file), mode="r")  # type: ignore[arg-type]
            members = self.tar.getmembers()
        except (tarfile.TarError, OSError) as e:
            self.file.close()
            raise ImageError(
                f"{path} is neither a directory nor a readable tar archive ({e}): give the file "
                "written by `docker save`, `skopeo copy ... oci-archive:` or an OCI layout directory"
            ) from None
        except ImageError as e:  # a hostile header (tarstream.py): say which file
            self.file.close()
            raise type(e)(f"{path}: {e}") from None
        self.members = {}
        for m in members:
            m.pax_headers = {}  # names, types, sizes and offsets are all that is used
            try:
                self.members[self.norm(m.name)] = m
            except ImageError:
                continue  # a hostile member name is simply never looked up

    def _resolve(self, name: str) -> tarfile.TarInfo:
        """The member ``name`` leads to through in-archive links (docker save links a layer it
        saved once); a loop is an error, where tarfile's own following recursed without end."""
        member = self.members[self.norm(name)]
        for _ in range(_MAX_LINKS):
            if not (member.issym() or member.islnk()):
                return member
            target = member.linkname
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
            try:
                member = self.members[self.norm(target)]
            except (KeyError, ImageError):
                raise ImageError(
                    f"{self.path}: {name!r} links to {member.linkname!r}, which is not in "
                    "the archive; the archive is incomplete or hostile"
                ) from None
        raise ImageError(
            f"{self.path}: {name!r} is a loop of links (more than {_MAX_LINKS}); the archive "
            "is hostile or corrupt"
        )

    def open(self, name: str) -> BinaryIO:
        member = self._resolve(name)
        f = self.tar.extractfile(member) if member.isreg() else None
        if f is None:
            raise ImageError(f"{self.path}: {name!r} is not a regular file in the archive")
        return f  # type: ignore[return-value]

    def exists(self, name: str) -> bool:
        try:
            return self.norm(name) in self.members
        except ImageError:
            return False

    def close(self) -> None:
        self.tar.close()
        self.file.close()


def _open_source(path: str | os.PathLike[str], store: Store) -> _Source:
    p = Path(path)
    if p.is_dir():
        return _DirSource(p)
    if not p.exists():
        raise ImageNotFoundError(f"image archive {str(p)!r} does not exist")
    return _TarSource(p, store.home / "tmp", store.budget())


# --- loading ---------------------------------------------------------------------------------


class _Loader:
    def __init__(self, store: Store, source: _Source, platform: Platform | None) -> None:
        self.store, self.src, self.platform = store, source, platform

    def blob(self, desc: dict[str, Any], what: str) -> bytes:
        digest = check_digest(desc.get("digest"), f"{what} digest")
        data = self.src.read(f"blobs/sha256/{hex_of(digest)}", what)
        return verify_bytes(data, digest, what, desc.get("size"))

    def ingest_layers(
        self, source_names: Iterable[tuple[str, str | None, int | None]], diff_ids: list[str]
    ) -> list[Any]:
        out = []
        # Both callers checked that the manifest and the config count the same layers.
        for (name, digest, size), diff_id in zip(source_names, diff_ids, strict=True):
            check_digest(diff_id, "diff_id")
            if digest and self.store.has_blob(digest) and self.store.has_layer(diff_id):
                out.append(self.store.ingest_layer(io.BytesIO(), digest=digest, diff_id=diff_id))
                continue
            try:
                stream = self.src.open(name)
            except (FileNotFoundError, KeyError):
                raise ImageError(
                    f"{self.src.path}: layer {name!r} is missing; the archive is incomplete"
                ) from None
            with stream:
                out.append(
                    self.store.ingest_layer(stream, digest=digest, diff_id=diff_id, size=size)
                )
        return out

    # docker save ---------------------------------------------------------------------------

    def docker(self, entry: dict[str, Any]) -> tuple[bytes, bytes, list[str]]:
        config = self.src.read(entry["Config"], "image config")
        # Only `blobs/sha256/<hex>` (Docker 25+) is a content address; classic `<hex>.json` names
        # are labels that Docker itself never checked (and real archives break them).
        if entry["Config"].startswith("blobs/") and (
            expected := _digest_from_name(entry["Config"])
        ):
            verify_bytes(config, expected, "image config")
        diff_ids = check_config(config, str(self.src.path))
        layers = entry.get("Layers") or []
        if len(layers) != len(diff_ids):
            raise ImageError(
                f"{self.src.path}: manifest.json lists {len(layers)} layers but the config "
                f"{len(diff_ids)}; the archive is corrupt"
            )
        names = [
            (n, _digest_from_name(n) if n.startswith("blobs/") else None, None) for n in layers
        ]
        with self.store.unpacking(len(layers)):  # each image has its own disk budget
            records = self.ingest_layers(names, diff_ids)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_bytes(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": r.media_type, "digest": r.digest, "size": r.size} for r in records
            ],
        }
        return (
            json.dumps(manifest, separators=(",", ":")).encode(),
            config,
            list(entry.get("RepoTags") or []),
        )

    # OCI layout ----------------------------------------------------------------------------

    def oci(self, desc: dict[str, Any]) -> tuple[bytes, bytes, str]:
        """Follow ``desc`` (index or manifest) down to one image; returns manifest, config, type."""
        for _depth in range(8):  # nested indexes are legal; unbounded nesting is not
            data = self.blob(desc, "manifest")
            doc = _parse(data, "manifest")
            media_type = doc.get("mediaType") or desc.get("mediaType", "")
            where = f"{self.src.path}: {desc['digest'][:19]}"
            if "manifests" in doc or media_type in INDEX_TYPES:
                desc = choose(
                    _descriptors(doc.get("manifests"), f"index {where}"),
                    self.platform,
                    f"index {where}",
                )
                continue
            config_desc, layers = image_descriptors(doc, where)
            if config_desc.get("mediaType") not in CONFIG_TYPES:
                raise ImageError(
                    f"{self.src.path}: {desc['digest'][:19]} is an artifact (config type "
                    f"{config_desc.get('mediaType')!r}), not a container image; nothing to run"
                )
            config = self.blob(config_desc, "image config")
            diff_ids = check_config(config, where)
            if len(layers) != len(diff_ids):
                raise ImageError(
                    f"{self.src.path}: manifest and config disagree on the number of layers"
                )
            names = []
            for layer in layers:
                check_layer_type(layer, where)
                digest = check_digest(layer.get("digest"), "layer digest")
                names.append((f"blobs/sha256/{hex_of(digest)}", digest, layer.get("size")))
            with self.store.unpacking(len(layers)):
                self.ingest_layers(names, diff_ids)
            return data, config, media_type or "application/vnd.oci.image.manifest.v1+json"
        raise ImageError(f"{self.src.path}: indexes nested more than 8 deep; refused")


def _parse(data: bytes, what: str) -> dict[str, Any]:
    obj = load_json(data, what)
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object; the archive is corrupt")
    return obj


def _descriptors(value: Any, where: str) -> list[dict[str, Any]]:
    """An index's ``manifests``: a list of descriptors with the spec's field types."""
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise ImageError(f"{where} has no list of manifest descriptors; the archive is corrupt")
    for desc in value:
        check_descriptor(desc, f"an entry of {where}")
    return value


def _docker_entries(value: Any, where: str) -> list[dict[str, Any]]:
    """manifest.json of `docker save`: entries with a Config name, Layers names, RepoTags strings."""
    if not isinstance(value, list) or not value:
        raise ImageError(f"{where} lists no images; the archive is empty or corrupt")
    for entry in value:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("Config"), str)
            and _null_or_strings(entry.get("Layers"))
            and _null_or_strings(entry.get("RepoTags"))
        ):
            raise ImageError(
                f"{where} has an entry without a Config name, or with Layers or RepoTags "
                "that are not lists of names; the archive is corrupt"
            )
    return value


def _null_or_strings(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _digest_from_name(name: str) -> str | None:
    """Docker names configs `<hex>.json`, `sha256:<hex>` or `blobs/sha256/<hex>`: all imply it."""
    base = name.rsplit("/", 1)[-1].removesuffix(".json").removeprefix("sha256:")
    if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
        return "sha256:" + base
    return None


def _oci_tags(desc: dict[str, Any]) -> tuple[list[str], str]:
    """Tags an index entry asks for, and the short name to match ``ref=`` against.

    `org.opencontainers.image.ref.name` is often a bare tag ("v1"), which names no repository;
    such images are loaded untagged (as Docker does) unless the caller tags them.
    """
    ann = desc.get("annotations") or {}
    full = ann.get(_CONTAINERD_NAME)
    short = ann.get(_REF_NAME) or ""
    tags = []
    if full:
        tags.append(full)
    elif short and ("/" in short or ":" in short):
        tags.append(short)
    return tags, short


def load(
    store: Store,
    path: str | os.PathLike[str],
    *,
    platform: str | None = None,
    ref: str | None = None,
    load_all: bool = False,
) -> list[tuple[ImageRecord, list[str]]]:
    """Load images from an archive into ``store``; returns (record, tags) per image.

    Without ``load_all``, exactly one image must be selected (the only one, or ``ref``).
    """
    plat = Platform.parse(platform) if platform else None
    src = _open_source(path, store)
    try:
        with store.loading():
            return _load(store, src, plat, ref, load_all)
    finally:
        src.close()


def _load(
    store: Store, src: _Source, plat: Platform | None, ref: str | None, load_all: bool
) -> list[tuple[ImageRecord, list[str]]]:
    loader = _Loader(store, src, plat)
    done = []
    if src.exists("manifest.json"):
        entries = _docker_entries(
            src.json("manifest.json", "manifest.json"), f"{src.path}: manifest.json"
        )
        if ref is not None:
            want = {str(reference.parse(ref))}
            entries = [
                e
                for e in entries
                if want & {str(reference.parse(t)) for t in e.get("RepoTags") or []}
            ]
            _one_or_error(src, entries, [ref], ref)
        elif not load_all:
            _one_or_error(src, entries, [t for e in entries for t in e.get("RepoTags") or []], None)
        for entry in entries:
            manifest, config, tags = loader.docker(entry)
            done.append((store.register_image(manifest, config, tags=tags), tags))
        return done
    if not src.exists("index.json"):
        hint = (
            " (it looks like a pre-2016 docker save: re-save it with a current docker)"
            if src.exists("repositories")
            else ""
        )
        raise ImageError(
            f"{src.path} is not an image archive: it has neither manifest.json (docker save) nor "
            f"index.json (OCI layout){hint}"
        )
    index = src.json("index.json", "index.json")
    descs = _descriptors(
        index.get("manifests") if isinstance(index, dict) else None, f"{src.path}: index.json"
    )
    if not descs:
        raise ImageError(f"{src.path}: index.json lists no images; the layout is empty")
    if ref is not None:
        descs = [d for d in descs if ref in (_oci_tags(d)[1], *_oci_tags(d)[0])]
        _one_or_error(src, descs, [ref], ref)
    elif not load_all and len(descs) > 1:
        _one_or_error(
            src, descs, [_oci_tags(d)[1] or d.get("digest", "?")[:19] for d in descs], None
        )
    errors = []
    for desc in descs:
        try:
            manifest, config, media_type = loader.oci(desc)
        except ImageError as e:
            if not load_all:
                raise
            errors.append(e)
            continue
        tags = _oci_tags(desc)[0]
        done.append(
            (
                store.register_image(manifest, config, tags=tags, manifest_media_type=media_type),
                tags,
            )
        )
    if not done:
        raise errors[0]
    return done


def _one_or_error(src: _Source, items: list[Any], names: list[str], ref: str | None) -> None:
    if ref is not None and not items:
        raise ImageNotFoundError(f"{src.path} holds no image named {ref!r}")
    if len(items) > 1:
        raise ImageError(
            f"{src.path} holds {len(items)} images ({', '.join(names) or 'untagged'}): pass "
            "ref=... to pick one, or use sandkit.images.load_all() / `sandkit load` for all"
        )


# --- saving ----------------------------------------------------------------------------------


def save(
    store: Store,
    images: list[tuple[ImageRecord, list[str]]],
    path: str | os.PathLike[str],
    fmt: str = "docker",
) -> None:
    """Write ``images`` (record, full tags) as one archive.

    "docker" writes the Docker 25 shape (manifest.json + repositories + an OCI layout), which
    both old and new `docker load` and `skopeo docker-archive:` read; "oci" writes an OCI image
    layout tar (`skopeo oci-archive:`). The file appears only once complete.
    """
    if fmt not in ("docker", "oci"):
        raise ImageError(f"unknown archive format {fmt!r}: use 'docker' or 'oci'")
    target = Path(path).absolute()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _write_archive(store, tar, images, fmt)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_archive(
    store: Store, tar: tarfile.TarFile, images: list[tuple[ImageRecord, list[str]]], fmt: str
) -> None:
    def add_bytes(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    written: set[str] = set()
    index_entries, docker_entries = [], []
    repositories: dict[str, dict[str, str]] = {}
    for rec, tags in images:
        blobs = store.image_blobs(rec.id)
        for desc in blobs:
            if desc["digest"] not in written:
                written.add(desc["digest"])
                with store.open_blob(desc["digest"]) as f:
                    info = tarfile.TarInfo(f"blobs/sha256/{hex_of(desc['digest'])}")
                    info.size, info.mode, info.mtime = os.fstat(f.fileno()).st_size, 0o644, 0
                    tar.addfile(info, f)
        refs = [reference.parse(t) for t in tags]
        base = {
            "mediaType": rec.manifest_media_type,
            "digest": rec.manifest_digest,
            "size": blobs[0]["size"],
        }
        # An image without a tag still gets its (unnamed) index entry.
        entry_refs: list[reference.Reference | None] = [*refs] or [None]
        for r in entry_refs:
            entry = dict(base)
            if r is not None:
                entry["annotations"] = {_CONTAINERD_NAME: str(r), _REF_NAME: r.tag or ""}
            index_entries.append(entry)
        docker_entries.append(
            {
                "Config": f"blobs/sha256/{hex_of(rec.id)}",
                "RepoTags": [r.familiar() for r in refs] or None,
                "Layers": [f"blobs/sha256/{hex_of(d['digest'])}" for d in blobs[2:]],
            }
        )
        for r in refs:
            repositories.setdefault(r.familiar_name, {})[r.tag or "latest"] = hex_of(rec.id)
    add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add_bytes(
        "index.json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": index_entries,
            }
        ).encode(),
    )
    if fmt == "docker":
        add_bytes("manifest.json", json.dumps(docker_entries).encode())
        if repositories:
            add_bytes("repositories", json.dumps(repositories).encode())
