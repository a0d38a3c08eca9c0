"""Every failure a user can cause is one of these: the message says the cause and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [  # noqa: RUF022 - in the order of the class hierarchy below
    "SandkitError",
    "HostUnsupportedError",
    "SecurityConfigError",
    "ImageError",
    "ImageNotFoundError",
    "InvalidReferenceError",
    "DigestMismatchError",
    "UnsafeLayerError",
    "ImageInUseError",
    "RegistryError",
    "AuthenticationError",
    "ContainerError",
    "ContainerStartError",
    "ContainerNotRunningError",
    "NoSuchContainerError",
    "NameInUseError",
    "ContainerDiedError",
    "ProtocolError",
    "MountError",
    "LimitsError",
    "PortSpecError",
    "PortInUseError",
    "NetworkError",
    "NetworkNotFoundError",
    "NetworkExistsError",
    "NetworkInUseError",
    "NetworkUnavailableError",
    "NetworkSpecError",
    "EgressError",
    "VolumeError",
    "VolumeNotFoundError",
    "VolumeInUseError",
    "VolumeSpecError",
    "CgroupError",
    "FileTooLargeError",
    "CopyError",
    "WaitTimeoutError",
    "ReadinessSpecError",
    "ExecStartError",
    "CommandNotFoundError",
    "CommandNotExecutableError",
    "UserNotFoundError",
    "WorkdirError",
    "ExecError",
    "ExecTimeoutError",
    "SessionError",
    "CallTimeoutError",
    "RemoteError",
    "PoolError",
    "PoolSpecError",
    "PoolClosedError",
    "PoolExhaustedError",
    "PoolStartError",
]

if TYPE_CHECKING:
    # For the annotation only: at run time errors.py imports nothing of sandkit (it is the bottom
    # layer; tests/test_layering.py allows this one type-only name).
    from .runtime.results import ExecResult


class SandkitError(Exception):
    """Base class of every error sandkit raises on purpose."""


# --- the host cannot do what was asked -------------------------------------------------------


class HostUnsupportedError(SandkitError):
    """The kernel or the host's configuration lacks something sandkit needs (the message says what
    to change)."""


class SecurityConfigError(SandkitError, ValueError):
    """A seccomp profile, capability name or other security option given by the caller is invalid."""


# --- builds ----------------------------------------------------------------------------------


class BuildError(SandkitError):
    """A Dockerfile build failed: a step's command, a missing file, an unusable instruction."""


class DockerfileSyntaxError(BuildError, ValueError):
    """A Dockerfile that cannot be parsed or uses an instruction wrongly; ``line`` and ``column``
    (1-based) point at the cause."""

    def __init__(self, message: str, line: int, column: int = 1) -> None:
        super().__init__(f"Dockerfile line {line}, column {column}: {message}")
        self.line = line
        self.column = column


class BuildContextError(BuildError, ValueError):
    """A COPY or ADD source that is missing, or leads out of the build context (``..``, an absolute
    symlink, a symlink chain that leaves it)."""


# --- images ----------------------------------------------------------------------------------


class ImageError(SandkitError):
    """An image is missing, malformed or unsafe."""


class ImageNotFoundError(ImageError):
    """No image of that name or digest: not in the local store, or not in the registry asked."""


class InvalidReferenceError(ImageError, ValueError):
    """An image reference, tag or digest that is not well formed (``name[:tag][@digest]``, as Docker
    spells them)."""


class DigestMismatchError(ImageError):
    """Content does not hash to the digest that names it: a corrupt or tampered blob, layer or
    manifest, which is refused and not stored."""


class UnsafeLayerError(ImageError):
    """A layer tried to write outside its own directory, or is otherwise hostile."""


class ImageInUseError(ImageError):
    """An image cannot be removed while a container (in any process) holds a lease on its layers."""


class RegistryError(SandkitError):
    """A registry refused a request or answered with something sandkit cannot use (the message has
    its status and error)."""


class AuthenticationError(RegistryError):
    """Credentials for a registry are missing, unreadable or refused (``sandkit login`` or
    ``~/.docker/config.json`` fixes them)."""


# --- containers ------------------------------------------------------------------------------


class ContainerError(SandkitError):
    """Base class of the errors about a container and what runs in it."""


class ContainerStartError(ContainerError):
    """The container could not be set up (the message names the step that failed)."""


class ContainerNotRunningError(ContainerError):
    """The container was never started, or has already stopped."""


# Detached containers (``detach=True``, `sandkit run -d`): found again by name or id.


class NoSuchContainerError(ContainerError):
    """No detached container of this user has that id, id prefix or name ("No such
    container", as in Docker)."""


class NameInUseError(ContainerError):
    """The name is already the name of another detached container: remove that one (``sandkit
    rm``), or pick another name."""


class ContainerDiedError(ContainerError):
    """The container's init ended while it was still in use (killed from outside, or crashed)."""


class ProtocolError(ContainerError):
    """The host and the init disagree on the control protocol (a bug, or a version mismatch)."""


class MountError(ContainerError, ValueError):
    """A mount given by the caller is invalid."""


class LimitsError(ContainerError, ValueError):
    """A resource limit given by the caller is invalid (memory, cpus, pids, ...)."""


class PortSpecError(ContainerError, ValueError):
    """A published port given by the caller is malformed, or cannot be published in this mode."""


