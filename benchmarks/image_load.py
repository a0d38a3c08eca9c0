"""Benchmark: load + apply of a large 2-layer image vs `skopeo copy` + `umoci unpack`, and
container start on a 100-layer vs a 1-layer image.

    python benchmarks/image_load.py [--source /usr/lib] [--skip-start]

The "large image" is a host directory (default /usr/lib/gcc, ~120 MB here) split into two layers
and written as a docker-archive, so no network or debootstrap is needed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "images"))

from conftest import oci_layout, tar_bytes

from sandkit.images import Image, Store


def layer_from_dir(src: Path, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            tar.add(src / name, arcname=f"{src.name}/{name}")
    return buf.getvalue()


def build_archive(src: Path, work: Path) -> Path:
    names = sorted(os.listdir(src))
    half = len(names) // 2
    layers = [layer_from_dir(src, names[:half]), layer_from_dir(src, names[half:])]
    layout = oci_layout(work / "layout", layers, compress="gzip", ref_name="bench/large:1")
    out = work / "large.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:1", f"docker-archive:{out}:bench/large:1"],
        check=True,
    )
    shutil.rmtree(layout)
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="/usr/lib/gcc")
    ap.add_argument("--skip-start", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        archive = build_archive(Path(args.source), work)
        print(f"archive: {archive.stat().st_size / 1e6:.0f} MB, 2 layers")
        ours = timed(lambda: Image.load(archive, store=Store(work / "home")))

        def theirs() -> None:
            subprocess.run(
                ["skopeo", "copy", "-q", f"docker-archive:{archive}", f"oci:{work / 'oci'}:x"],
                check=True,
            )
            subprocess.run(
                ["umoci", "unpack", "--image", f"{work / 'oci'}:x", str(work / "bundle")],
                check=True,
                capture_output=True,
            )

        other = timed(theirs)
        print(
            f"sandkit load+apply: {ours:.2f}s   skopeo copy + umoci unpack: {other:.2f}s   "
            f"ratio (sandkit/theirs): {ours / other:.2f}"
        )
        if args.skip_start:
            return
        import sandkit

        if not hasattr(sandkit, "Container"):
            print("container start: skipped (runtime not available)")
            return
        store = Store(work / "home2")
        many = [tar_bytes([(f"f{i}", "file", str(i).encode())]) for i in range(100)]
        img100 = Image.load(
            oci_layout(work / "l100", [tar_bytes([("bin", "dir", None)]), *many[:99]]), store=store
        )
        one_layer = tar_bytes(
            [("bin", "dir", None)] + [(f"f{i}", "file", b"x") for i in range(100)]
        )
        img1 = Image.load(oci_layout(work / "l1", [one_layer], ref_name="b/one:1"), store=store)
        for label, img in (("1 layer", img1), ("100 layers", img100)):
            runs = []
            try:
                for _ in range(10):
                    t0 = time.perf_counter()
                    with sandkit.Container(img):
                        pass
                    runs.append(time.perf_counter() - t0)
            except sandkit.errors.SandkitError as e:  # report, keep the other figures
                print(f"container start+stop, {label}: failed: {e}")
                continue
            runs.sort()
            print(f"container start+stop, {label}: median {runs[len(runs) // 2] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
