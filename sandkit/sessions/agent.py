"""The in-container side of code sessions and function calls: one long-lived Python interpreter.

Sent into the container as source text (nothing is installed in the image) and run by a tiny
bootstrap, ``python3 -c BOOTSTRAP``, that reads it from stdin. Standard library only, Python 3.8+
(tests/sessions/test_agent_py38.py checks this). Not imported by the host: only read.

The channel: the host writes requests to our stdin and reads replies from our stdout, both as
frames (4-byte big-endian length, then one msgpack array). We move both off fds 0 and 1 (to
close-on-exec fds, closed in forked children) and give the user's code /dev/null as stdin and
pipes of our own as stdout and stderr, which reader threads forward as "out" frames: the output
of C code and of subprocesses is captured too. Everything the code sends can be garbage (it runs
in this process and can write to any fd): the host trusts nothing it reads.

Requests (host -> agent), replies (agent -> host):
  ["run", code, env, max_output]   -> ["out", stream, bytes]* then ["done", result-map]
  ["call", target, args, kwargs, credit]
                                   -> ["item", value]* then ["return", value] | ["raise", ...]
  ["more", n] / ["stop"]           (call_iter: credit for n more items / close the generator)
SIGINT interrupts the user's code (KeyboardInterrupt); between requests it is ignored.
"""

from __future__ import annotations

import ast
import os
import signal
import struct
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import CodeType
    from typing import TextIO

MAX_FRAME = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_FORMATS = {
    "text/html": "_repr_html_",
    "text/markdown": "_repr_markdown_",
    "image/svg+xml": "_repr_svg_",
    "image/png": "_repr_png_",
    "application/json": "_repr_json_",
}


class Unsendable(TypeError):
    """A value msgpack (as we speak it) cannot carry."""


# --- msgpack, the subset the host speaks (no ext types) ------------------------------------------


def pack(value: Any, where: str = "value") -> bytes:
    """``value`` as msgpack; `Unsendable` naming ``where`` for what it cannot carry."""
    out: list[bytes] = []
    _pack(value, out, where, 0)
    return b"".join(out)


