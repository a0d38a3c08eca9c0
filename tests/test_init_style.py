"""The init's C sources keep one style, the one sandkit/_init/.clang-format describes (kernel-like:
tabs, 100 columns). Checked with the clang-format that scripts/bootstrap installs (Debian's);
without clang-format the check is skipped. To fix a failure: clang-format -i sandkit/_init/*.[ch]
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INIT_SOURCES = Path(__file__).resolve().parent.parent / "sandkit" / "_init"


def test_init_sources_follow_the_clang_format_style():
    clang_format = shutil.which("clang-format")
    if clang_format is None:
        pytest.skip("clang-format is not installed (scripts/bootstrap installs it)")
    files = sorted(str(p) for p in INIT_SOURCES.glob("*.[ch]"))
    assert len(files) > 10 and (INIT_SOURCES / ".clang-format").is_file()
    result = subprocess.run(
        [clang_format, "--dry-run", "-Werror", *files], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
