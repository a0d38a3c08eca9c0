"""What running a command in a container comes to: its output, its result, its errors."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence

import anyio
import attrs

from .. import errors, idmap
from ..ipc import Error, Exit, Output, Reply
from .cgroups import ExecUsage
from .process import AsyncOutput, AsyncProcess
from .results import ExecResult


@attrs.define
class CapturedOutput:
    """What an exec printed so far, kept across a timeout; bytes beyond ``limit`` are dropped."""

    limit: int | None
    data: bytearray = attrs.field(factory=bytearray)
    truncated: bool = False
    done: bool = False

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk``, or the part of it that fits under ``limit``; what is cut sets
        ``truncated``."""
        if self.limit is not None and len(self.data) + len(chunk) > self.limit:
            chunk = chunk[: max(0, self.limit - len(self.data))]
            self.truncated = True
        self.data += chunk


async def communicate(
    process: AsyncProcess, input: bytes | None, out: CapturedOutput, err: CapturedOutput
) -> None:
    """Feed stdin and read both outputs to their end, concurrently."""

    async def feed() -> None:
        assert process.stdin is not None
        try:
            await process.stdin.write(input or b"")
        except BrokenPipeError:
            pass  # the process did not read all its input: not an error, as in subprocess.run
        finally:
            process.stdin.close()

    async def drain(stream: AsyncOutput | None, sink: CapturedOutput) -> None:
        if stream is None:
            return
        while chunk := await stream.read():
            sink.add(chunk)

    async with anyio.create_task_group() as tasks:
        if process.stdin is not None and process.stdin.fd >= 0:
            tasks.start_soon(feed)
        tasks.start_soon(drain, process.stdout, out)
        tasks.start_soon(drain, process.stderr, err)


@attrs.frozen
class ExecOutcome:
    """What an exec came to, before it is an `ExecResult`."""

    exit: Exit
    usage: ExecUsage | None
    out: CapturedOutput
    err: CapturedOutput
    timed_out: bool


def exec_result(outcome: ExecOutcome, duration: float) -> ExecResult:
    """The `ExecResult` of a finished exec: ``exit_code`` is 128 + N when signal N ended it, and
    the cgroup's usage fills the per-exec figures when there was one."""
    sig = outcome.exit.signal
    usage = outcome.usage
    return ExecResult(
        exit_code=128 + sig if sig is not None else (outcome.exit.code or 0),
        stdout=bytes(outcome.out.data),
        stderr=bytes(outcome.err.data),
        signal=sig,
        timed_out=outcome.timed_out,
        duration=duration,
        output_truncated=outcome.out.truncated or outcome.err.truncated,
        oom_killed=usage.oom_killed if usage else False,
        pids_limit_hit=usage.pids_limit_hit if usage else False,
        cpu_time=usage.cpu_ns / 1e9 if usage else None,
        peak_memory=usage.memory_peak if usage else None,
    )


@attrs.define
class CapturedReplies:
    """The replies of one captured exec as they come: chunks of output, then its exit (or an
    error, when it could not start)."""

    argv: Sequence[str]
    out: CapturedOutput
    err: CapturedOutput

    def take(self, reply: Reply) -> Exit | None:
        """File one reply; the exit event once it has come."""
        if isinstance(reply, Output):
            (self.out if reply.fd == 1 else self.err).add(reply.data)
            return None
        if isinstance(reply, Error):
            raise exec_failure(reply, self.argv)
        if not isinstance(reply, Exit):
            raise errors.ProtocolError(f"expected 'exit', got {reply!r}")
        self.out.add(reply.stdout)
        self.err.add(reply.stderr)
        self.out.truncated |= reply.truncated
        return reply


def finished(
    outcome: ExecOutcome, argv: Sequence[str], timeout: float | None, check: bool, started: float
) -> ExecResult:
    """The result of an exec begun at ``started``; with ``check``, an error if it failed."""
    result = exec_result(outcome, duration=time.monotonic() - started)
    if check and not result.ok:
        raise_for(result, argv, timeout)
    return result


def raise_for(result: ExecResult, argv: Sequence[str], timeout: float | None) -> None:
    """Raise what ``exec(..., check=True)`` raises for a failed ``result``: `ExecTimeoutError`
    when the timeout killed it, else `ExecError` with the status and the end of its stderr."""
    command = " ".join(argv)
    if result.timed_out:
        raise errors.ExecTimeoutError(
            f"{command!r} did not finish within {timeout} s and was killed", result
        )
    how = (
        f"was killed by signal {result.signal}"
        if result.signal
        else f"exited with code {result.exit_code}"
    )
    tail = result.stderr.decode(errors="replace").strip()[-500:]
    raise errors.ExecError(f"{command!r} {how}" + (f": {tail}" if tail else ""), result)


def exec_failure(reply: Error, argv: Sequence[str]) -> errors.ExecStartError:
    """The error for an exec the init could not start: `CommandNotFoundError`,
    `CommandNotExecutableError`, `UserNotFoundError` or `WorkdirError` by the reply's ``kind``
    (else `ExecStartError`), its message with the fix."""
    kinds: dict[str, type[errors.ExecStartError]] = {
        "notfound": errors.CommandNotFoundError,
        "noexec": errors.CommandNotExecutableError,
        "user": errors.UserNotFoundError,
        "cwd": errors.WorkdirError,
    }
    cls = kinds.get(reply.kind, errors.ExecStartError)
    fixes = {
        "notfound": "check the name, or give the full path of the program inside the image",
        "noexec": "check the file's mode (chmod +x) and that it is a program for this machine",
        "user": "use a user that exists in the image's /etc/passwd, or a numeric uid[:gid]",
        "cwd": "use a working directory that exists in the container and the user may enter",
    }
    fix = fixes.get(reply.kind, "")
    if "not mapped in the container's user namespace" in reply.msg:
        fix = idmap.unmapped_fix()
    return cls(
        f"cannot run {argv[0]!r} in the container: {reply.msg}" + (f" ({fix})" if fix else "")
    )


def file_error(reply: Error, path: str) -> errors.SandkitError:
    """The `ContainerError` for an ``open`` of ``path`` the init refused, worded for the common
    errnos (missing, a directory, not a directory)."""
    if reply.errno == errno.ENOENT:
        return errors.ContainerError(f"no such file or directory in the container: {path!r}")
    if reply.errno == errno.EISDIR:
        return errors.ContainerError(f"{path!r} is a directory in the container, not a file")
    if reply.errno == errno.ENOTDIR:
        return errors.ContainerError(f"{path!r} is not a directory in the container")
    return errors.ContainerError(f"cannot open {path!r} in the container: {reply.msg}")


def start_failure(reply: Error, rootless: bool) -> str:
    """The message of a `ContainerStartError` for a set-up the init reported as failed, with the
    fix when the cause is known (overlayfs, for instance)."""
    message = reply.msg or os.strerror(reply.errno)
    lowered = message.lower()
    if "overlay" in lowered and reply.errno in (errno.ENODEV, errno.EPERM, errno.EINVAL):
        fix = (
            "overlayfs in a user namespace needs Linux >= 5.11; run as root, or use read_only=True"
            if rootless
            else "load the overlay module (modprobe overlay)"
        )
        return f"cannot mount the container's root filesystem: {message} ({fix})"
    return f"container set-up failed: {message}"
