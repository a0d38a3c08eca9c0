"""Code sessions and function calls (issue 19) in real containers of the "host" image, whose
python3 is the host's: behaviour, hostile snippets and plugins, bad input."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from conftest import our_children
from polling import wait_until

import sandkit
from sandkit.errors import CallTimeoutError, LimitsError, RemoteError, SessionError

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

# ignores KeyboardInterrupt: only a kill ends it
STUBBORN = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass"
PY38 = Path("/root/.pyenv/versions/3.8.18")

PLUGIN = """
import dataclasses, os, signal, time

@dataclasses.dataclass
class Reply:
    total: int
    names: list

def add(a, b=0):
    return a + b

def describe(box):
    return Reply(box["point"]["x"] + sum(box["point"]["y"]), sorted(box))

def fail():
    raise LookupError("no such thing: 42")

def text(n):
    return "x" * n

def give_a_set():
    return {1, 2}

def sleep_forever():
    while True:
        time.sleep(0.05)

def stubborn():
    while True:
        try:
            time.sleep(10)
        except KeyboardInterrupt:
            pass

def die(code):
    os._exit(code)

def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)

def count(n, marker=None):
    try:
        for i in range(n):
            yield i
    finally:
        if marker:
            open(marker, "w").close()

def wait_for(path):
    yield "first"
    while not os.path.exists(path):
        time.sleep(0.01)
    yield "second"

def fail_midway():
    yield 1
    raise ValueError("midway")

class Calculator:
    @staticmethod
    def double(x):
        return 2 * x
