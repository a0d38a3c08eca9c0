"""`sandkit build` as a user runs it: a separate process, `docker build`'s flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def sandkit(home: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SANDKIT_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run(
        [sys.executable, "-m", "sandkit", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_build_with_docker_flags(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n")
    (tmp_path / "other.Dockerfile").write_text(
        "ARG WHERE=/default\nFROM scratch AS first\nARG WHERE\nCOPY app.txt $WHERE/\n"
        "FROM scratch AS second\nLABEL stage=second\n"
    )
    home = tmp_path / "home"
    done = sandkit(
        home, "build", "-t", "cli/app:1", "-f", "other.Dockerfile", "--build-arg", "WHERE=/srv",
        "--target", "first", "--label", "team=x", "--progress", "plain", "ctx", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    image_id = done.stdout.strip()
    assert image_id.startswith("sha256:")
    assert "#3 COPY app.txt $WHERE/" in done.stderr
    assert "skipped stage 1" in done.stderr
    inspect = sandkit(home, "inspect", "cli/app:1", cwd=tmp_path)
    config = json.loads(inspect.stdout)[0]["config"]
    assert config["Labels"] == {"team": "x"}
    layer_dir = Path(json.loads(inspect.stdout)[0]["layers"][0]["path"])
    assert (layer_dir / "srv" / "app.txt").read_text() == "app\n"


def test_build_error_exits_1_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY ../x /\n")
    done = sandkit(tmp_path / "home", "build", "-t", "bad:1", ".", cwd=tmp_path)
    assert done.returncode == 1
    assert "Error: Dockerfile line 2 (COPY): source '../x' leads out of the build context" in (
        done.stderr
    )
    assert done.stdout == ""
