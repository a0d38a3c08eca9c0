"""The synchronous API: what most users touch. Each call runs the async core (`sandkit.aio`) on
one background event-loop thread, so sync and async users share one implementation."""

from __future__ import annotations

import errno
import functools
import os
import signal as signals
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO, Self, TypedDict, Unpack, cast

from . import _portal
from .images.image import Image
from .runtime.cgroups import CgroupStats
from .runtime.container import DEFAULT_MAX_READ, AsyncContainer, ImageSource, exec_on_this_thread
from .runtime.mounts import Mount
from .runtime.options import ContainerOptions
from .runtime.process import AsyncInput, AsyncProcess, wait_ready
from .runtime.results import ExecResult
from .security.seccomp import SeccompSpec

__all__ = ["Container", "ContainerOptions", "ExecResult", "Image", "ImageSource", "Mount", "Process"]


class _ExecOptions(TypedDict):
    """exec()'s keyword arguments, passed on whole (a typed ``**`` splat)."""

    input: bytes | None
    env: Mapping[str, str] | None
    workdir: str | None
    user: str | None
    timeout: float | None
    check: bool
    max_output: int | None
    seccomp: SeccompSpec


class Container:
    """An isolated container made from an image.

        with sandkit.Container("host") as c:
            r = c.exec(["sh", "-c", "echo hi"], timeout=5)

    ``image`` is "host" (the host's own programs, read-only, over a fresh writable layer), an
    `Image`, a directory (an `os.PathLike`) holding a root filesystem, or a reference to an image
    in the local store. Leaving the ``with`` block stops every process in the container and
    removes every trace of it.
    """

    def __init__(self, image: ImageSource = "host", **options: Unpack[ContainerOptions]) -> None:
        """``options``: see `ContainerOptions` (memory=, cpus=, mounts=, network=, ...)."""
        self._core = AsyncContainer(image, **options)

    @property
    def id(self) -> str:
        return self._core.id

    @property
    def hostname(self) -> str:
        return self._core.hostname or ""

    @property
    def running(self) -> bool:
        return self._core.running

    def start(self) -> Self:
        _portal.run(self._core.start)
        return self

    def stop(self) -> None:
        _portal.run(self._core.stop)

    def kill(self) -> None:
        _portal.run(self._core.kill)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def exec(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        check: bool = False,
        max_output: int | None = None,
        seccomp: SeccompSpec = "default",
    ) -> ExecResult:
        """Run a command to completion; see `AsyncContainer.exec`."""
        options: _ExecOptions = {
            "input": input, "env": env, "workdir": workdir, "user": user, "timeout": timeout,
            "check": check, "max_output": max_output, "seccomp": seccomp,
        }
        if not _portal.on_loop_thread():
            # Mostly done right here, blocking this thread: two thread hand-offs fewer.
            result = exec_on_this_thread(self._core, argv, **options)
            if result is not None:
                return result
        return _portal.run(functools.partial(self._core.exec, argv, **options))

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        stdin: bool = True,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        seccomp: SeccompSpec = "default",
    ) -> Process:
        """Start a command and return at once; read its output while it runs."""
        call = functools.partial(
            self._core.spawn, argv, env=env, workdir=workdir, user=user, stdin=stdin, tty=tty,
            rows=rows, cols=cols, seccomp=seccomp,
        )
        return Process(_portal.run(call))

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        _portal.run(functools.partial(self._core.write_file, path, data, mode))

    def read_file(self, path: str, *, max_size: int = DEFAULT_MAX_READ) -> bytes:
        """A file's whole content, up to ``max_size`` bytes (else `FileTooLargeError`)."""
        return _portal.run(functools.partial(self._core.read_file, path, max_size=max_size))

    def open_file(self, path: str) -> BinaryIO:
        """Open a file of the container for reading (binary), to stream one of any size:
        ``with c.open_file(p) as f: shutil.copyfileobj(f, dst)``."""
        async def open_() -> BinaryIO:
            # anyio types the file it wraps as IO[bytes]; os.fdopen(fd, "rb") made a BufferedReader.
            return cast(BinaryIO, (await self._core.open_file(path)).wrapped)

        return _portal.run(open_)

    def listdir(self, path: str = "/") -> list[str]:
        return _portal.run(self._core.listdir, path)

    def ping(self) -> float:
        return _portal.run(self._core.ping)

    def stats(self) -> CgroupStats:
        return self._core.stats()

    def __repr__(self) -> str:
        state = "running" if self.running else "not running"
        return f"<sandkit.Container {self.id[:12]} image={self._core.image!r} {state}>"


class _Output:
    """A process's stdout or stderr: ``read()`` or iterate for chunks as they arrive."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, max_bytes: int = 65536) -> bytes:
        while True:
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                wait_ready(self._fd)
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty closed
                    return b""
                raise

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read():
            yield chunk


class _Input:
    """A process's stdin: ``write()`` blocks until the process has taken the data."""

    def __init__(self, core: AsyncInput) -> None:
        self._fd = core.fd
        self._core = core

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                wait_ready(self._fd, write=True)

    def close(self) -> None:
        self._core.close()


class Process:
    """A command running in a container (from `Container.spawn`).

    ``returncode`` is None while it runs, then its exit status, or -N for signal N.
    """

    def __init__(self, core: AsyncProcess) -> None:
        self._core = core
        self.stdout = _Output(core.stdout.fd) if core.stdout else None
        self.stderr = _Output(core.stderr.fd) if core.stderr else None
        self.stdin = _Input(core.stdin) if core.stdin else None

    @property
    def pid(self) -> int:
        return self._core.pid

    @property
    def returncode(self) -> int | None:
        return self._core.returncode

    def wait(self, timeout: float | None = None) -> int:
        async def wait() -> int:
            import anyio

            with anyio.fail_after(timeout):
                return await self._core.wait()

        return _portal.run(wait)

    def kill(self, sig: int = signals.SIGKILL) -> None:
        _portal.run(self._core.kill, sig)

    def send_signal(self, sig: int) -> None:
        _portal.run(self._core.send_signal, sig)

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _portal.run(self._core.__aexit__, None, None, None)
