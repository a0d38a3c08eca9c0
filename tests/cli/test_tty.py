"""`-it`, driven as a person would: through a pseudo-terminal with pexpect."""

from __future__ import annotations

import sys
import time

import pexpect
import pytest

from .conftest import sandkit, sandkit_env

pytestmark = pytest.mark.slow

PROMPT = "# "


def _spawn(*argv: str, rows: int = 30, cols: int = 100) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "sandkit", *argv],
        env=sandkit_env(),
        encoding="utf-8",
        timeout=15,
        dimensions=(rows, cols),
    )


def _shell_session(child: pexpect.spawn) -> None:
    child.expect(PROMPT)
    # the size of our terminal at start, then after a resize (SIGWINCH)
    child.sendline("stty size")
    child.expect("30 100")
    child.setwinsize(40, 120)
    # the new size reaches the container's terminal by a SIGWINCH relayed to it: ask until it has
    deadline = time.monotonic() + 10
    while True:
        child.sendline("stty size")
        if child.expect(["40 120", "30 100"]) == 0:
            break
        assert time.monotonic() < deadline, "the terminal never got the new size"
    # line editing by the container's line discipline: a typo erased with backspace
    child.send("echo heXX\x7f\x7fllo-edited")
    child.send("\r")
    child.expect("\r\nhello-edited\r\n")
    # Ctrl-C reaches the process inside, not sandkit
    # Once "running" is printed the foreground process is the command, not the shell: a ^C
    # before its exec kills the sh -c just as well (130). The echoed line has "runn''ing".
    child.sendline("sh -c 'echo runn''ing; exec sleep 30'")
    child.expect("running")
    child.sendcontrol("c")
    child.expect(PROMPT)
    child.sendline("echo status=$?")
    child.expect("status=130")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_run_it(bb):
    _shell_session(_spawn("run", "--rm", "-it", bb, "sh"))


def test_exec_it(bb):
    container_id = sandkit("run", "-d", bb, "sleep", "60").stdout.strip()
    try:
        _shell_session(_spawn("exec", "-it", container_id, "sh"))
    finally:
        sandkit("rm", "-f", container_id)


def test_tty_tells_the_process_it_has_a_terminal(bb):
    child = _spawn("run", "--rm", "-t", bb, "sh", "-c", "[ -t 1 ] && echo on-a-tty; echo $TERM")
    child.expect("on-a-tty")
    child.expect("xterm")
    child.expect(pexpect.EOF)


def test_it_without_a_terminal_is_refused(bb):
    r = sandkit("run", "--rm", "-it", bb, "sh", input=b"")
    assert r.returncode == 1 and "the input device is not a TTY" in r.stderr


@pytest.mark.parametrize("command", [["ps"], ["images"]])
def test_tables_are_rich_on_a_terminal_and_plain_in_a_pipe(command):
    child = _spawn(*command)
    child.expect(pexpect.EOF)
    assert "\x1b[" in child.before  # rich's styling
    piped = sandkit(*command)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout
