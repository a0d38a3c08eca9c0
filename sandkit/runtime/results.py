"""What a finished command reports."""

from __future__ import annotations

import attrs


@attrs.frozen
class ExecResult:
    """The outcome of `Container.exec`.

    ``exit_code`` follows the shell's (and Docker's) convention: the process's own status, or
    128 + N when signal N ended it (``signal`` then says N). ``timed_out`` is true when the
    timeout killed the process tree. With a cgroup (limits, or ``accounting=True``):
    ``oom_killed`` when the memory limit killed a process of it, ``pids_limit_hit`` when the
    pids limit refused it (or anything in the container meanwhile) a fork.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    oom_killed: bool = False
    cpu_time: float | None = None
    peak_memory: int | None = None
    output_truncated: bool = False
    pids_limit_hit: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out