class PortInUseError(ContainerStartError):
    """A host port to publish on is taken already (or the address is not the host's)."""


class NetworkError(SandkitError):
    """A network could not be created, found, joined or removed (the message says why and what to
    do about it)."""


class NetworkNotFoundError(NetworkError, LookupError):
    """No network of that name or id (``sandkit network ls`` lists them)."""


class NetworkExistsError(NetworkError):
    """A network of that name exists already."""


class NetworkInUseError(NetworkError):
    """A network cannot be removed while containers are on it."""


class NetworkUnavailableError(NetworkError, HostUnsupportedError):
    """This host lacks what a network mode needs (a user-mode network stack such as ``pasta``,
    access to ``/dev/net/tun``, iptables); ``sandkit doctor`` explains the fix."""


class NetworkSpecError(NetworkError, ValueError):
    """A network option given by the caller is malformed: a name, subnet or alias."""


class EgressError(NetworkError, ValueError):
    """An ``egress=`` policy is malformed, or names a host that does not resolve."""


class VolumeError(SandkitError):
    """A named volume could not be created, found, mounted or removed (the message says why and
    what to do about it)."""


class VolumeNotFoundError(VolumeError, LookupError):
    """No volume of that name (``sandkit volume ls`` lists them)."""


class VolumeInUseError(VolumeError):
    """A volume cannot be removed while a container (in any process) has it mounted."""


class VolumeSpecError(VolumeError, ValueError):
    """A volume option given by the caller is malformed: a name, a label, a size."""


class CgroupError(ContainerError):
    """The host's cgroups could not be set up or cleaned up for a container."""


class FileTooLargeError(ContainerError):
    """A file of the container is over `read_file`'s size limit (use `open_file` to stream it)."""


class CopyError(ContainerError):
    """A copy into or out of a container (``copy_in``, ``copy_out``, ``sandkit cp``) was refused or
    failed: the message names the path, the cause and the fix, and what was written, if anything."""


# --- readiness and health (`wait_for_*`, healthcheck=) ---------------------------------------


class WaitTimeoutError(ContainerError, TimeoutError):
    """A ``wait_for_*`` did not see what it waited for in time; the message names what was awaited
    and ends with the service's last log lines."""


class ReadinessSpecError(ContainerError, ValueError):
    """A readiness wait or health check given by the caller is malformed (a port, a pattern, a
    duration, a ``healthcheck=`` key)."""


# --- processes inside a container ------------------------------------------------------------


class ExecStartError(ContainerError):
    """A command could not be started inside the container."""

    exit_code = 126  # what a shell (and `docker run`) reports for a command that cannot run


class CommandNotFoundError(ExecStartError):
    """The command (``argv[0]``) does not exist in the container's root or ``PATH``; exit code 127,
    as in a shell."""

    exit_code = 127


class CommandNotExecutableError(ExecStartError):
    """The command exists but cannot be executed (no execute permission, a directory, a bad
    interpreter); exit code 126."""


class UserNotFoundError(ExecStartError):
    """The ``user=`` of a container or exec is not in the image's ``/etc/passwd`` (or its group not
    in ``/etc/group``)."""


class WorkdirError(ExecStartError):
    """The ``workdir=`` of a container or exec does not exist in the container or is not a
    directory."""


class ExecError(SandkitError):
    """Raised by ``exec(..., check=True)`` when the command failed; ``.result`` holds the result."""

    def __init__(self, message: str, result: ExecResult) -> None:
        super().__init__(message)
        self.result = result


class ExecTimeoutError(ExecError):
    """Raised by ``exec(..., check=True, timeout=...)`` when the command ran out of time and was
    killed with everything it started; ``.result`` holds what it wrote until then."""


# --- code sessions and function calls (sandkit/sessions/) -----------------------------------


class SessionError(ContainerError):
    """A code session's interpreter could not start (no python3 in the image, a Python older than
    3.8), died (exit code or signal in the message), or sent garbage on its channel. The
    interpreter is gone; the next call on the session starts a fresh one."""


class CallTimeoutError(SessionError, TimeoutError):
    """A ``call``/``call_iter`` did not return within its ``timeout``: it was interrupted
    (KeyboardInterrupt inside), and its interpreter killed when it did not stop in a second."""


class RemoteError(SandkitError):
    """The function a ``call``/``call_iter`` ran raised: ``.type_name``, ``.message`` and
    ``.traceback`` are the remote exception's, as text (nothing is unpickled)."""

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


# --- warm pools (`sandkit.Pool`) ---------------------------------------------------------------


class PoolError(SandkitError):
    """A warm pool could not hand out a container (the message says why and what to change)."""


class PoolSpecError(PoolError, ValueError):
    """A pool's ``size=`` or ``max_containers=`` is malformed, or asks for more containers than
    this process may hold, or a container option does not fit a pool (``detach=True``)."""


class PoolClosedError(PoolError):
    """The pool is closed (or, an `AsyncPool`, not started yet): it hands out nothing more."""


class PoolExhaustedError(PoolError, TimeoutError):
    """``container(timeout=)`` ran out of time: every one of the pool's ``max_containers`` was
    in use, starting or being destroyed (or the starts were slower than the timeout)."""


class PoolStartError(PoolError):
    """The pool's background starts failed (its ``__cause__`` is the last failure): the waiting
    callers get this rather than waiting out their timeout; the pool retries, less and less often."""
