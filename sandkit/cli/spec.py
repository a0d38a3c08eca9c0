"""`RunSpec`: everything `sandkit run` was asked for, checked, in a form that survives JSON.

The foreground run and the detached supervisor build their container from the same spec, so the
two can never disagree on what a flag means.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import attrs

from ..images.config import ImageConfig, resolve_command
from ..images.image import Image
from ..runtime.container import AsyncContainer, resolve_image
from ..runtime.mounts import Mount
from ..runtime.plan import HOST_IMAGE
from . import options


@attrs.define
class RunSpec:
    image: str
    command: list[str] | None = None  # None: the image's default
    entrypoint: str | None = None  # None: the image's; "" clears it
    env: dict[str, str] = attrs.field(factory=dict)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    mounts: list[dict[str, Any]] = attrs.field(factory=list)
    read_only: bool = False
    network: str = "none"
    memory: str | None = None
    memory_swap: str | None = None
    cpus: float | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    disk_size: str | None = None
    rlimits: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    cap_add: list[str] = attrs.field(factory=list)
    cap_drop: list[str] = attrs.field(factory=list)
    seccomp: str = "default"
    interactive: bool = False
    tty: bool = False
    name: str | None = None
    remove: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunSpec:
        mounts = [options.volume(v) for v in args.volume] + [options.tmpfs(t) for t in args.tmpfs]
        return cls(
            image=args.image,
            command=list(args.command) or None,
            entrypoint=args.entrypoint,
            env=options.environment(args.env_file, args.env),
            workdir=args.workdir,
            user=args.user,
            hostname=args.hostname,
            mounts=[attrs.asdict(m) for m in mounts],
            read_only=args.read_only,
            network=args.network,
            memory=args.memory,
            memory_swap=args.memory_swap,
            cpus=args.cpus,
            cpu_shares=args.cpu_shares,
            pids_limit=args.pids_limit,
            disk_size=options.storage_size(args.storage_opt),
            rlimits=options.ulimits(args.ulimit),
            cap_add=list(args.cap_add),
            cap_drop=list(args.cap_drop),
            seccomp=options.seccomp(args.security_opt),
            interactive=args.interactive,
            tty=args.tty,
            name=args.name,
            remove=args.rm,
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["rlimits"] = {k: tuple(v) for k, v in data.get("rlimits", {}).items()}
        return cls(**data)

    # --- what the spec becomes ------------------------------------------------------------------

    def resolve_image(self) -> Image | str:
        """'host', a directory holding a root filesystem, or an image in the local store."""
        image = self.image
        if image != HOST_IMAGE and (image.startswith(("/", ".")) or os.path.isdir(image)):
            return resolve_image(Path(image))
        return resolve_image(image)

    def argv(self, image: Image | str) -> list[str]:
        """The command per Docker's ENTRYPOINT/CMD rules (see `resolve_command`)."""
        config = image.config if isinstance(image, Image) else ImageConfig()
        if self.entrypoint is None:
            return resolve_command(config, self.command)
        return resolve_command(config, self.command, entrypoint=self.entrypoint)

    def container(self, image: Image | str, *, hostname: str | None = None) -> AsyncContainer:
        """A container for the spec; its options are checked here (bad limits raise)."""
        return AsyncContainer(
            image,
            env=self.env,
            workdir=self.workdir,
            user=self.user,
            hostname=self.hostname or hostname,
            mounts=[Mount(**m) for m in self.mounts],
            read_only=self.read_only,
            network=self.network,
            memory=self.memory,
            memory_swap=self.memory_swap,
            cpus=self.cpus,
            cpu_shares=self.cpu_shares,
            pids_limit=self.pids_limit,
            disk_size=self.disk_size,
            rlimits=self.rlimits or None,
            cap_add=self.cap_add,
            cap_drop=self.cap_drop,
            seccomp=None if self.seccomp == "unconfined" else self.seccomp,
        )