"""


@pytest.fixture(scope="module")
def c() -> Iterator[sandkit.Container]:
    with sandkit.Container("host", workdir="/tmp") as container:
        container.write_file("/tmp/plugin.py", PLUGIN)
        yield container


# --- 1. code sessions ------------------------------------------------------------------------


def test_state_persists_and_the_last_expression_is_the_value(c) -> None:
    with c.session() as s:
        first = s.run_code("import math\nx = 40\nprint('hi')")
        second = s.run_code("x += 2\nmath.sqrt(x * x)")
    assert (first.stdout, first.value, first.error) == ("hi\n", None, None)
    assert second.value == "42.0"
    assert second.duration > 0 and not second.timed_out and not second.restarted


def test_output_of_c_code_and_subprocesses_is_captured(c) -> None:
    r = c.run_code(
        "import os, subprocess, sys\n"
        "os.write(1, b'raw\\n')\n"
        "subprocess.run(['sh', '-c', 'echo child; echo err >&2'])\n"
        "print('to stderr', file=sys.stderr)"
    )
    assert r.stdout == "raw\nchild\n"
    assert r.stderr == "err\nto stderr\n"


def test_exceptions_and_syntax_errors_are_code_errors(c) -> None:
    r = c.run_code("def f():\n    raise KeyError('k')\nf()")
    assert r.error is not None and r.error.name == "KeyError" and r.error.value == "'k'"
    assert 'File "<snippet>", line 2, in f' in r.error.traceback
    assert "sandkit" not in r.error.traceback  # none of the agent's frames
    bad = c.run_code("def f(:")
    assert bad.error is not None and bad.error.name == "SyntaxError"
    assert "<snippet>" in bad.error.traceback and "ast.py" not in bad.error.traceback


def test_rich_forms_of_the_value(c) -> None:
    r = c.run_code(
        "class Table:\n"
        "    def __repr__(self): return 'Table()'\n"
        "    def _repr_html_(self): return '<table></table>'\n"
        "    def _repr_png_(self): return b'\\x89PNG'\n"
        "    def _repr_json_(self): return {'a': 1}\n"
        "    def _repr_markdown_(self): raise RuntimeError('left out')\n"
        "Table()"
    )
    assert r.value == "Table()"
    assert dict(r.rich) == {
        "text/html": "<table></table>",
        "image/png": b"\x89PNG",
        "application/json": '{"a": 1}',
    }


def test_open_figures_come_back_as_png_and_are_closed(c) -> None:
    # A stand-in for matplotlib.pyplot with its figure API (the host has no matplotlib; the
    # examples' python image runs the real one): what the agent calls, and MPLBACKEND.
    c.exec(["mkdir", "-p", "/tmp/figs/matplotlib"], check=True)
    c.write_file("/tmp/figs/matplotlib/__init__.py", "")
    c.write_file(
        "/tmp/figs/matplotlib/pyplot.py",
        "import os\nopen_figs = {}\n"
        "class Figure:\n"
        "    def __init__(self, n): self.n = n\n"
        "    def savefig(self, f, format): f.write(b'PNG%d' % self.n)\n"
        "def figure(n=None):\n"
        "    n = n or len(open_figs) + 1\n"
        "    return open_figs.setdefault(n, Figure(n))\n"
        "def get_fignums(): return sorted(open_figs)\n"
        "def close(which): open_figs.clear()\n"
        "backend = os.environ.get('MPLBACKEND')\n",
    )
    with c.session(workdir="/tmp/figs") as s:
        assert s.run_code("1").figures == []  # no pyplot imported: nothing is asked of it
        r = s.run_code("import matplotlib.pyplot as plt\nplt.figure(); plt.figure(); plt.backend")
        assert r.figures == [b"PNG1", b"PNG2"]
        assert r.value == "'Agg'"
        assert s.run_code("plt.get_fignums()").value == "[]"


def test_sessions_are_independent_interpreters(c) -> None:
    with c.session() as one, c.session() as two:
        one.run_code("name = 'one'")
        two.run_code("name = 'two'")
        assert one.run_code("name").value == "'one'"
        assert two.run_code("name").value == "'two'"
        assert (
            one.run_code("import os; os.getpid()").value
            != two.run_code("import os; os.getpid()").value
        )


def test_env_applies_to_one_snippet(c) -> None:
    with c.session(env={"KEPT": "1"}) as s:
        r = s.run_code("import os\nos.environ.get('ONCE'), os.environ['KEPT']", env={"ONCE": "x"})
        assert r.value == "('x', '1')"
        assert s.run_code("os.environ.get('ONCE')").value is None


def test_output_streams_while_the_snippet_runs(c) -> None:
    seen: list[str] = []

    def on_stdout(text: str) -> None:
        seen.append(text)
        if text == "waiting\n":
            c.write_file("/tmp/go", b"")

    code = (
        "import os, time\nprint('waiting')\n"
        "while not os.path.exists('/tmp/go'): time.sleep(0.01)\nprint('done')"
    )
    r = c.run_code(code, on_stdout=on_stdout, timeout=30)
    assert seen == ["waiting\n", "done\n"] and r.stdout == "waiting\ndone\n"
    assert not r.timed_out
    c.remove("/tmp/go")
    items = list(c.run_code_stream("print('a')\nimport sys; print('b', file=sys.stderr)\n7"))
    assert items[:-1] == [
        sandkit.OutputChunk("stdout", "a\n"),
        sandkit.OutputChunk("stderr", "b\n"),
    ]
    assert isinstance(items[-1], sandkit.CodeResult) and items[-1].value == "7"


def test_a_timeout_interrupts_the_snippet_and_keeps_the_state(c) -> None:
    with c.session() as s:
        s.run_code("kept = 1")
        r = s.run_code("import time\nprint('before')\nwhile True: time.sleep(0.01)", timeout=0.3)
        assert r.timed_out and not r.restarted
        assert r.error is not None and r.error.name == "KeyboardInterrupt"
        assert r.stdout == "before\n"
        assert s.run_code("kept").value == "1"


def test_a_snippet_that_ignores_the_interrupt_is_killed_and_restarted(c) -> None:
    with c.session() as s:
        s.run_code("kept = 1")
        r = s.run_code(
            "import time\nwhile True:\n    try:\n        time.sleep(10)\n"
            "    except KeyboardInterrupt:\n        print('ignored')",
            timeout=0.3,
        )
        assert r.timed_out and r.restarted
        assert r.error is not None and r.error.name == "TimeoutError"
        assert r.stdout.startswith("ignored\n")
        after = s.run_code("'kept' in globals()")
        assert after.value == "False" and after.error is None  # a fresh interpreter


@pytest.mark.parametrize(
    "request_",
    [
        lambda s: s.run_code("x = '" + "a" * 300_000 + "'", timeout=0.5),
        lambda s: s.call("plugin:add", b"a" * 300_000, b"", timeout=0.5),
    ],
    ids=["run_code", "call"],
)
def test_a_request_larger_than_the_pipe_is_bounded_by_its_timeout(c, request_) -> None:
    # an interpreter that reads nothing (here stopped between requests by its own last snippet)
    # must not hold the caller in writing a request past the pipe's 64 KiB
    with c.session() as s:
        pid = s.run_code(
            "import os, signal, threading\n"
            "threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGSTOP)).start()\nos.getpid()"
        ).value
        stopped = ["sh", "-c", f"grep -q '^State:.*T' /proc/{pid}/status"]
        wait_until(lambda: c.exec(stopped).exit_code == 0, "the interpreter to stop")
        outcome: list[object] = []

        def send() -> None:
            try:
                outcome.append(request_(s))
            except Exception as exc:  # noqa: BLE001 - the outcome is checked below
                outcome.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        sender.join(30)  # far over the 0.5 s timeout plus the grace second: not done means stuck
        assert not sender.is_alive(), "the caller is stuck writing to a stopped interpreter"
    (result,) = outcome
    if isinstance(result, sandkit.CodeResult):
        assert result.timed_out and result.restarted
    else:
        assert isinstance(result, CallTimeoutError)


def test_an_interrupt_between_requests_is_ignored(c) -> None:
    # a timeout's SIGINT may land just after the snippet ended: it must not end the interpreter
    with c.session() as s:
        s.run_code(
            "import os, subprocess\nkept = 1\n"
            "subprocess.Popen(['sh', '-c', f'sleep 0.1; kill -INT {os.getpid()}; touch /tmp/sent'])"
        )
        wait_until(lambda: c.exec(["test", "-e", "/tmp/sent"]).exit_code == 0, "the SIGINT")
        r = s.run_code("kept")
        assert (r.value, r.restarted, r.error) == ("1", False, None)
        c.remove("/tmp/sent")


# --- 2. function calls -----------------------------------------------------------------------


def test_call_returns_plain_data_and_records_as_dicts(c) -> None:
    from test_session_wire import Box, Point

    assert c.call("plugin:add", 2, b=40) == 42
    assert c.call("plugin:add", "a", "b") == "ab"
    assert c.call("plugin:describe", Box(Point(1, [2, 3]), "x")) == {
        "total": 6,
        "names": ["label", "point"],
    }
    assert c.call("plugin:Calculator.double", [1]) == [1, 1]
    assert c.call("os.path:join", "/a", "b") == "/a/b"  # the image's own modules too


def test_an_exception_inside_is_a_remote_error(c) -> None:
    with pytest.raises(RemoteError) as caught:
        c.call("plugin:fail")
    assert caught.value.type_name == "LookupError"
    assert caught.value.message == "no such thing: 42"
    assert 'plugin.py", line' in caught.value.traceback and "in fail" in caught.value.traceback


def test_an_unsendable_result_is_a_remote_error_naming_its_type(c) -> None:
    with pytest.raises(RemoteError, match="the result: cannot send a set"):
        c.call("plugin:give_a_set")
    assert c.call("plugin:add", 1) == 1


def test_strs_that_are_not_utf8_cross_both_ways(c) -> None:
    # os.fsdecode gives lone surrogates for names that are not UTF-8: a plugin listing such a
    # directory, or an error naming such a file, must not end its interpreter as "garbage"
    odd = os.fsdecode(b"caf\xff")
    assert c.call("os:fsdecode", b"caf\xff") == odd
    assert c.call("os.path:basename", "/x/" + odd) == odd
    r = c.run_code("import os\nraise ValueError(os.fsdecode(b'\\xff'))")
    assert not r.restarted and r.error is not None and r.error.value == os.fsdecode(b"\xff")


def test_missing_modules_and_functions_are_clear_errors(c) -> None:
    with pytest.raises(RemoteError, match="no module named 'nosuchplugin' in the container") as e:
        c.call("nosuchplugin:f")
    assert e.value.type_name == "ModuleNotFoundError"
    with pytest.raises(RemoteError, match="plugin:nope has no attribute 'nope'") as e:
        c.call("plugin:nope")
    assert e.value.type_name == "AttributeError"
    with pytest.raises(RemoteError, match="is a str, not a function"):
        c.call("plugin:__name__")


def test_unsendable_arguments_fail_before_anything_is_sent() -> None:
    with sandkit.Container("host") as box:
        with pytest.raises(TypeError, match=r"args\[1\]\['x'\]: cannot send a set"):
            box.call("os:getcwd", 1, {"x": {1}})
        with pytest.raises(ValueError, match=r"package\.module:function"):
            box.call("no colon")
        assert box._core._code_sessions.default.interpreter is None  # never even started


def test_call_iter_streams_items_as_they_come(c) -> None:
    items = c.call_iter("plugin:wait_for", "/tmp/go-iter")
    assert next(items) == "first"  # the generator is still waiting for the file
    c.write_file("/tmp/go-iter", b"")
    assert list(items) == ["second"]
    assert list(c.call_iter("plugin:count", 20)) == list(range(20))


def test_leaving_a_call_iter_closes_the_generator_inside(c) -> None:
    for item in c.call_iter("plugin:count", 10**9, "/tmp/closed-marker"):
        if item == 3:
            break
    assert c.read_file("/tmp/closed-marker") == b""
    assert c.call("plugin:add", 1, 1) == 2  # the session is free again


def test_an_exception_midway_through_call_iter(c) -> None:
    got = []
    with pytest.raises(RemoteError, match="ValueError: midway"):
        for item in c.call_iter("plugin:fail_midway"):
            got.append(item)
    assert got == [1]


def test_a_call_that_hangs_is_cut_off(c) -> None:
    with c.session(workdir="/tmp") as s:
        with pytest.raises(CallTimeoutError, match="plugin:sleep_forever did not return within"):
            s.call("plugin:sleep_forever", timeout=0.3)
        assert s.call("plugin:add", 1, 2) == 3  # interrupted: the same interpreter goes on
        with pytest.raises(CallTimeoutError, match="its interpreter was killed"):
            s.call("plugin:stubborn", timeout=0.3)
        assert s.call("plugin:add", 1, 2) == 3  # a fresh one


@pytest.mark.parametrize(
    ("target", "args", "how"),
    [("plugin:die", (3,), "exited with code 3"), ("plugin:kill_self", (), "killed by SIGKILL")],
)
def test_a_plugin_that_dies_is_a_session_error_and_the_next_call_works(c, target, args, how):
    with c.session(workdir="/tmp") as s:
        with pytest.raises(SessionError, match=how):
            s.call(target, *args)
        assert s.call("plugin:add", 5) == 5


# --- 5. hostile code -------------------------------------------------------------------------


def test_a_flood_of_output_is_cut_at_the_limit(c) -> None:
    with c.session(max_output=100_000) as s:
        r = s.run_code("import os\nwhile True: os.write(1, b'x' * 65536)", timeout=1)
        assert r.timed_out and r.truncated
        assert r.stdout == "x" * 100_000
        assert s.run_code("print('ok')").stdout == "ok\n"
        flood = s.run_code("print('y' * 300_000)")
        assert flood.truncated and len(flood.stdout) == 100_000 and not flood.timed_out


def test_huge_values_and_results_do_not_end_the_session(c) -> None:
    with c.session(workdir="/tmp", max_output=1000) as s:
        r = s.run_code("big = 'x' * (100 * 1024 * 1024)\nbig")
        assert r.truncated and r.value == "'" + "x" * 999 and not r.restarted
        with pytest.raises(RemoteError, match="the result is 104857605 bytes of msgpack"):
            s.call("plugin:text", 100 * 1024 * 1024)
        assert s.run_code("len(big)").value == str(100 * 1024 * 1024)
        with pytest.raises(
            ValueError, match=r"the request is \d+ bytes of msgpack, over the limit"
        ):
            s.call("plugin:add", "x" * (100 * 1024 * 1024))


def test_forks_do_not_speak_on_the_channel(c) -> None:
    with c.session() as s:
        r = s.run_code(
            "import os\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n"
            "    os.waitpid(pid, 0)\n    print('parent')\npid != 0"
        )
        assert r.stdout == "child\nparent\n" and r.value == "True" and r.error is None
        assert s.run_code("1 + 1").value == "2"


def test_a_forked_child_does_not_hold_the_channel_open(c) -> None:
    # else the interpreter's end would go unseen (no end of stream) while the child lives
    with c.session() as s:
        r = s.run_code(
            "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nos._exit(1)", timeout=30
        )
        assert r.restarted and not r.timed_out
        assert r.error is not None and "exited with code 1" in r.error.value
        assert s.run_code("1").value == "1"


def test_a_fork_bomb_is_contained() -> None:
    with sandkit.Container("host", pids_limit=64) as box, box.session() as other:
        other.run_code("x = 'still here'")
        s = box.session()
        r = s.run_code(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass",
            timeout=1,
        )
        # the interpreter stops at the KeyboardInterrupt; its children fork on, capped
        assert r.timed_out and r.error is not None and r.error.name == "KeyboardInterrupt"
        assert other.run_code("x").value == "'still here'"
        s.close()  # ends the interpreter and everything it started
        fresh = box.session().run_code("import subprocess\nsubprocess.run(['true']).returncode")
        assert fresh.value == "0"


def test_memory_hunger_is_ended_by_the_memory_limit() -> None:
    with (
        sandkit.Container("host", memory="64m", memory_swap="64m") as box,
        box.session() as s,
        box.session() as other,
    ):
        other.run_code("x = 1")
        r = s.run_code("hog = bytearray(512 * 1024 * 1024)", timeout=30)
        assert r.restarted and r.error is not None
        assert r.error.name == "SessionError"  # OOM-killed
        assert "SIGKILL" in r.error.value and "memory limit, 64m" in r.error.value
        assert s.run_code("1").value == "1"
        assert other.run_code("x").value == "1"


def test_closing_its_stdio_and_the_channel(c) -> None:
    with c.session() as s:
        r = s.run_code("import os\nos.close(0); os.close(1); os.close(2)\n7")
        assert r.value == "7" and not r.restarted
        assert s.run_code("print('back')").stdout == "back\n"
        closed = s.run_code("import os\nos.closerange(3, 4096)")
        assert closed.restarted and closed.error is not None
        assert closed.error.name == "SessionError"
        assert s.run_code("2").value == "2"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\\x7f\\xff\\xff\\xff",  # a frame far over the limit
        b"\\x00\\x00\\x00\\x03\\xc1\\xc1\\xc1",  # not msgpack
        b"\\x00\\x00\\x00\\x02\\x91\\x01",  # msgpack, not a message
    ],
)
def test_garbage_on_the_channel_ends_that_interpreter_only(c, garbage) -> None:
    code = (
        "import os, stat\n"
        "for fd in range(3, 1024):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        f"            os.write(fd, b'{garbage.decode()}')\n"
        "    except OSError:\n"
        "        pass\n"
        "import time; time.sleep(5)"
    )
    with c.session() as s, c.session() as other:
        other.run_code("x = 1")
        r = s.run_code(code, timeout=20)
        assert r.restarted and r.error is not None
        assert "garbage" in r.error.value
        assert r.duration < 5  # ended as soon as the garbage was read
        assert s.run_code("1").value == "1"
        assert other.run_code("x").value == "1"


FORGER = r"""
import os, struct
forged = bytes([0x92, 0xa4]) + b"done" + bytes([0x81, 0xa5]) + b"value" + bytes([0xa6]) + b"forged"
frame = struct.pack(">I", len(forged)) + forged
opened = []
for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            end = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        opened.append(f"{pid}/{fd}")
        try:
            os.write(end, frame)
        except OSError:
            pass
        os.close(end)
