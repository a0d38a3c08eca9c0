"""Resource limits as a user states them (Docker's flags), validated once, version-neutral.

The v1 and v2 writers translate a `Limits` into their own files; this module knows no paths.
"""

from __future__ import annotations

import os

import attrs

from ...errors import LimitsError
from ...sizes import parse_size

MIN_MEMORY = 6 << 20  # Docker refuses less: below this the container's own init cannot even start
CFS_PERIOD_US = 100_000  # the CFS default period; Docker's --cpus uses it too
SHARES_MIN, SHARES_MAX = 2, 262_144  # the kernel's bounds for v1 cpu.shares
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000  # the kernel's bounds for v2 cpu.weight
UNLIMITED = -1


def _optional_size(value: int | str | None) -> int | None:
    return None if value is None else parse_size(value)


def _swap_size(value: int | str | None) -> int | None:
    # -1 is Docker's "unlimited swap"; any other negative number is a mistake.
    if value is None:
        return None
    if value in (UNLIMITED, "-1"):
        return UNLIMITED
    return parse_size(value)


@attrs.frozen
class Limits:
    """What `docker run --memory/--memory-swap/--cpus/--cpu-shares/--pids-limit` would set.

    ``memory_swap`` is Docker's: memory *plus* swap. Unset with ``memory`` set means twice
    ``memory`` (Docker's default); -1 means unlimited swap; equal to ``memory`` means no swap.
    """

    memory: int | None = attrs.field(default=None, converter=_optional_size)
    memory_swap: int | None = attrs.field(default=None, converter=_swap_size)
    cpus: float | None = attrs.field(default=None)
    cpu_shares: int | None = attrs.field(default=None)
    pids: int | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self._check_memory()
        self._check_cpu()
        if self.pids is not None and (_not_int(self.pids) or self.pids < 1):
            raise LimitsError(
                f"pids must be a whole number >= 1 (or None for no limit), not {self.pids!r}"
            )

    def _check_memory(self) -> None:
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise LimitsError(f"memory limit {self.memory} bytes is below the minimum of 6m")
        if self.memory_swap is None or self.memory_swap == UNLIMITED:
            if self.memory_swap is not None and self.memory is None:
                raise LimitsError("memory_swap needs a memory limit too (set memory=...)")
            return
        if self.memory is None:
            raise LimitsError("memory_swap needs a memory limit too (set memory=...)")
        if self.memory_swap < self.memory:
            raise LimitsError(
                f"memory_swap ({self.memory_swap}) is memory plus swap, so it cannot be smaller than "
                f"memory ({self.memory}); use memory_swap=memory for no swap, -1 for unlimited"
            )

    def _check_cpu(self) -> None:
        if self.cpus is not None:
            ncpu = os.cpu_count() or 1
            if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)):
                raise LimitsError(f"cpus must be a number like 1.5, not {self.cpus!r}")
            if not 0.01 <= self.cpus <= ncpu:
                raise LimitsError(
                    f"cpus must be between 0.01 and {ncpu} (this host's CPUs), not {self.cpus}"
                )
        if self.cpu_shares is not None and (
            _not_int(self.cpu_shares) or not SHARES_MIN <= self.cpu_shares <= SHARES_MAX
        ):
            raise LimitsError(
                f"cpu_shares must be a whole number from 2 to 262144, not {self.cpu_shares!r}"
            )

    # --- what the writers need ----------------------------------------------------------------

    @property
    def empty(self) -> bool:
        """True when no limit is set: the container needs no cgroup for limits."""
        return all(
            v is None
            for v in (self.memory, self.memory_swap, self.cpus, self.cpu_shares, self.pids)
        )

    @property
    def wants_memory(self) -> bool:
        """True when a memory limit is set."""
        return self.memory is not None

    @property
    def wants_cpu(self) -> bool:
        """True when a CPU quota or CPU shares are set."""
        return self.cpus is not None or self.cpu_shares is not None

    @property
    def wants_pids(self) -> bool:
        """True when a pids limit is set."""
        return self.pids is not None

    def cpu_quota_us(self) -> int:
        """CFS quota per `CFS_PERIOD_US`: 1.5 cpus -> 150000 (-1, no quota, when cpus is unset)."""
        return -1 if self.cpus is None else max(1000, round(self.cpus * CFS_PERIOD_US))

    def swap_total(self) -> int | None:
        """memory+swap in bytes (v1 memsw), `UNLIMITED`, or None when no memory limit is set."""
        if self.memory is None:
            return None
        return self.memory * 2 if self.memory_swap is None else self.memory_swap

    def swap_only(self) -> int | None:
        """swap alone in bytes (v2 memory.swap.max), `UNLIMITED`, or None when not limited."""
        total = self.swap_total()
        if total is None or total == UNLIMITED:
            return total
        assert self.memory is not None
        return total - self.memory

    def cpu_weight(self) -> int | None:
        """v2 cpu.weight for the v1 shares, systemd's proportional mapping (1024 -> 100).

        runc's linear formula maps the default 1024 shares to weight 39, below the v2 default of
        100, so a container given "normal" shares would get less CPU than its neighbours.
        """
        if self.cpu_shares is None:
            return None
        return min(WEIGHT_MAX, max(WEIGHT_MIN, self.cpu_shares * 100 // 1024))


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
