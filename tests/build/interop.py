"""The Docker side of the build interop tests: contexts written from a `cases.Case`,
`docker build` with the classic builder (never pulling), and what Docker makes of an image (its
flattened file tree from `docker export`, its config from `docker image inspect`), so that an
image built by sandkit and one built by Docker are compared by the same means."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import dockerd

from .cases import Case, Link

# The config fields the issue names, plus the other ones Dockerfile instructions set.
CONFIG_FIELDS = (
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Healthcheck",
    "Volumes",
    "StopSignal",
)


def write_context(case: Case, root: Path) -> Path:
    """The build context of ``case`` under ``root`` (made), its Dockerfile included."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(case.dockerfile)
    for name, spec in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, Link):
            path.symlink_to(spec.target)
            continue
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        path.write_bytes(data)
        os.chmod(path, mode)
    return root


def docker(env: dict[str, str], *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return dockerd.run(env, *argv, check=check)


def docker_build(env: dict[str, str], context: Path, tag: str, case: Case) -> None:
    """`docker build` of ``context`` with the classic builder, which never pulls a FROM image
    that is already there (--pull=false)."""
    argv = ["build", "--pull=false", "--network", "none", "-t", tag]
    for key, value in case.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if case.target:
        argv += ["--target", case.target]
    r = subprocess.run(
        ["docker", *argv, str(context)],
        env={**env, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    if r.returncode != 0:
        raise AssertionError(f"docker build failed:\n{r.stdout.decode()}\n{r.stderr.decode()}")


def exported_tree(env: dict[str, str], image: str, work: Path) -> dict[str, tuple[Any, ...]]:
    """The flattened file tree Docker gives a container of ``image`` (`docker export`): for each
    path its type, mode, owner, and contents (sha256), link target or device numbers. Times
    are left out: a RUN step's files are as new as the build."""
    created = docker(env, "create", "--network", "none", image, "/never-run")
    container = created.stdout.decode().strip()
    archive = work / f"{container}.tar"
    try:
        docker(env, "export", "-o", str(archive), container)
    finally:
        docker(env, "rm", container)
    try:
        return _tree_of(archive)
    finally:
        archive.unlink()


def _tree_of(archive: Path) -> dict[str, tuple[Any, ...]]:
    tree: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = "/" + member.name.lstrip("./").rstrip("/")
            tree[name] = _entry(tar, member)
    return tree


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[Any, ...]:
    owner = (member.mode, member.uid, member.gid)
    if member.isreg():
        stream = tar.extractfile(member)
        assert stream is not None
        return ("file", *owner, hashlib.sha256(stream.read()).hexdigest())
    if member.issym():
        return ("symlink", *owner, member.linkname)
    if member.islnk():
        return ("hardlink", *owner, "/" + member.linkname.lstrip("./"))
    if member.isdir():
        return ("dir", *owner)
    return ("other", *owner, member.type, member.devmajor, member.devminor)


def config_of(env: dict[str, str], image: str) -> dict[str, Any]:
    """The config fields (CONFIG_FIELDS) of ``image`` as Docker reads them, empty ones left out
    (Docker writes an unset field as null or leaves it out, depending on how it was made)."""
    inspected = json.loads(docker(env, "image", "inspect", image).stdout)[0]
    config = inspected.get("Config") or {}
    return {key: config[key] for key in CONFIG_FIELDS if config.get(key)}


def tree_difference(
    expected: dict[str, tuple[Any, ...]], actual: dict[str, tuple[Any, ...]]
) -> dict[str, tuple[Any, Any]]:
    """Each path whose entry differs, with (expected, actual); None where a path is missing."""
    return {
        path: (expected.get(path), actual.get(path))
        for path in sorted(expected.keys() | actual.keys())
        if expected.get(path) != actual.get(path)
    }
