"""`RunSpec`: everything `sandkit run` was asked for, checked, in a form that survives JSON.

The foreground run and the detached supervisor build their container from the same options
(`container_options`), so the two can never disagree on what a flag means.
"""

from __future__ import annotations

import argparse
from typing import Any, cast

import attrs

from ..aio import AsyncContainer
from ..images.config import ImageConfig, resolve_command
from ..images.image import Image
from . import options
from ._runtime import ContainerOptions, Mount, handover


@attrs.define
class RunSpec:
    """What one ``sandkit run`` asks for: the image, the container's `ContainerOptions`, the
    command and how it is attached. A detached container's supervisor builds the same container
    from `container_options`; `to_json` is what `sandkit inspect` shows."""

    image: str
    options: ContainerOptions = attrs.field(factory=ContainerOptions)  # the container's
    command: list[str] | None = None  # None: the image's default
    entrypoint: str | None = None  # None: the image's; "" clears it
    interactive: bool = False
    tty: bool = False
    name: str | None = None
    remove: bool = False
    publish_all: bool = False  # -P: the image's ExposedPorts too, on ephemeral host ports

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunSpec:
        """The spec of a parsed ``run`` command line; `UsageError` for a malformed flag value
        (``--ulimit``, ``--storage-opt``, ``--security-opt``, ``-v``, ``--tmpfs``)."""
        mounts = [options.volume(v) for v in args.volume] + [options.tmpfs(t) for t in args.tmpfs]
        seccomp = options.seccomp(args.security_opt)
        container = ContainerOptions(
            env=options.environment(args.env_file, args.env),
            workdir=args.workdir,
            user=args.user,
            hostname=args.hostname,
            mounts=mounts,
            read_only=args.read_only,
            network=args.network,
            aliases=list(args.network_alias),
            ports=options.published_ports(args.publish),
            memory=args.memory,
            memory_swap=args.memory_swap,
            cpus=args.cpus,
            cpu_shares=args.cpu_shares,
            pids_limit=args.pids_limit,
            disk_size=options.storage_size(args.storage_opt),
            rlimits=options.ulimits(args.ulimit) or None,
            cap_add=list(args.cap_add),
            cap_drop=list(args.cap_drop),
            seccomp=None if seccomp == "unconfined" else seccomp,
        )
        health = options.healthcheck(args)
        if health is not None:  # else the image's own check, as it is
            container["healthcheck"] = health
        egress = options.egress(args.egress)
        if egress is not None:  # else the default ("all" on a network; refused without one)
            container["egress"] = egress
        return cls(
            image=args.image,
            options=container,
            command=list(args.command) or None,
            entrypoint=args.entrypoint,
            interactive=args.interactive,
            tty=args.tty,
            name=args.name,
            remove=args.rm,
            publish_all=args.publish_all,
        )

    def to_json(self) -> dict[str, Any]:
        """One flat object: the run's fields and the container's options side by side (what
        `sandkit inspect` reads)."""
        data = attrs.asdict(self, filter=lambda field, _: field.name != "options")
        mounts = [attrs.asdict(Mount.parse(m)) for m in self.options.get("mounts", ())]
        return {**data, **self.options, "mounts": mounts}

    # --- what the spec becomes ------------------------------------------------------------------

    def resolve_image(self) -> Image | str:
        """'host', a directory holding a root filesystem, or an image in the local store."""
        return handover.image_from_text(self.image)

    def image_source(self) -> str:
        """The image as a detached container's supervisor finds it again, from its own
        working directory: a directory by its absolute path."""
        return handover.absolute_image_text(self.image)

    def argv(self, image: Image | str) -> list[str]:
        """The command per Docker's ENTRYPOINT/CMD rules (see `resolve_command`)."""
        config = image.config if isinstance(image, Image) else ImageConfig()
        if self.entrypoint is None:
            return resolve_command(config, self.command)
        return resolve_command(config, self.command, entrypoint=self.entrypoint)

    def container(self, image: Image | str) -> AsyncContainer:
        """A container for the spec; its options are checked here (bad limits raise)."""
        return AsyncContainer(image, **self.container_options(image))

    def container_options(self, image: Image | str) -> ContainerOptions:
        """The container's options, with ``-P``'s ports: what a supervisor is handed."""
        wanted = self.options.copy()
        if self.publish_all and isinstance(image, Image):
            published = list(cast(list[str], wanted.get("ports") or []))
            wanted["ports"] = published + exposed_ports(image, published)
        return wanted


def exposed_ports(image: Image, published: list[str]) -> list[str]:
    """The image's ExposedPorts ("80/tcp") that ``-p`` does not publish already, as `-P` takes
    them: each on an ephemeral host port."""
    from ._runtime import container_side, parse_port

    taken = {parse_port(p).key for p in published}
    wanted = []
    for exposed in image.config.exposed_ports:
        number, proto = container_side(exposed, exposed)
        if f"{number}/{proto}" not in taken:
            wanted.append(f"{number}/{proto}")
    return wanted
