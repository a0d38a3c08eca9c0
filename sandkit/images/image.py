"""`Image`: a read-only template that containers are made from."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..errors import ImageError
from .config import ImageConfig

if TYPE_CHECKING:
    from ..build.dsl import ImageRecipe
    from .store import ImageRecord, Store


@attrs.frozen
class Image:
    """A read-only, layered root filesystem plus the config that says how to run it.

    ``layer_dirs`` lists the applied layer directories from the bottom layer to the top one; a
    container stacks them as overlay lower directories, so nothing is copied per container.
    Images from the store also carry ``digest`` (manifest digest) and ``tags``; a container
    should hold ``image.lease()`` while it runs so that ``remove()`` is refused meanwhile.
    """

    layer_dirs: tuple[Path, ...]
    config: ImageConfig = ImageConfig()
    id: str = ""
    name: str = ""
    digest: str = ""
    tags: tuple[str, ...] = ()
    store: Store | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_directory(
        cls, path: str | os.PathLike[str], *, config: ImageConfig | None = None
    ) -> Image:
        """Use an existing directory tree as a one-layer image (it is never written to)."""
        root = Path(path).absolute()
        if not root.is_dir():
            raise ImageError(
                f"image directory {str(root)!r} does not exist or is not a directory: "
                "pass the path of an unpacked root filesystem (a folder with bin/, etc/, ...)"
            )
        if ":" in str(root) or "," in str(root):
            # overlayfs splits lowerdir= on ':' and the option string on ','
            raise ImageError(
                f"image directory {str(root)!r} contains ':' or ',', which overlayfs cannot take "
                "in a layer path: move or rename the directory"
            )
        return cls(layer_dirs=(root,), config=config or ImageConfig(), name=str(root))

    @classmethod
    def from_(
        cls,
        base: str | ImageRecipe,
        *,
        context: str | os.PathLike[str] | None = None,
        platform: str | None = None,
    ) -> ImageRecipe:
        """The start of a build in Python: ``Image.from_("debian:12").run("...").copy("src",
        "/app").cmd([...]).build(tag="app:1")`` (see `sandkit.build.dsl`). ``base`` is an
        image reference, "scratch" or another recipe; ``context`` the directory COPY and ADD
        read from (default: the working directory)."""
        from ..build.dsl import ImageRecipe

        return ImageRecipe.from_(base, context=context, platform=platform)

    # --- from the store ----------------------------------------------------------------------

    @classmethod
    def from_record(cls, store: Store, rec: ImageRecord, name: str = "") -> Image:
        """The image that ``rec`` (one of `Store.records()`) describes in ``store``, named
        ``name`` or else by its first tag (its short id if it has none)."""
        from .reference import parse

        store.refresh_layers(rec)  # applied for another id mapping: applied again
        cfg = json.loads(store.read_blob(rec.id))
        tags = tuple(parse(t).familiar() for t in store.tags_of(rec.id))
        return cls(
            layer_dirs=tuple(store.layer_dir(layer.diff_id) for layer in rec.layers),
            config=ImageConfig.from_oci(cfg.get("config")),
            id=rec.id,
            name=name or (tags[0] if tags else rec.id[:19]),
            digest=rec.manifest_digest,
            tags=tags,
            store=store,
        )

    @classmethod
    def get(cls, ref: str, *, store: Store | None = None) -> Image:
        """A local image by name[:tag], name@digest or id (prefix); ImageNotFoundError if absent."""
        from .store import Store

        store = store or Store.default()
        return cls.from_record(store, store.resolve(ref), ref)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        ref: str | None = None,
        platform: str | None = None,
        tag: str | None = None,
        store: Store | None = None,
    ) -> Image:
        """Load a `docker save` archive or an OCI layout (dir or tar) into the local store.

        ``ref`` picks one image of a multi-image archive (a tag or `ref.name`); ``platform``
        ("linux/arm64") overrides the host's for multi-platform indexes; ``tag`` adds a tag.
        """
        from . import archive
        from .store import Store

        store = store or Store.default()
        ((rec, _tags),) = archive.load(store, path, platform=platform, ref=ref)
        if tag:
            store.tag(rec.id, tag)
        return cls.from_record(store, rec)

    @classmethod
    def pull(
        cls,
        ref: str,
        *,
        platform: str | None = None,
        insecure: bool = False,
        auth: Any = None,
        progress: Any = None,
        ca_file: str | os.PathLike[str] | None = None,
        store: Store | None = None,
    ) -> Image:
        """Pull ``ref`` from its registry into the local store (see sandkit.images.registry).

        ``auth``: (user, password) or registry.Credentials (default: the Docker config);
        ``progress``: a callable receiving registry.Progress events; ``insecure``: allow plain
        HTTP and unverified TLS; ``ca_file``: an extra CA bundle (PEM) to trust.
        """
        from .registry import pull_sync
        from .store import Store

        store = store or Store.default()
        rec = pull_sync(
            ref,
            store=store,
            platform=platform,
            insecure=insecure,
            ca_file=ca_file,
            auth=auth,
            progress=progress,
        )
        return cls.from_record(store, rec, ref)

    def push(
        self,
        ref: str | None = None,
        *,
        insecure: bool = False,
        auth: Any = None,
        progress: Any = None,
        ca_file: str | os.PathLike[str] | None = None,
        chunk_size: int | None = None,
    ) -> str:
        """Push to ``ref`` (default: the image's first tag); returns the manifest digest."""
        from .registry import push_sync
        from .registry.push import DEFAULT_CHUNK_SIZE

        store = self._store()
        target = ref or next(iter(store.tags_of(self.id)), None)
        if target is None:
            raise ImageError(
                f"image {self.name!r} has no tag to push to: pass ref='registry/name:tag'"
            )
        return push_sync(
            self.id,
            target,
            store=store,
            insecure=insecure,
            ca_file=ca_file,
            auth=auth,
            progress=progress,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        )

    @classmethod
    def build(
        cls,
        context: str | os.PathLike[str],
        *,
        dockerfile: str | os.PathLike[str] = "Dockerfile",
        tag: str | list[str] | None = None,
        build_args: dict[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        network: str = "bridge",
        labels: dict[str, str] | None = None,
        progress: Any = "auto",
        store: Store | None = None,
    ) -> Image:
        """Build the Dockerfile ``dockerfile`` (relative to ``context``) into the local store, as
        `docker build` does (see sandkit.build; the async twin is `sandkit.build.build_async`).

        ``progress``: "auto" (rich on a terminal, else plain lines on stderr), "plain", "rich",
        "quiet" or a `sandkit.build.progress.Progress`; ``network``: the network of RUN steps.
        """
        from ..build import build

        return build(
            context,
            dockerfile=dockerfile,
            tag=tag,
            build_args=build_args,
            target=target,
            no_cache=no_cache,
            network=network,
            labels=labels,
            progress=progress,
            store=store,
        )

    def _store(self) -> Store:
        if self.store is None:
            raise ImageError(
                f"image {self.name!r} is not in the image store (it was made from a directory): "
                "only stored images can be tagged, saved, inspected or removed"
            )
        return self.store

    def tag(self, ref: str) -> Image:
        """Add the tag ``ref`` (moving it from any other image, as Docker does)."""
        self._store().tag(self.id, ref)
        return self.from_record(self._store(), self._store().record(self.id), self.name)

    def remove(self) -> None:
        """Delete the image and its tags; ImageInUseError while a container uses it."""
        self._store().remove_image(self.id)

    def lease(self) -> contextlib.AbstractContextManager[int]:
        """Hold while a container runs from this image (blocks remove(), across processes)."""
        if self.store is None:
            return contextlib.nullcontext(0)
        return self.store.lease(self.id)

    def save(
        self, path: str | os.PathLike[str], format: Literal["docker", "oci"] = "docker"
    ) -> None:
        """Write an archive that `docker load` (format="docker") or skopeo/podman read."""
        from . import archive

        store = self._store()
        archive.save(store, [(store.record(self.id), store.tags_of(self.id))], path, format)

    def inspect(self) -> dict[str, Any]:
        """What `docker image inspect` shows, in the same spirit (id, digests, size, layers...)."""
        from .reference import parse

        store = self._store()
        rec = store.record(self.id)
        store.refresh_layers(rec)  # applied for another id mapping: applied again
        cfg = json.loads(store.read_blob(rec.id))
        tags = store.tags_of(rec.id)
        return {
            "id": rec.id,
            "repo_tags": [parse(t).familiar() for t in tags],
            "repo_digests": sorted(
                {f"{parse(t).familiar_name}@{rec.manifest_digest}" for t in tags}
            ),
            "manifest_digest": rec.manifest_digest,
            "created": rec.created,
            "platform": rec.platform,
            "size": sum(store.layer_size(layer.diff_id) for layer in rec.layers),
            "layers": [
                {
                    "digest": layer.digest,
                    "diff_id": layer.diff_id,
                    "size": layer.size,
                    "media_type": layer.media_type,
                    "path": str(store.layer_dir(layer.diff_id)),
                }
                for layer in rec.layers
            ],
            "config": cfg.get("config") or {},
        }
