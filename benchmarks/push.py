"""Push of a multi-layer image (>= 100 MB compressed) to a fresh local docker-registry: sandkit's
`Image.push` side by side with `skopeo copy` of the same image from an OCI layout. Each run
pushes to a registry of its own, so every blob is really uploaded. Prints the medians and the
ratio.

    python benchmarks/push.py [--layers 5] [--mb-per-layer 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The pull benchmark's image and helpers; importing it puts the repository and tests/ on sys.path.
from pull import layer, timed
from images.conftest import oci_layout
from registry.server import make_registry

from sandkit.images.image import Image
from sandkit.images.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--mb-per-layer", type=int, default=24)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("skopeo"):
        sys.exit("skopeo is needed: apt-get install skopeo")
    work = Path(tempfile.mkdtemp(prefix="sandkit-bench-"))
    try:
        print(f"building {args.layers} layers of {args.mb_per_layer} MiB ...", file=sys.stderr)
        layers = [layer(i, args.mb_per_layer) for i in range(args.layers)]
        layout = oci_layout(work / "layout", layers, ref_name="bench:1")
        image = Image.load(layout, store=Store(work / "store"))
        size = sum(layer.size for layer in image.store.record(image.id).layers)
        print(f"image: {args.layers} layers, {size / 1e6:.1f} MB compressed", file=sys.stderr)

        def to_fresh_registry(run: int, push) -> float:  # type: ignore[no-untyped-def]
            reg = make_registry(work / f"registry{run}", "http")
            try:
                return timed(lambda: push(reg.ref("bench/app:1")))
            finally:
                reg.close()
                shutil.rmtree(work / f"registry{run}")

        def skopeo(ref: str) -> None:
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:1",
                    f"docker://{ref}",
                ],
                check=True,
            )

        to_fresh_registry(-1, image.push)  # warm the page cache
        ours, theirs = [], []
        for run in range(args.runs):  # interleaved so both see the same machine state
            ours.append(to_fresh_registry(2 * run, image.push))
            theirs.append(to_fresh_registry(2 * run + 1, skopeo))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"sandkit push:                      {a:.2f} s  ({size / a / 1e6:.0f} MB/s)")
        print(f"skopeo copy from an OCI layout:    {b:.2f} s  ({size / b / 1e6:.0f} MB/s)")
        print(
            f"ratio sandkit/skopeo: {a / b:.2f}  ({'faster' if a <= b else 'slower'} than skopeo)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
