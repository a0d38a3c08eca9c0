"""The synchronous API: what most users touch. Each call runs the async core (`sandkit.aio`) on
one background event-loop thread, so sync and async users share one implementation."""

from __future__ import annotations

import errno
import functools
import os
import re
import signal as signals
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypedDict, Unpack, cast

from . import _portal
from .images.image import Image
from .runtime.cgroups import CgroupStats
from .runtime.container import (
    DEFAULT_MAX_READ,
    AsyncContainer,
    ImageSource,
    copy_side,
    exec_on_this_thread,
    main_process,
)
from .runtime.forward import Binding
from .runtime.mounts import Mount
from .runtime.options import ContainerOptions
from .runtime.process import AsyncInput, AsyncProcess, wait_ready
from .runtime.results import ExecResult
from .runtime.service import log_view
from .security.seccomp import SeccompSpec

if TYPE_CHECKING:
    from .images.changes import Change
    from .runtime import copy  # imported by get_archive, its one use at run time

__all__ = [
    "Container",
    "ContainerOptions",
    "ExecResult",
    "Image",
    "ImageSource",
    "Mount",
    "Process",
]


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
        """The container's id: 64 hex digits, random (its first 12 are the default host name)."""
        return self._core.id

    @property
    def hostname(self) -> str:
        """The container's host name (``hostname=``, else the first 12 digits of its id)."""
        return self._core.hostname or ""

    @property
    def running(self) -> bool:
        """True between `start` and `stop`, while the container's init is alive (with ``run=``:
        until its main process ended for good)."""
        return self._core.running

    def start(self) -> Self:
        """Create the container and return it, ready for `exec` (the ``with`` block calls this).
        Raises `ContainerStartError` when it cannot be set up, `ImageNotFoundError` for an
        unknown image, and `ContainerError` when it was started before: a container starts once."""
        _portal.run(self._core.start)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop every process in the container and remove all trace of it; safe to call again.
        A main process (``run=``) gets its StopSignal first and ``timeout`` s (default 10) to
        end, as with ``docker stop``."""
        _portal.run(functools.partial(self._core.stop, timeout))

    def kill(self) -> None:
        """Like `stop`, but SIGKILL the container's init at once instead of letting it kill its
        processes."""
        _portal.run(self._core.kill)

    def __enter__(self) -> Self:
        if not isinstance(self._core, AsyncContainer) and self._core.running:
            return self  # an attached container: already running
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        # Stops the container; a detached one's handle only lets go of it.
        _portal.run(self._core.__aexit__, None, None, None)

    # -- detached containers (``detach=True``; sandkit/runtime/attached.py) -------------------

    @classmethod
    def attach(cls, name_or_id: str) -> Container:
        """The running detached container ``name_or_id`` (its name, id or unique id prefix),
        made by any process of this user (``detach=True``, or `sandkit run -d`). Leaving its
        ``with`` block leaves it running; `remove()` ends it. `NoSuchContainerError` when there
        is none; `ContainerNotRunningError`, with its exit code, when it has exited."""
        attached = cls.__new__(cls)
        attached._core = _portal.run(AsyncContainer.attach, name_or_id)
        return attached

    @property
    def name(self) -> str:
        """A detached container's name (the one given, or the one generated for it); ""
        for a container that lives with this process."""
        return self._core.name

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
            "input": input,
            "env": env,
            "workdir": workdir,
            "user": user,
            "timeout": timeout,
            "check": check,
            "max_output": max_output,
            "seccomp": seccomp,
        }
        if isinstance(self._core, AsyncContainer) and not _portal.on_loop_thread():
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
            self._core.spawn,
            argv,
            env=env,
            workdir=workdir,
            user=user,
            stdin=stdin,
            tty=tty,
            rows=rows,
            cols=cols,
            seccomp=seccomp,
        )
        return Process(_portal.run(call))

    # -- the main process (run=) --------------------------------------------------------------
    # (its logs and exit are read from the container's service thread: no call into the loop)

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> bytes:
        """What the main process printed so far (the ring keeps the last ``log_size`` bytes);
        see `AsyncContainer.logs`."""
        view = log_view(stdout=stdout, stderr=stderr, timestamps=timestamps, tail=tail)
        return main_process(self._core).logs(view, tail)

    def logs_stream(
        self,
        *,
        follow: bool = True,
        stdout: bool = True,
        stderr: bool = True,
        timestamps: bool = False,
        tail: int | None = None,
    ) -> Iterator[bytes]:
        """The output as chunks, then (``follow``) as it comes until the main process has ended
        for good: ``for chunk in c.logs_stream(): ...``."""
        view = log_view(stdout=stdout, stderr=stderr, timestamps=timestamps, tail=tail)
        return main_process(self._core).stream(view, tail, follow)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the main process to end for good and return its exit status (128 + N for
        signal N); `TimeoutError` after ``timeout`` s."""
        return main_process(self._core).wait_blocking(timeout)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the main process's output, decoded ("" without one)."""
        return self._core.log_tail(lines)

    @property
    def restart_count(self) -> int:
        """How many times ``restart=`` started the main process again."""
        return self._core.restart_count

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace the file ``path`` in the container with ``data`` (text is written as
        UTF-8) and permission bits ``mode``. A relative path is taken from the container's
        workdir (or ``/``). The init writes it inside the container's root, so a symlink in the
        container never leads to a host file. Raises `ContainerError` when the path cannot be
        opened for writing."""
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
        """The names in directory ``path`` of the container, sorted (without ``.`` and ``..``).
        Raises `ContainerError` when it is missing or not a directory."""
        return _portal.run(self._core.listdir, path)

    def copy_in(
        self,
        source: copy.CopySource,
        container_path: str,
        *,
        archive: bool = False,
        follow_link: bool = False,
    ) -> None:
        """Copy a host file or tree, bytes (one file's content) or a tar stream (a binary file
        object, extracted into directory ``container_path``) into the container, by `docker
        cp`'s rules; ``archive=True`` keeps owners (``-a``), ``follow_link`` follows a symlink
        source. Streamed; `CopyError` names what is wrong, and nothing half-made stays."""
        _portal.run(
            functools.partial(
                self._core.copy_in,
                source,
                container_path,
                archive=archive,
                follow_link=follow_link,
            )
        )

    def copy_out(
        self,
        container_path: str,
        host_path: str | os.PathLike[str],
        *,
        archive: bool = False,
        follow_link: bool = False,
    ) -> None:
        """Copy a file or tree of the container to ``host_path``, by `docker cp`'s rules; the
        container's symlinks are copied as symlinks, never followed out of it."""
        _portal.run(
            functools.partial(
                self._core.copy_out,
                container_path,
                host_path,
                archive=archive,
                follow_link=follow_link,
            )
        )

    def get_archive(self, path: str, *, follow_link: bool = False) -> Iterator[bytes]:
        """The file or tree at ``path`` as a tar stream, in chunks (Docker's archive API):
        ``for chunk in c.get_archive("/etc"): out.write(chunk)``."""
        from .runtime import copy

        return copy.archive(copy_side(self._core, _portal.run), path, follow_link=follow_link)

    def stat(self, path: str) -> copy.PathStat:
        """Docker's ``PathStat`` of ``path``: name, size, mode (``st_mode``), mtime,
        link_target (a symlink at the last name is not followed)."""
        return _portal.run(self._core.stat, path)

    def diff(self) -> list[Change]:
        """What the container changed in its filesystem, as `docker diff`: `Change`s "A"
        (added), "C" (changed), "D" (deleted), sorted by path."""
        return _portal.run(self._core.diff)

    def commit(
        self,
        tag: str | None = None,
        *,
        changes: Sequence[str] = (),
        message: str = "",
        author: str = "",
    ) -> Image:
        """A new image: the container's image plus a layer of its changes, as `docker commit`;
        ``changes`` are Dockerfile lines for its config (``'CMD ["app"]'``, ``"ENV K=V"``)."""
        commit = functools.partial(
            self._core.commit, tag, changes=changes, message=message, author=author
        )
        return _portal.run(commit)

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the container's flattened filesystem to the tar file ``path``, as
        `docker export`."""
        _portal.run(self._core.export, path)

    def remove(self, path: str | None = None, *, recursive: bool = False) -> None:
        """Remove a file, symlink or empty directory of the container (a tree: ``recursive``).
        Without a path, the container itself: `stop`; a detached one is killed and its state
        and name removed (``sandkit rm -f``)."""
        _portal.run(functools.partial(self._core.remove, path, recursive=recursive))

    def ping(self) -> float:
        """The round trip to the container's init and back, in seconds (a health check)."""
        return _portal.run(self._core.ping)

    @property
    def ports(self) -> dict[str, list[Binding]]:
        """The published ports: {"80/tcp": [Binding(spec, host_ip, host_port)], ...}."""
        return self._core.ports

    def port(self, container_port: int | str) -> tuple[str, int]:
        """Where ``container_port`` (80, "53/udp") is published: (host address, host port)."""
        return self._core.port(container_port)

    @property
    def networks(self) -> dict[str, str]:
        """The container's address on each network it is on: {"bridge": "10.88.0.2"}."""
        return self._core.networks

    def set_egress(self, egress: str | Sequence[str] | None) -> None:
        """Replace the running container's egress policy at once; see
        `AsyncContainer.set_egress`."""
        _portal.run(functools.partial(self._core.set_egress, egress))

    def connect(self, network: object, aliases: Sequence[str] = ()) -> None:
        """Put the running container on one more network; see `AsyncContainer.connect`."""
        _portal.run(functools.partial(self._core.connect, network, aliases))

    def disconnect(self, network: object) -> None:
        """Take the running container off ``network``; see `AsyncContainer.disconnect`."""
        _portal.run(functools.partial(self._core.disconnect, network))

    def stats(self) -> CgroupStats:
        """The whole container's current and peak memory, CPU time and process count. It needs a
        cgroup: a limit (``memory``, ``cpus``, ``pids_limit``...) or ``accounting=True``, else
        `ContainerError`."""
        return self._core.stats()

    # -- readiness and health (issue 18 item 2) --------------------------------------------

    def wait_for_port(self, port: int, *, timeout: float = 30.0, proto: str = "tcp") -> None:
        """Wait until something in the container listens on ``port``; see
        `AsyncContainer.wait_for_port`."""
        _portal.run(functools.partial(self._core.wait_for_port, port, timeout=timeout, proto=proto))

    def wait_for_log(
        self, pattern: str | bytes | re.Pattern[Any], *, timeout: float = 30.0, times: int = 1
    ) -> None:
        """Wait until the main process's output matches ``pattern`` ``times`` times; see
        `AsyncContainer.wait_for_log`."""
        _portal.run(
            functools.partial(self._core.wait_for_log, pattern, timeout=timeout, times=times)
        )

    def wait_for_http(
        self,
        path: str = "/",
        *,
        port: int,
        status: int | Callable[[int], bool] = 200,
        timeout: float = 30.0,
    ) -> None:
        """Wait until ``GET path`` on the container's ``port`` answers ``status``; see
        `AsyncContainer.wait_for_http`."""
        call = functools.partial(
            self._core.wait_for_http, path, port=port, status=status, timeout=timeout
        )
        _portal.run(call)

    def wait_for_exec(self, argv: Sequence[str], *, timeout: float = 30.0) -> None:
        """Wait until ``argv`` exits 0 in the container; see `AsyncContainer.wait_for_exec`."""
        _portal.run(functools.partial(self._core.wait_for_exec, argv, timeout=timeout))

    def wait_for_healthy(self, *, timeout: float = 60.0) -> None:
        """Wait until the health check says "healthy"; see `AsyncContainer.wait_for_healthy`."""
        _portal.run(functools.partial(self._core.wait_for_healthy, timeout=timeout))

    @property
    def health(self) -> str | None:
        """The health check's state: "starting", "healthy", "unhealthy", or None without one; see
        `AsyncContainer.health`."""
        return self._core.health

    def health_report(self) -> dict[str, Any] | None:
        """State.Health as `docker inspect` shows it; see `AsyncContainer.health_report`."""
        return self._core.health_report()

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
                view = view[os.write(self._fd, view) :]
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
        """The process's pid inside the container's pid namespace."""
        return self._core.pid

    @property
    def returncode(self) -> int | None:
        """None while the process runs; then its exit status, or -N when signal N ended it."""
        return self._core.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process (not its output) to end and return its `returncode`; raises
        `TimeoutError` when ``timeout`` seconds pass first (the process keeps running)."""

        async def wait() -> int:
            import anyio

            with anyio.fail_after(timeout):
                return await self._core.wait()

        return _portal.run(wait)

    def kill(self, sig: int = signals.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to the process and everything it started."""
        _portal.run(self._core.kill, sig)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process only, not to what it started."""
        _portal.run(self._core.send_signal, sig)

    def close(self) -> None:
        """Close the host's ends of the process's stdin, stdout and stderr (leaving the ``with``
        block kills the process if it still runs, then closes them)."""
        self._core.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _portal.run(self._core.__aexit__, None, None, None)
