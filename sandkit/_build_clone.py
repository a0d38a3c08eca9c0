"""cffi builder (out-of-line, API mode) for ``sandkit._clone_ffi``: the C in ``_clone.c``.

Used by setup.py through ``cffi_modules``; ``python sandkit/_build_clone.py`` builds it in place
for hacking on the C. The cdef is ``_clone.h`` itself minus its preprocessor lines, so the
declarations live in one place.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _cdef_from_header(header: Path) -> str:
    """cffi's parser takes no preprocessor directives; the header keeps its to the guard."""
    lines = header.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def make_builder(root: str = "") -> FFI:
    """root prefixes the source paths: setuptools wants them relative to setup.py (""), a
    direct compile (which runs in a scratch dir) wants them absolute."""
    builder = FFI()
    builder.cdef(_cdef_from_header(HERE / "_clone.h"))
    builder.set_source(
        "sandkit._clone_ffi",
        '#include "_clone.h"',
        sources=[f"{root}sandkit/_clone.c"],
        include_dirs=[f"{root}sandkit"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    # Build in a scratch dir so the generated C and objects do not litter the tree.
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = Path(make_builder(f"{HERE.parent}/").compile(tmpdir=tmp))
        # A stale build under another suffix (abi3 from pip, or this one) would shadow it.
        for old in HERE.glob("_clone_ffi*.so"):
            old.unlink()
        shutil.copy(built, HERE)