opened
"""


def test_a_session_cannot_reach_another_sessions_channel(c) -> None:
    # same container, same user: through /proc/<pid>/fd a snippet could write forged replies
    # into another session's channel (or read its requests)
    with c.session() as attacker, c.session() as victim:
        victim.run_code("1")
        r = attacker.run_code(FORGER)
        assert (r.value, r.error) == ("[]", None)
        assert victim.run_code("2 + 2").value == "4"


def test_the_host_is_out_of_reach() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with sandkit.Container("host") as box:
            r = box.run_code(
                f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
            )
            assert r.error is not None and r.error.name == "ConnectionRefusedError"
            assert box.run_code("import os\nos.path.exists('/root/.pyenv')").value == "False"


# --- bad input and where it runs ---------------------------------------------------------------


def test_no_python_in_the_image(busybox) -> None:
    with sandkit.Container(busybox) as box:
        with pytest.raises(SessionError, match="no python3 in the container"):
            box.run_code("1")
        assert box.exec(["true"]).exit_code == 0


def test_a_python_that_fails_to_start_says_how() -> None:
    with (
        sandkit.Container("host") as box,
        pytest.raises(SessionError, match=r"could not start: it exited with code 2: .*sh"),
    ):
        box.session(python="sh").run_code("1")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda b: b.run_code(b"1"), TypeError, "code must be a str"),
        (lambda b: b.run_code("1", timeout=-1), ValueError, "timeout=-1 is not valid"),
        (lambda b: b.call("os:getcwd", timeout="1"), ValueError, "timeout='1' is not valid"),
        (lambda b: b.run_code("1", env={"A": 1}), TypeError, "env must map str names"),
        (lambda b: b.session(max_output=-1), LimitsError, "max_output=-1 is not valid"),
        (lambda b: b.session(env={"A": None}), TypeError, "env must map str names"),
    ],
)
def test_bad_arguments_are_refused_before_an_interpreter_starts(call, error, message) -> None:
    with sandkit.Container("host") as box:
        with pytest.raises(error, match=message):
            call(box)
        sessions = box._core._code_sessions
        assert sessions is None or all(core.interpreter is None for core in sessions.cores)


def test_the_session_is_closed_with_the_container() -> None:
    children = our_children()
    with sandkit.Container("host") as box:
        box.run_code("1")
        s = box.session()
        s.run_code("1")
    assert our_children() == children
    with pytest.raises(SessionError, match="closed"):
        s.run_code("1")


def test_a_stream_left_open_makes_the_session_busy(c) -> None:
    with c.session() as s:
        stream = s.run_code_stream("print(1)")
        next(stream)
        with pytest.raises(SessionError, match="busy"):
            s.run_code("2")
        stream.close()
        assert s.run_code("2").value == "2"


def test_concurrent_sessions_from_threads(c) -> None:
    results: dict[int, str | None] = {}

    def work(n: int) -> None:
        with c.session() as s:
            s.run_code(f"n = {n}")
            results[n] = s.run_code("n * 2").value

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: str(n * 2) for n in range(4)}


@pytest.mark.parametrize("closing", ["the session", "the container"])
def test_closing_from_another_thread_while_a_snippet_runs(closing) -> None:
    # The closer must not close the pipes under the running caller (a closed fd number is soon
    # another container's pipe): the caller is told, as a result, and the pipes are closed once.
    with sandkit.Container("host") as box:
        s = box.session()
        started = threading.Event()
        outcome: list[object] = []

        def run() -> None:
            try:
                code = "import time\nprint('started', flush=True)\ntime.sleep(60)"
                outcome.append(s.run_code(code, on_stdout=lambda _: started.set()))
            except Exception as exc:  # noqa: BLE001 - checked below
                outcome.append(exc)

        runner = threading.Thread(target=run)
        runner.start()
        assert started.wait(30)
        s.close() if closing == "the session" else box.stop()
        runner.join(30)
        assert not runner.is_alive()
    (result,) = outcome
    assert isinstance(result, sandkit.CodeResult), result
    assert result.error is not None and result.error.name == "SessionError"
    assert "the session was closed while it ran" in result.error.value
    assert result.restarted
    with pytest.raises(SessionError, match="closed"):
        s.run_code("1")


def test_sessions_made_by_many_threads_at_once_are_all_closed_with_the_container() -> None:
    # each session made must be on the container's list, whose pipes its stop closes
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # make the threads interleave as much as they can
    try:
        with sandkit.Container("host") as box:
            made: list[sandkit.CodeSession] = []
            together = threading.Barrier(16)

            def make() -> None:
                together.wait()
                made.extend(box.session() for _ in range(50))

            threads = [threading.Thread(target=make) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            tracked = box._core._sessions().cores
            assert {id(s._core) for s in made} <= {id(core) for core in tracked}
    finally:
        sys.setswitchinterval(switch)


def test_a_detached_container_runs_sessions_too() -> None:
    box = sandkit.Container("host", detach=True).start()
    try:
        attached = sandkit.Container.attach(box.name)
        assert attached.run_code("x = 2\nx * 21").value == "42"
        assert attached.call("os:getcwd") == "/"
    finally:
        box.remove()


@pytest.mark.skipif(not (PY38 / "bin" / "python3.8").exists(), reason="needs pyenv's 3.8.18")
def test_the_agent_runs_on_python_3_8() -> None:
    with (
        sandkit.Container("host", mounts=[f"{PY38}:{PY38}:ro"]) as box,
        box.session(python=str(PY38 / "bin" / "python3.8")) as s,
    ):
        r = s.run_code("import sys\nprint('hi')\nsys.version_info[:2]")
        assert (r.value, r.stdout) == ("(3, 8)", "hi\n")
        assert s.run_code("1/0").error.name == "ZeroDivisionError"
        assert s.call("os.path:join", "a", "b") == "a/b"
        assert list(s.call_iter("itertools:repeat", 1, 3)) == [1, 1, 1]
        timed = s.run_code("while True: pass", timeout=0.3)
        assert timed.timed_out and timed.error.name == "KeyboardInterrupt"


def test_rootless(as_unprivileged) -> None:
    def run() -> tuple[str | None, bool, int]:
        with sandkit.Container("host") as box:
            value = box.run_code("import os\nos.getuid()").value
            timed = box.run_code(STUBBORN, timeout=0.3)
            with contextlib.suppress(SessionError):
                box.call("os:_exit", 4)
            return value, timed.restarted, box.call("os:getpid") > 0

    assert as_unprivileged(run) == ("0", True, True)


# --- async ------------------------------------------------------------------------------------


def test_the_async_api() -> None:
    async def main() -> None:
        async with sandkit.AsyncContainer("host", workdir="/tmp") as box:
            await box.write_file("/tmp/plugin.py", PLUGIN)
            seen: list[str] = []
            r = await box.run_code("print('x')\n6 * 7", on_stdout=seen.append)
            assert (r.value, seen) == ("42", ["x\n"])
            chunks = [item async for item in box.run_code_stream("print('y')\n1")]
            assert chunks[0] == sandkit.OutputChunk("stdout", "y\n")
            assert await box.call("plugin:add", 1, 2) == 3
            assert [i async for i in box.call_iter("plugin:count", 3)] == [0, 1, 2]
            with pytest.raises(CallTimeoutError):
                await box.call("plugin:sleep_forever", timeout=0.2)
            async with box.session() as s:
                timed = await s.run_code(STUBBORN, timeout=0.2)
                assert timed.restarted
                assert (await s.run_code("3")).value == "3"
            with trio.move_on_after(0.3):  # a cancelled request ends its interpreter
                await box.run_code("import time; time.sleep(30)")
            assert (await box.run_code("'fresh' if 'time' not in dir() else 'old'")).value == (
                "'fresh'"
            )

    trio.run(main)
