"""Build steps pyproject.toml cannot express: the cffi module and the container init binary.

- ``sandkit._clone_ffi``: cffi compiles ``sandkit/_clone.c`` (see ``sandkit/_build_clone.py``).
- ``sandkit/_init_bin/sandkit-init``: gcc links ``sandkit/_init/*.c`` into one executable,
  statically when the libc allows it (the init runs inside arbitrary images, and a static
  binary needs nothing from them), dynamically otherwise. A wheel gets it in its build dir; an
  editable install gets it in the source tree, next to this file.

Only gcc, the libc headers (and static libc, libc6-dev) and the Python headers are needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
INIT_SOURCES = ROOT / "sandkit" / "_init"
INIT_NAME = "sandkit-init"
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]


class InitBuildError(RuntimeError):
    pass


def _init_sources() -> list[Path]:
    sources = sorted(INIT_SOURCES.glob("*.c"))
    if not sources:
        # A sandkit without its init cannot start any container: refuse to build one.
        raise InitBuildError(
            f"cannot build the container init: no C sources in {INIT_SOURCES}. "
            "The source tree is incomplete; get a full checkout (or sdist) of sandkit."
        )
    return sources


def _gcc(sources: list[Path], out: Path, static: bool) -> subprocess.CompletedProcess[str]:
    cmd = ["gcc", *CFLAGS, *(["-static"] if static else []), "-o", str(out), *map(str, sources)]
    print(" ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def build_init(out_dir: Path) -> Path:
    """Compiles the init into out_dir; a static link first, then a dynamic one."""
    sources = _init_sources()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / INIT_NAME
    static = _gcc(sources, out, static=True)
    if static.returncode == 0:
        return out
    # Static linking fails when libc.a is absent. A dynamic init still works: the loader maps
    # the host's libc at exec time, before the init pivots into the image; only a later
    # dlopen (NSS) would look inside the image. Say so rather than silently.
    print(f"warning: static link of {INIT_NAME} failed, trying a dynamic one:\n{static.stderr}")
    dynamic = _gcc(sources, out, static=False)
    if dynamic.returncode != 0:
        raise InitBuildError(
            f"cannot build the container init ({INIT_NAME}) with gcc:\n{dynamic.stderr}\n"
            "Install gcc and the C library headers (Debian/Ubuntu: apt-get install gcc libc6-dev)."
        )
    return out


class BuildPyWithInit(build_py):
    """build_py that also builds the init executable into the package's _init_bin/."""

    def run(self) -> None:
        super().run()
        # editable_mode (PEP 660 installs): the package is imported from the source tree.
        in_tree = getattr(self, "editable_mode", False)
        base = ROOT if in_tree else Path(self.build_lib)
        build_init(base / "sandkit" / "_init_bin")


setup(
    cmdclass={"build_py": BuildPyWithInit},
    cffi_modules=["sandkit/_build_clone.py:ffibuilder"],
)
