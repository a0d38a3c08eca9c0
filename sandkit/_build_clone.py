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


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(HERE / "_clone.h"))
ffibuilder.set_source(
    "sandkit._clone_ffi",
    '#include "_clone.h"',
    # Relative to the project root, where setup.py runs: setuptools wants relative sources.
    sources=["sandkit/_clone.c"],
    include_dirs=["sandkit"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    import os

    os.chdir(HERE.parent)
    ffibuilder.compile(tmpdir=".", verbose=True)