def _pack(value: Any, out: list[bytes], where: str, depth: int) -> None:
    if depth > 100:
        raise Unsendable(f"{where}: nested too deeply (more than 100 levels)")
    if value is None:
        out.append(b"\xc0")
    elif value is True or value is False:
        out.append(b"\xc3" if value else b"\xc2")
    elif type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        _pack_int(int(value), out, where)
    elif isinstance(value, float):
        out.append(b"\xcb" + struct.pack(">d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        _pack_head(len(data), out, 0xA0, 31, b"\xd9", b"\xda", b"\xdb")
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _pack_head(len(data), out, None, 0, b"\xc4", b"\xc5", b"\xc6")
        out.append(data)
    elif isinstance(value, (list, tuple)):
        _pack_head(len(value), out, 0x90, 15, None, b"\xdc", b"\xdd")
        for i, item in enumerate(value):
            _pack(item, out, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        _pack_head(len(value), out, 0x80, 15, None, b"\xde", b"\xdf")
        for key, item in value.items():
            if not isinstance(key, (str, int, bytes, float, bool, type(None))):
                raise Unsendable(f"{where}: cannot send a dict key of type {_type(key)}")
            _pack(key, out, where, depth + 1)
            _pack(item, out, f"{where}[{key!r}]", depth + 1)
    else:
        fields = _record_fields(value)
        if fields is None:
            raise Unsendable(f"{where}: cannot send a {_type(value)}")
        _pack(fields, out, where, depth)


def _pack_int(value: int, out: list[bytes], where: str) -> None:
    if 0 <= value < 128:
        out.append(struct.pack("B", value))
    elif -32 <= value < 0:
        out.append(struct.pack("b", value))
    elif -(2**63) <= value < 0:
        out.append(b"\xd3" + struct.pack(">q", value))
    elif 0 <= value < 2**64:
        out.append(b"\xcf" + struct.pack(">Q", value))
    else:
        raise Unsendable(f"{where}: the int {value} does not fit in 64 bits")


def _pack_head(
    length: int,
    out: list[bytes],
    fix_base: int | None,
    fix_max: int,
    head8: bytes | None,
    head16: bytes,
    head32: bytes,
) -> None:
    if fix_base is not None and length <= fix_max:
        out.append(struct.pack("B", fix_base | length))
    elif head8 is not None and length < 256:
        out.append(head8 + struct.pack("B", length))
    elif length < 65536:
        out.append(head16 + struct.pack(">H", length))
    else:
        out.append(head32 + struct.pack(">I", length))


def _record_fields(value: Any) -> dict[str, Any] | None:
    """A dataclass or attrs instance as a dict of its fields (not recursively: _pack recurses)."""
    if isinstance(value, type):
        return None
    attrs_fields = getattr(type(value), "__attrs_attrs__", None)
    if attrs_fields is not None:
        return {f.name: getattr(value, f.name) for f in attrs_fields}
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def _type(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def unpack(data: bytes) -> Any:
    """One msgpack value (the subset pack writes; no ext types)."""
    value, end = _unpack(data, 0, 0)
    if end != len(data):
        raise ValueError("trailing bytes after a msgpack value")
    return value


def _unpack(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 100:
        raise ValueError("msgpack nested too deeply")
    head = data[pos]
    pos += 1
    if head <= 0x7F:
        return head, pos
    if head >= 0xE0:
        return head - 256, pos
    if 0xA0 <= head <= 0xBF:
        return _text(data, pos, head & 31)
    if 0x90 <= head <= 0x9F:
        return _array(data, pos, head & 15, depth)
    if 0x80 <= head <= 0x8F:
        return _map(data, pos, head & 15, depth)
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if head in simple:
        return simple[head], pos
    sized = {
        0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
        0xCA: ">f", 0xCB: ">d",
    }  # fmt: skip
    if head in sized:
        number = struct.Struct(sized[head])
        return number.unpack_from(data, pos)[0], pos + number.size
    lengths = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
    lengths.update({0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"})
    if head not in lengths:
        raise ValueError(f"msgpack type 0x{head:02x} is not accepted")
    size = struct.Struct(lengths[head])
    (length,) = size.unpack_from(data, pos)
    pos += size.size
    if head in (0xC4, 0xC5, 0xC6):
        if pos + length > len(data):
            raise ValueError("msgpack bytes run past the end")
        return bytes(data[pos : pos + length]), pos + length
    if head in (0xD9, 0xDA, 0xDB):
        return _text(data, pos, length)
    if head in (0xDC, 0xDD):
        return _array(data, pos, length, depth)
    return _map(data, pos, length, depth)


def _text(data: bytes, pos: int, length: int) -> tuple[str, int]:
    if pos + length > len(data):
        raise ValueError("msgpack str runs past the end")
    return bytes(data[pos : pos + length]).decode("utf-8", "surrogatepass"), pos + length


def _array(data: bytes, pos: int, length: int, depth: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(length):
        item, pos = _unpack(data, pos, depth + 1)
        items.append(item)
    return items, pos


def _map(data: bytes, pos: int, length: int, depth: int) -> tuple[dict[Any, Any], int]:
    result = {}
    for _ in range(length):
        key, pos = _unpack(data, pos, depth + 1)
        value, pos = _unpack(data, pos, depth + 1)
        result[key] = value
    return result, pos


# --- the channel ---------------------------------------------------------------------------------


class Channel:
    """Frames to and from the host over two fds."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.lock = threading.Lock()
        self.pending = b""

    def send(self, message: list[Any]) -> None:
        """Send one message as a frame (whole: the forwarder threads share the channel)."""
        frame = pack(message)
        data = _LENGTH.pack(len(frame)) + frame
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.write_fd, view) :]

    def receive(self) -> Any:
        """The next request, or None at end of stream (the host let go of us)."""
        head = self._read_exactly(4)
        if head is None:
            return None
        (length,) = _LENGTH.unpack(head)
        if length > MAX_FRAME:
            raise ValueError(f"a request of {length} bytes is over the limit")
        body = self._read_exactly(length)
        if body is None:
            return None
        return unpack(body)

    def _read_exactly(self, count: int) -> bytes | None:
        chunks = []
        while count:
            chunk = os.read(self.read_fd, min(count, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)


# --- output: fds 1 and 2 are pipes that threads forward as "out" frames --------------------------


class Forwarder:
    """Reads one output pipe and sends what it reads, up to the current request's budget."""

    def __init__(self, name: str, channel: Channel) -> None:
        self.name = name
        self.channel = channel
        self.read_fd, self.write_fd = os.pipe()  # both close-on-exec (os.pipe's default)
        os.set_blocking(self.read_fd, False)
        self.lock = threading.Lock()
        self.budget = 0
        self.dropped = False

    def start(self) -> None:
        """Forward in a thread of its own from now on."""
        thread = threading.Thread(target=self._forward_forever, name=self.name, daemon=True)
        thread.start()

    def _forward_forever(self) -> None:
        import select

        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        while True:
            poller.poll()
            with self.lock:
                if not self._forward_available():
                    return

    def drain(self) -> None:
        """Forward everything written so far (the request's output ends before its reply)."""
        with self.lock:
            self._forward_available()

    def _forward_available(self) -> bool:
        """Forward what can be read without waiting (what is over budget is read and dropped);
        False at end of stream."""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            if len(chunk) > self.budget:
                chunk = chunk[: self.budget]
                self.dropped = True
            if chunk:
                self.budget -= len(chunk)
                self.channel.send(["out", self.name, chunk])


# --- the interpreter's state ---------------------------------------------------------------------


class Agent:
    """The interpreter's state (the user's namespace) and the requests it serves."""

    def __init__(self, channel: Channel, stdout: Forwarder, stderr: Forwarder) -> None:
        self.channel = channel
        self.stdout = stdout
        self.stderr = stderr
        import types

        main_module = types.ModuleType("__main__")  # so that pickle finds the user's classes
        sys.modules["__main__"] = main_module
        self.namespace = main_module.__dict__
        self.interruptible = False
        self.pid = os.getpid()

    def on_sigint(self, signum: int, frame: object) -> None:
        """SIGINT: KeyboardInterrupt inside the user's code, nothing between requests."""
        if self.interruptible:
            raise KeyboardInterrupt

    def serve(self) -> None:
        """Serve requests until the host closes the channel."""
        while True:
            request = self.channel.receive()
            if request is None:
                return
            kind = request[0]
            if kind == "run":
                self.run(*request[1:])
            elif kind == "call":
                self.call(*request[1:])
            # "more"/"stop" left over from a call_iter that ended: nothing to do

    def _user_code(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run the user's code, interruptible; a forked child never comes back to serve."""
        self.interruptible = True
        try:
            return function(*args)
        finally:
            self.interruptible = False
            if os.getpid() != self.pid:
                os._exit(0)

    def _prepare(self, max_output: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            _flush_quietly(stream)
        self.stdout.drain()
        self.stderr.drain()
        for forwarder in (self.stdout, self.stderr):
            forwarder.budget, forwarder.dropped = max_output, False
        # the user's last code may have closed or replaced them
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(self.stdout.write_fd, 1)
        os.dup2(self.stderr.write_fd, 2)
        sys.stdout, sys.stderr = _text_stream(1), _text_stream(2)

    def _finish_output(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            _flush_quietly(stream)
        self.stdout.drain()
        self.stderr.drain()

    # -- run_code -------------------------------------------------------------------------------

    def run(self, code: str, env: dict[str, str] | None, max_output: int) -> None:
        """run_code: exec the code, eval its last expression, reply with the result."""
        self._prepare(max_output)
        saved: dict[str, str | None] = {}
        reply: dict[str, Any] = {"value": None, "rich": {}, "figures": [], "error": None}
        try:
            saved = _apply_env(env)
            body, last = _split_last_expression(code)
            self._user_code(exec, body, self.namespace)
            if last is not None:
                value = self._user_code(eval, last, self.namespace)
                if value is not None:
                    self.namespace["_"] = value
                    reply["value"], reply["rich"] = self._user_code(_describe, value)
        except BaseException as exc:  # noqa: BLE001 - everything the code raises is its result
            reply["error"] = _error_of(exc)
        finally:
            _restore_env(saved)
        reply["figures"] = _figures()
        self._finish_output()
        reply["truncated"] = self.stdout.dropped or self.stderr.dropped
        self.channel.send(["done", _within_frame(reply, max_output)])

    # -- call / call_iter -----------------------------------------------------------------------

    def call(
        self, target: str, args: list[Any], kwargs: dict[str, Any], credit: int | None
    ) -> None:
        """call/call_iter: import and call ``target``; stream a generator's items."""
        self._prepare(0)
        try:
            function = _resolve(target)
            result = self._user_code(lambda: function(*args, **kwargs))
            if credit is not None and _is_iterator(result):
                self._stream(result, credit)
                return
            message = ["return", _sized(pack(result, "the result"), "the result")]
        except BaseException as exc:  # noqa: BLE001 - sent to the host as a RemoteError
            message = ["raise", *_exception_fields(exc)]
        self._finish_output()
        self.channel.send(message)

    def _stream(self, iterator: Iterator[Any], credit: int) -> None:
        """Send items while the host has granted credit; wait for more or for "stop"."""
        try:
            while True:
                while credit <= 0:
                    request = self.channel.receive()
                    if request is None or request[0] == "stop":
                        _close_quietly(iterator)
                        self.channel.send(["return", pack(None)])
                        return
                    if request[0] == "more":
                        credit += request[1]
                try:
                    item = self._user_code(next, iterator)
                except StopIteration:
                    break
                self.channel.send(["item", _sized(pack(item, "an item"), "an item")])
                credit -= 1
            message = ["return", pack(None)]
        except BaseException as exc:  # noqa: BLE001 - sent to the host as a RemoteError
            message = ["raise", *_exception_fields(exc)]
        self._finish_output()
        self.channel.send(message)


def _sized(packed: bytes, what: str) -> bytes:
    """``packed`` when it fits in a frame (the host ends an interpreter that sends more)."""
    if len(packed) > MAX_FRAME - 1024:
        raise Unsendable(f"{what} is {len(packed)} bytes of msgpack, over the {MAX_FRAME} limit")
    return packed


def _within_frame(reply: dict[str, Any], max_output: int) -> dict[str, Any]:
    """A snippet's reply cut to what a frame carries: the value's repr to ``max_output``
    characters, then, if still too large, without its rich forms and figures."""
    value = reply["value"]
    if value is not None and len(value) > max_output:
        reply["value"], reply["truncated"] = value[:max_output], True
    if len(pack(reply)) > MAX_FRAME - 1024:
        reply["rich"], reply["figures"], reply["truncated"] = {}, [], True
    return reply


def _flush_quietly(stream: Any) -> None:
    try:
        stream.flush()
    except Exception:  # noqa: BLE001 - the user's code may have closed or broken it
        pass


def _close_quietly(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - a generator that fails on close: nothing to report
            pass


def _text_stream(fd: int) -> TextIO:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _apply_env(env: dict[str, str] | None) -> dict[str, str | None]:
    if not env:
        return {}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _split_last_expression(code: str) -> tuple[CodeType, CodeType | None]:
    """The code as a module to exec, and its last statement, when an expression, to eval."""
    tree = ast.parse(code, "<snippet>", "exec")
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = compile(ast.Expression(final.value), "<snippet>", "eval")
    return compile(tree, "<snippet>", "exec"), last


def _describe(value: Any) -> tuple[str, dict[str, str | bytes]]:
    """The value's repr and its rich forms (as notebooks show them), each best effort."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not end the session
        text = f"<repr failed: {_type(exc)}: {exc}>"
    rich = {}
    if not isinstance(value, type):
        for mime, method in _FORMATS.items():
            form = _rich_form(value, method)
            if form is not None:
                rich[mime] = form
    return text, rich


def _rich_form(value: Any, method: str) -> str | bytes | None:
    function = getattr(value, method, None)
    if not callable(function):
        return None
    try:
        form = function()
    except Exception:  # noqa: BLE001 - as notebooks do: a failing rich form is left out
        return None
    if method == "_repr_json_" and form is not None:
        import json

        try:
            return json.dumps(form)
        except (TypeError, ValueError):
            return None
    return form if isinstance(form, (str, bytes)) else None


def _figures() -> list[bytes]:
    """PNG of every matplotlib figure left open, then closed (only when pyplot was imported)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    import io

    images = []
    try:
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            images.append(buffer.getvalue())
        pyplot.close("all")
    except Exception:  # noqa: BLE001 - a figure that cannot be drawn is left out
        pass
    return images


def _error_of(exc: BaseException) -> dict[str, str]:
    name, value, text = _exception_fields(exc)
    return {"name": name, "value": value, "traceback": text}


def _exception_fields(exc: BaseException) -> tuple[str, str, str]:
    """Type name, message and traceback text, without the agent's own frames."""
    if isinstance(exc, SyntaxError):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        report = traceback.TracebackException.from_exception(exc)
        _drop_own_frames(report, set())
        text = "".join(report.format())
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__
        message = "<str() failed>"
    return _type(exc), message, text


def _drop_own_frames(report: traceback.TracebackException | None, seen: set[int]) -> None:
    while report is not None and id(report) not in seen:
        seen.add(id(report))
        own = [frame for frame in report.stack if frame.filename != _OWN_FILENAME]
        report.stack = traceback.StackSummary.from_list(own)
        _drop_own_frames(report.__cause__, seen)
        report = report.__context__


def _resolve(target: str) -> Callable[..., Any]:
    """ "package.module:function" or "package.module:Class.method" -> the callable."""
    import importlib

    module_name, _, path = target.partition(":")
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ModuleNotFoundError(
                f"no module named {exc.name!r} in the container (the workdir {os.getcwd()} is on sys.path)",
                name=exc.name,
            ) from None
        raise
    for part in path.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise AttributeError(f"{target} has no attribute {part!r}") from None
    if not callable(found):
        raise TypeError(f"{target} is a {_type(found)}, not a function")
    return found


def _is_iterator(value: Any) -> bool:
    return hasattr(value, "__next__") and hasattr(value, "__iter__")


_OWN_FILENAME = "<sandkit-agent>"


def _high_fd(fd: int) -> int:
    """A close-on-exec duplicate of ``fd`` above the range user code tends to use."""
    import fcntl

    return fcntl.fcntl(fd, getattr(fcntl, "F_DUPFD_CLOEXEC", 1030), 100)


def _close_to_other_processes() -> None:
    """Keep the container's other processes (another session's code) out of our channel: they
    run as our user, and could otherwise open it through /proc/<our pid>/fd to forge our replies
    or read our requests. A process that is not dumpable has its /proc/<pid>/fd open only to
    CAP_SYS_PTRACE, which containers lack by default; what it execs is dumpable again."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, SUID_DUMP_DISABLE
    except Exception:  # noqa: BLE001 - no ctypes in the image: the channel stays reachable
        pass


def main() -> None:
    """Move the channel off fds 0 and 1, set up the output forwarders, serve."""
    _close_to_other_processes()
    channel = Channel(_high_fd(0), _high_fd(1))
    stdout, stderr = Forwarder("stdout", channel), Forwarder("stderr", channel)
    agent = Agent(channel, stdout, stderr)

    def forget_channel() -> None:  # a forked child must not speak on it (the parent does)
        for fd in (channel.read_fd, channel.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    os.register_at_fork(after_in_child=forget_channel)
    signal.signal(signal.SIGINT, agent.on_sigint)
    sys.path.insert(0, os.getcwd())
    sys.argv = [""]
    agent._prepare(0)  # our stdio now goes to the forwarders: fds 0 and 1 are free of the channel
    stdout.start()
    stderr.start()
    channel.send(["ready", ".".join(str(n) for n in sys.version_info[:3]), os.getpid()])
    agent.serve()


if __name__ == "__sandkit__":  # run by the bootstrap (not when a tool imports this file)
    main()
