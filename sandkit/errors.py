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
    "ContainerDiedError",
    "ProtocolError",
    "MountError",
    "LimitsError",
    "PortSpecError",
    "PortInUseError",
    "CgroupError",
    "FileTooLargeError",
    "ExecStartError",
    "CommandNotFoundError",
    "CommandNotExecutableError",
    "UserNotFoundError",
    "WorkdirError",
    "ExecError",
    "ExecTimeoutError",
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


# --- images ----------------------------------------------------------------------------------


class ImageError(SandkitError):
    """An image is missing, malformed or unsafe."""


class ImageNotFoundError(ImageError):
    pass


class InvalidReferenceError(ImageError, ValueError):
    pass


class DigestMismatchError(ImageError):
    pass


class UnsafeLayerError(ImageError):
    """A layer tried to write outside its own directory, or is otherwise hostile."""


class ImageInUseError(ImageError):
    pass


class RegistryError(SandkitError):
    pass


class AuthenticationError(RegistryError):
    pass


# --- containers ------------------------------------------------------------------------------


class ContainerError(SandkitError):
    pass


class ContainerStartError(ContainerError):
    """The container could not be set up (the message names the step that failed)."""


class ContainerNotRunningError(ContainerError):
    """The container was never started, or has already stopped."""


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


class CgroupError(ContainerError):
    """The host's cgroups could not be set up or cleaned up for a container."""


class FileTooLargeError(ContainerError):
    """A file of the container is over `read_file`'s size limit (use `open_file` to stream it)."""


# --- processes inside a container ------------------------------------------------------------


class ExecStartError(ContainerError):
    """A command could not be started inside the container."""

    exit_code = 126  # what a shell (and `docker run`) reports for a command that cannot run


class CommandNotFoundError(ExecStartError):
    exit_code = 127


class CommandNotExecutableError(ExecStartError):
    pass


class UserNotFoundError(ExecStartError):
    pass


class WorkdirError(ExecStartError):
    pass


class ExecError(SandkitError):
    """Raised by ``exec(..., check=True)`` when the command failed; ``.result`` holds the result."""

    def __init__(self, message: str, result: ExecResult) -> None:
        super().__init__(message)
        self.result = result


class ExecTimeoutError(ExecError):
    pass
