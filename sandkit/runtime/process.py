"""A process running inside a container, with its stdio as plain pipes (or a pty) to the host."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal as signals
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Self

import anyio
import attrs

from ..ipc import Exit

if TYPE_CHECKING:
    from .cgroups import ExecCgroup, ExecUsage
    from .container import AsyncContainer, ProcessLink


def wait_ready(fd: int, *, write: bool = False, timeout: float | None = None) -> bool:
    """Block until ``fd`` is readable (or writable): False when ``timeout`` (seconds) passed.

    poll, not select: select cannot watch an fd above 1023, which a process that holds many
    files or containers soon has.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))


def set_nonblocking(fd: int) -> None:
    """Put ``fd`` in non-blocking mode (O_NONBLOCK), keeping its other flags."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


@attrs.define(eq=False)
class AsyncOutput:
    """The read end of a process's stdout or stderr (or its pty). Iterate for chunks."""

    fd: int

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` as soon as any are there; b"" at end of stream."""
        while True:
            if self.fd < 0:
                return b""
            try:
                return os.read(self.fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
            except OSError as exc:
                if exc.errno == errno.EIO:  # a pty whose other side is gone: end of stream
                    return b""
                raise

    async def read_all(self, limit: int) -> tuple[bytes, bool]:
        """Everything until end of stream; beyond ``limit`` bytes the rest is read and dropped
        (no default: a process's output may be endless). Returns the data and whether it was cut."""
        chunks: list[bytes] = []
        kept = 0
        truncated = False
        while chunk := await self.read():
            if kept + len(chunk) > limit:
                chunk = chunk[: max(0, limit - kept)]
                truncated = True
            kept += len(chunk)
            if chunk:
                chunks.append(chunk)
        return b"".join(chunks), truncated

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def close(self) -> None:
        """Close the stream's fd; later reads return end of stream. Closing twice is harmless."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # like a file object: a stream nobody holds any more gives its fd back
        self.close()


@attrs.define(eq=False)
class AsyncInput:
    """The write end of a process's stdin (or its pty)."""

    fd: int
    owns_fd: bool = True

    async def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the pipe is full. Raises `BrokenPipeError` once
        stdin is closed or the process stopped reading."""
        view = memoryview(data)
        while view:
            if self.fd < 0:
                raise BrokenPipeError(errno.EPIPE, "stdin is closed")
            try:
                written = os.write(self.fd, view)
                view = view[written:]
            except BlockingIOError:
                await anyio.wait_writable(self.fd)

    def close(self) -> None:
        """Close stdin: the process reads end of file. Closing twice is harmless."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            if self.owns_fd:
                os.close(fd)

    def __del__(self) -> None:
        self.close()


@attrs.define(eq=False)
class AsyncProcess:
    """Started by `AsyncContainer.spawn`. ``returncode`` is None while it runs, then its exit
    status, or -N when signal N ended it (as in `subprocess`)."""

    container: AsyncContainer
    exec_id: int
    pid: int
    argv: tuple[str, ...]
    stdin: AsyncInput | None
    stdout: AsyncOutput | None
    stderr: AsyncOutput | None
    tty: bool = False
    exit: Exit | None = None
    accounting: ExecCgroup | None = None
    usage: ExecUsage | None = None
    # how it reaches its container (the internal interface of runtime/container.py)
    link: ProcessLink = attrs.field(kw_only=True, repr=False)

    @property
    def returncode(self) -> int | None:
        """None while the process runs; then its exit status, or -N when signal N ended it (as
        `subprocess` reports it)."""
        if self.exit is None:
            return None
        if self.exit.signal is not None:
            return -self.exit.signal
        return self.exit.code

    async def wait(self) -> int:
        """Wait for the process (not its output) to end."""
        if self.exit is None:
            self.exit = await self.link.wait_exit(self.exec_id)
            if self.accounting is not None:
                self.usage = self.accounting.finish()
                self.accounting = None
        code = self.returncode
        assert code is not None
        return code

    async def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process only (not what it started); nothing happens once it has
        ended."""
        if self.exit is None:
            await self.link.signal(self.exec_id, sig, tree=False)

    async def kill(self, sig: int = signals.SIGKILL) -> None:
        """Signal the process and everything it started."""
        if self.exit is None:
            await self.link.signal(self.exec_id, sig, tree=True)

    def close(self) -> None:
        """Close the host's ends of the stdio pipes."""
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        if self.accounting is not None:
            self.accounting.close()
            self.accounting = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.exit is None and not self.link.channel_dead():
                await self.kill()
                await self.wait()
        finally:
            self.close()
