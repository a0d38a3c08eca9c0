"""Shared helpers: an isolated store per test, layer/archive builders, a canary outside the store."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from sandkit.images.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    home = tmp_path / "home"
    monkeypatch.setenv("SANDKIT_HOME", str(home))
    return Store(home)


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside every store/layer dir; hostile layers aim at it. Checked after."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / "file").write_text("untouched")
    before = sorted(os.listdir(d))
    yield d
    assert sorted(os.listdir(d)) == before, "a layer wrote next to the canary"
    assert (d / "file").read_text() == "untouched"
    assert not (d / "file").is_symlink()


# --- tar builders ----------------------------------------------------------------------------

Entry = tuple  # (name, kind, payload, extra-dict)


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """Build a layer tar. kind: file (payload=bytes), dir, symlink/hardlink (payload=target),
    chr/blk (payload=(major, minor)), fifo. extra may set mode, uid, gid, mtime, xattrs, size."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name, kind, payload, *rest = entry
            extra = rest[0] if rest else {}
            info = tarfile.TarInfo(name)
            info.mode = extra.get("mode", 0o755 if kind == "dir" else 0o644)
            info.uid, info.gid = extra.get("uid", 0), extra.get("gid", 0)
            info.mtime = extra.get("mtime", 1_600_000_000)
            if "xattrs" in extra:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in extra["xattrs"].items()}
            data = None
            if kind == "file":
                data = payload or b""
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind in ("chr", "blk"):
                info.type = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                info.devmajor, info.devminor = payload
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ingest(store: Store, blob: bytes, tar: bytes) -> Any:
    """`Store.ingest_layer` of ``blob`` (the compressed ``tar``), named by its own digests."""
    return store.ingest_layer(io.BytesIO(blob), digest=sha(blob), diff_id=sha(tar), size=len(blob))


def oci_layout(
    path: Path,
    layers: list[bytes],
    *,
    config: dict[str, Any] | None = None,
    compress: str = "gzip",
    ref_name: str | None = "example.com/test/img:1",
    corrupt_layer: bool = False,
) -> Path:
    """Write an OCI image layout directory with the given (uncompressed) layer tars."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        d = sha(data)
        (blobs / d[7:]).write_bytes(data)
        return d

    descs = []
    for layer in layers:
        if compress == "gzip":
            blob, mt = gzip.compress(layer, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            import zstandard

            blob, mt = (
                zstandard.ZstdCompressor().compress(layer),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            )
        else:
            blob, mt = layer, "application/vnd.oci.image.layer.v1.tar"
        d = put(blob)
        if corrupt_layer:
            (blobs / d[7:]).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
        descs.append({"mediaType": mt, "digest": d, "size": len(blob)})
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": config or {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }
    cfg_bytes = json.dumps(cfg).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(cfg_bytes),
            "size": len(cfg_bytes),
        },
        "layers": descs,
    }
    man = json.dumps(manifest).encode()
    entry: dict[str, Any] = {
        "mediaType": manifest["mediaType"],
        "digest": put(man),
        "size": len(man),
    }
    if ref_name:
        entry["annotations"] = {
            "io.containerd.image.name": ref_name,
            "org.opencontainers.image.ref.name": ref_name.rsplit(":", 1)[-1],
        }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return path


def tree(root: Path) -> dict[str, str]:
    """{relative path: kind/content} of a directory, without following symlinks."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_dir():
                out[rel] = "dir"
            elif full.is_file():
                out[rel] = full.read_bytes().decode(errors="replace")
            else:
                st = full.lstat()
                out[rel] = (
                    f"dev {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
                    if st.st_rdev or not st.st_size
                    else "special"
                )
    return out


REPO = Path(__file__).resolve().parents[2]


def python_child(code: str, timeout: float = 300) -> list[str]:
    """Run ``code`` in a fresh interpreter from the checkout (so that what it measures, its peak
    memory or the bytes it read, is its own); returns its stdout lines, failing on an error."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()
