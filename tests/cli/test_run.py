"""`sandkit run`: flags, Docker's exit codes, clean failures, and --help everywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandkit.cli import build_parser

from .conftest import containers_on_disk, run_dir, sandkit, sandkit_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("argv", "code", "stderr_has"),
    [
        (["sh", "-c", "exit 3"], 3, ""),
        (["true"], 0, ""),
        (["nosuchcommand"], 127, "not found"),
        (["/etc/passwd"], 126, "permission denied"),
        (["sh", "-c", "kill -KILL $$"], 137, ""),
        (["sh", "-c", "kill -TERM $$"], 143, ""),
    ],
)
def test_exit_codes(bb, argv, code, stderr_has):
    r = sandkit("run", "--rm", bb, *argv)
    assert r.returncode == code, r.stderr
    assert stderr_has in r.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bogus-flag"], "unrecognized arguments"),
        (["-m", "12q"], "cannot read '12q' as a size"),
        (["-v", "x:/data"], "neither a volume name"),
        (["-v", "/no/such/dir:/data"], "does not exist"),
        (["--tmpfs", "/t:noexec"], "not supported"),
        (["--env-file", "/no/such/file"], "cannot read the env file"),
        (["--security-opt", "apparmor=x"], "not supported"),
        (["--ulimit", "nofile=x"], "invalid ulimit"),
        (["--storage-opt", "size=lots"], "cannot read 'lots' as a size"),
        (["--storage-opt", "overlay2.size=1g"], "not supported"),
        (["--cap-add", "NOT_A_CAP"], "NOT_A_CAP"),
        (["-u", "nosuchuser"], "unable to find user"),
    ],
)
def test_bad_input_is_125_with_a_message_and_leaves_nothing(bb, flags, message):
    before = containers_on_disk()
    r = sandkit("run", "--rm", *flags, bb, "true")
    assert r.returncode == 125
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert containers_on_disk() == before


def test_missing_image_is_125():
    r = sandkit("run", "--rm", "no-such-image:1", "true")
    assert r.returncode == 125 and "not in the local store" in r.stderr


def test_env_workdir_user_entrypoint(bb, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\n\nFROM_FILE=1\nBOTH=file\n")
    r = sandkit(
        "run",
        "--rm",
        "--env-file",
        str(env_file),
        "-e",
        "BOTH=flag",
        "-e",
        "A=b c",
        "-w",
        "/tmp",
        "-u",
        "app",
        "--hostname",
        "box",
        bb,
        "sh",
        "-c",
        'echo "$FROM_FILE $BOTH $A"; pwd; id -un; hostname',
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["1 flag b c", "/tmp", "app", "box"]
    r = sandkit("run", "--rm", "--entrypoint", "echo", bb, "-n", "x")
    assert (r.returncode, r.stdout) == (0, "x")


def test_env_passthrough_from_caller(bb):
    r = sandkit(
        "run",
        "--rm",
        "-e",
        "PASSED",
        "-e",
        "UNSET_XYZ",
        bb,
        "sh",
        "-c",
        'echo "$PASSED ${UNSET_XYZ-unset}"',
        env={"PASSED": "yes"},
    )
    assert r.stdout == "yes unset\n"


def test_stdin_only_with_i(bb):
    assert sandkit("run", "--rm", "-i", bb, "cat", input=b"piped\n").stdout == "piped\n"
    assert sandkit("run", "--rm", bb, "cat", input=b"piped\n").stdout == ""


def test_mounts_read_only_tmpfs(bb, tmp_path):
    (tmp_path / "f").write_text("from host")
    r = sandkit(
        "run",
        "--rm",
        "--read-only",
        "-v",
        f"{tmp_path}:/root:ro",
        "--tmpfs",
        "/tmp:size=1m",
        bb,
        "sh",
        "-c",
        "cat /root/f; echo; touch /x 2>/dev/null || echo ro-root; "
        "touch /root/y 2>/dev/null || echo ro-mount; touch /tmp/z && echo tmp-ok; "
        "df -k /tmp | tail -1 | awk '{print $2}'",
    )
    assert r.stdout.split() == ["from", "host", "ro-root", "ro-mount", "tmp-ok", "1024"], r.stderr


def test_storage_opt_size_sizes_the_writable_layer(bb):
    r = sandkit(
        "run",
        "--rm",
        "--storage-opt",
        "size=8m",
        bb,
        "sh",
        "-c",
        "df -k / | tail -1 | awk '{print $2}'",
    )
    assert r.stdout.split() == ["8192"], r.stderr


def test_signal_is_forwarded_without_tty(bb):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandkit",
            "run",
            "--rm",
            bb,
            "sh",
            "-c",
            'trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done',
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=sandkit_env(),
    )
    assert p.stdout.readline() == "ready\n"
    p.terminate()
    assert p.stdout.readline() == "got TERM\n"
    assert p.wait(10) == 7


def test_python_dash_m_and_entry_point_are_one_program():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sandkit"] == "sandkit.cli:main"
    assert sandkit("version").stdout.startswith("Client: sandkit")


def _commands() -> list[list[str]]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "subcommand"]
    names = [[n] for n in commands.choices]
    return [*names, ["image", "prune"], ["image", "ls"]]


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_help_on_every_command(command):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0


def test_no_command_prints_help():
    r = sandkit()
    assert r.returncode == 0 and "run" in r.stdout


def test_run_dir_is_not_used_by_foreground_runs(bb):
    before = containers_on_disk()
    assert sandkit("run", "--rm", "--name", "fg", bb, "true").returncode == 0
    assert containers_on_disk() == before
    assert not (run_dir() / "names" / "fg").exists()
