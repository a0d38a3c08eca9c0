"""Pull of a multi-layer image (>= 100 MB compressed) from a local docker-registry: sandkit
(download + verify + decompress + apply, one pass) side by side with `skopeo copy` of the same
image into an OCI layout (download + verify only). Prints the times, the CPU seconds each side
and the registry used (medians over the same interleaved runs), and the ratio. With umoci
installed, also the peers' way to what a sandkit pull gives (a root filesystem ready to run):
skopeo copy, then `umoci raw unpack`.

    python benchmarks/pull.py [--layers 5] [--mb-per-layer 24] [--runs 9] [--tls]

``--tls`` serves the registry over HTTPS with a CA made for the run, as real registries are.

Everything happens under $TMPDIR. Put it on a journaled filesystem: ext4 without a journal
skips recently deleted inodes when it allocates new ones, one by one, so a benchmark that
pulls and deletes over and over slows down the side that creates more files (sandkit's
pull creates a file per layer entry; skopeo's copy, one per blob).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from images.conftest import oci_layout, tar_bytes  # noqa: E402 (found through sys.path above)
from registry.server import make_registry  # noqa: E402

from sandkit.images.image import Image  # noqa: E402
from sandkit.images.store import Store  # noqa: E402


def layer(index: int, mb: int) -> bytes:
    """Files like a real image: mostly incompressible (binaries, archives) plus some text."""
    rng = random.Random(index)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(2000)
    ]
    entries: list = [(f"layer{index}", "dir", None)]
    for n in range(mb):
        text = n % 4 == 3  # a quarter compressible, the rest random
        data = (
            b" ".join(rng.choice(words) for _ in range(200_000))[: 1 << 20]
            if text
            else rng.randbytes(1 << 20)
        )
        entries.append((f"layer{index}/file{n}", "file", data))
    return tar_bytes(entries)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_seconds(who: int) -> float:
    """user + sys of this process (RUSAGE_SELF) or of its waited-for children (RUSAGE_CHILDREN)."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int) -> float:
    """user + sys so far of a process we did not wait for (the registry), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--mb-per-layer", type=int, default=24)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tls", action="store_true", help="serve the registry over HTTPS")
    args = ap.parse_args()
    if not shutil.which("skopeo"):
        sys.exit("skopeo is needed: apt-get install skopeo")
    work = Path(tempfile.mkdtemp(prefix="sandkit-bench-"))
    reg = make_registry(work / "registry", "tls" if args.tls else "http")
    # skopeo reads a registry's CA from a directory; without TLS it is told not to verify.
    certs = work / "certs"
    certs.mkdir()
    if reg.ca_file:
        shutil.copy(reg.ca_file, certs / "ca.crt")
    skopeo_tls = [f"--src-cert-dir={certs}"] if args.tls else ["--src-tls-verify=false"]
    try:
        print(f"building {args.layers} layers of {args.mb_per_layer} MiB ...", file=sys.stderr)
        layers = [layer(i, args.mb_per_layer) for i in range(args.layers)]
        layout = oci_layout(work / "layout", layers, ref_name="bench:1")
        image = Image.load(layout, store=Store(work / "src"))
        ref = reg.ref("bench/app:1")
        image.push(ref, ca_file=reg.ca_file)
        size = sum(layer.size for layer in image.store.record(image.id).layers)
        print(
            f"image: {args.layers} layers, {size / 1e6:.1f} MB compressed, served over {reg.scheme}",
            file=sys.stderr,
        )

        # CPU seconds of each side and of the registry serving it: on a 2-core machine a pull
        # is CPU-bound, so these say where a gap comes from better than the wall times.
        cpu: dict[str, list[float]] = {
            "sandkit": [],
            "skopeo": [],
            "registry-sandkit": [],
            "registry-skopeo": [],
        }

        def measured(side: str, who: int, fn) -> float:  # type: ignore[no-untyped-def]
            mine, served = cpu_seconds(who), process_cpu(reg.proc.pid)
            t = timed(fn)
            cpu[side].append(cpu_seconds(who) - mine)
            cpu[f"registry-{side}"].append(process_cpu(reg.proc.pid) - served)
            return t

        def sandkit_pull(run: int) -> float:
            home = work / f"pull{run}"
            t = measured(
                "sandkit",
                resource.RUSAGE_SELF,
                lambda: Image.pull(ref, store=Store(home), ca_file=reg.ca_file),
            )
            shutil.rmtree(home)
            return t

        def skopeo_copy(run: int) -> float:
            dest = work / f"skopeo{run}"
            t = measured(
                "skopeo",
                resource.RUSAGE_CHILDREN,
                lambda: subprocess.run(
                    ["skopeo", "copy", "-q", *skopeo_tls, f"docker://{ref}", f"oci:{dest}:1"],
                    check=True,
                ),
            )
            shutil.rmtree(dest)
            return t

        def skopeo_umoci(run: int) -> float:
            """The same result as a sandkit pull, a root filesystem ready to run, from the peers."""
            dest = work / f"unpack{run}"
            dest.mkdir()
            t = timed(
                lambda: (
                    subprocess.run(
                        [
                            "skopeo",
                            "copy",
                            "-q",
                            *skopeo_tls,
                            f"docker://{ref}",
                            f"oci:{dest}/layout:1",
                        ],
                        check=True,
                    ),
                    subprocess.run(
                        ["umoci", "raw", "unpack", "--image", f"{dest}/layout:1", f"{dest}/rootfs"],
                        check=True,
                        capture_output=True,
                    ),
                )
            )
            shutil.rmtree(dest)
            return t

        def apply_only(run: int) -> float:
            """The floor for any pull into this store: ingest the same blobs from local files."""
            target = Store(work / f"apply{run}")

            def ingest() -> None:
                for rec in image.store.record(image.id).layers:
                    with image.store.open_blob(rec.digest) as f:
                        target.ingest_layer(
                            f, digest=rec.digest, diff_id=rec.diff_id, size=rec.size
                        )

            t = timed(ingest)
            shutil.rmtree(target.home)
            return t

        sandkit_pull(-1), skopeo_copy(-1)  # warm the page cache and the registry
        for samples in cpu.values():
            samples.clear()
        ours, theirs = [], []
        for run in range(args.runs):  # interleaved so both see the same machine state
            ours.append(sandkit_pull(run))
            theirs.append(skopeo_copy(run))
        a, b = statistics.median(ours), statistics.median(theirs)
        # Each run's pair shares the machine's state of the moment (other tenants of a VM,
        # writeback): the median of the pairs' ratios is steadier than the ratio of medians.
        pairs = sorted(x / y for x, y in zip(ours, theirs, strict=True))
        print(
            f"sandkit pull (download+verify+decompress+apply): {a:.2f} s  ({size / a / 1e6:.0f} MB/s)"
        )
        print(
            f"skopeo copy to oci layout (download+verify):      {b:.2f} s  ({size / b / 1e6:.0f} MB/s)"
        )
        m = {side: statistics.median(samples) for side, samples in cpu.items()}
        print(
            f"cpu (user+sys, median): sandkit {m['sandkit']:.2f} s + registry {m['registry-sandkit']:.2f} s; "
            f"skopeo {m['skopeo']:.2f} s + registry {m['registry-skopeo']:.2f} s"
        )
        floor = statistics.median(apply_only(run) for run in range(args.runs))
        print(f"(store apply alone, from local files, no network:  {floor:.2f} s)")
        ratio = statistics.median(pairs)
        print(
            f"ratio sandkit/skopeo: {ratio:.2f}  ({'faster' if ratio <= 1 else 'slower'} than skopeo; "
            f"median of {len(pairs)} interleaved pairs, {pairs[0]:.2f}-{pairs[-1]:.2f})"
        )
        if shutil.which("umoci"):
            c = statistics.median(skopeo_umoci(run) for run in range(args.runs))
            print(
                f"skopeo copy + umoci raw unpack (a runnable root filesystem, as sandkit's pull gives): "
                f"{c:.2f} s; sandkit/that = {a / c:.2f}"
            )
    finally:
        reg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
