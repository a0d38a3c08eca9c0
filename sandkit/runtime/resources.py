"""A container's resource limits: cgroups where the host allows them, rlimits where it does not.

Root (or a delegated cgroup v2 subtree) gets real cgroup limits and per-exec accounting. A rootless
user on cgroup v1 cannot have cgroups: memory and pids then fall back to per-process rlimits, and a
`LimitsNotEnforcedWarning` names what is weaker than asked (cpu cannot be limited at all).
"""

from __future__ import annotations

import resource
import warnings
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import LimitsError
from . import cgroups
from .cgroups import ContainerCgroup, ExecCgroup, Limits


class LimitsNotEnforcedWarning(UserWarning):
    """A limit asked for cannot be enforced the way it was asked on this host."""


# rlimit names as `docker run --ulimit` takes them
RLIMIT_NAMES: dict[str, int] = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO,
    "sigpending": resource.RLIMIT_SIGPENDING,
    "stack": resource.RLIMIT_STACK,
    "as": resource.RLIMIT_AS,
}


def parse_rlimits(
    rlimits: Mapping[str, int | tuple[int, int]] | None,
) -> tuple[tuple[int, int, int], ...]:
    """``{"nofile": 1024, "nproc": (100, 200)}`` -> the (resource, soft, hard) triples of `exec`."""
    parsed = []
    for name, value in (rlimits or {}).items():
        number = RLIMIT_NAMES.get(name.lower().removeprefix("rlimit_"))
        if number is None:
            raise LimitsError(
                f"unknown rlimit {name!r}: use one of {', '.join(sorted(RLIMIT_NAMES))}"
            )
        soft, hard = (value, value) if isinstance(value, int) else value
        if soft > hard and hard != -1:
            raise LimitsError(
                f"rlimit {name}: the soft limit {soft} is above the hard limit {hard}"
            )
        parsed.append((number, soft, hard))
    return tuple(parsed)


@attrs.frozen
class ResourcePlan:
    """A container's resources as decided before anything is made: whether it gets a cgroup,
    and its rlimits (with the fallback ones when the host cannot give it a cgroup). Equal plans
    make interchangeable containers, so a spare container can be made from one ahead of need."""

    limits: Limits
    accounting: bool  # per-exec cgroups, when there is a cgroup
    wants_cgroup: bool
    rlimits: tuple[tuple[int, int, int], ...]

    @classmethod
    def decide(
        cls,
        limits: Limits,
        *,
        accounting: bool,
        rlimits: Mapping[str, int | tuple[int, int]] | None,
    ) -> ResourcePlan:
        """The plan for ``limits``: a cgroup when limits or ``accounting`` ask for one and the
        host can give it; otherwise, for memory and pids, fallback rlimits and a
        `LimitsNotEnforcedWarning`. Raises `LimitsError` for a bad rlimit, and
        `HostUnsupportedError` when the host's cgroups lack a controller a limit needs."""
        parsed = parse_rlimits(rlimits)
        if limits.empty and not accounting:
            return cls(limits, False, False, parsed)
        host = cgroups.host()
        if host.usable:
            host.check(limits, accounting)
            return cls(limits, accounting, True, parsed)
        if limits.empty:  # accounting only: quietly do without
            return cls(limits, False, False, parsed)
        return cls(limits, False, False, parsed + _fallback_rlimits(limits, host.why_not or ""))

    def make_cgroup(self, name: str) -> ContainerCgroup | None:
        """The cgroup of the plan, made and limited (before the init is spawned into it)."""
        if not self.wants_cgroup:
            return None
        return ContainerCgroup.create(cgroups.host(), name, self.limits, self.accounting)

    def resources(self, cgroup: ContainerCgroup | None) -> Resources:
        """The container's `Resources` for this plan, with ``cgroup`` made from it (or None)."""
        return Resources(self.limits, cgroup, self.rlimits)


@attrs.define(eq=False)
class Resources:
    """What a running container holds to enforce its plan: its limits, its cgroup if any, and the
    rlimits its processes get. `destroy` gives the cgroup back."""

    limits: Limits
    cgroup: ContainerCgroup | None
    rlimits: tuple[tuple[int, int, int], ...]

    @classmethod
    def prepare(
        cls,
        name: str,
        limits: Limits,
        *,
        accounting: bool,
        rlimits: Mapping[str, int | tuple[int, int]] | None,
    ) -> Resources:
        """Make the container's cgroup (or decide on the fallback) before its init is spawned."""
        plan = ResourcePlan.decide(limits, accounting=accounting, rlimits=rlimits)
        return plan.resources(plan.make_cgroup(name))

    def exec_cgroup(self, exec_id: int) -> ExecCgroup | None:
        """A child cgroup to account exec ``exec_id`` in, or None when the container has no
        accounting."""
        if self.cgroup is None or not self.cgroup.accounting:
            return None
        return self.cgroup.exec_cgroup(exec_id)

    def destroy(self) -> None:
        """Kill what is left in the container's cgroup and remove it (nothing without a cgroup)."""
        if self.cgroup is not None:
            self.cgroup.destroy()


def spawn_options(cgroup: ContainerCgroup | None) -> dict[str, Any]:
    """How `spawn_init` puts the init into ``cgroup``: at clone time on v2, by pid on v1."""
    if cgroup is None:
        return {}
    if cgroup.host.version == 2:
        return {"cgroup_fd": cgroup.join_fds()[0]}
    return {"before_release": cgroup.add_pid}


def _fallback_rlimits(limits: Limits, why_not: str) -> tuple[tuple[int, int, int], ...]:
    fallback: list[tuple[int, int, int]] = []
    weaker: list[str] = []
    if limits.memory is not None:
        # Per process and counting address space, not resident memory: stricter for programs
        # that map much and touch little, looser for many processes.
        fallback.append((resource.RLIMIT_AS, limits.memory, limits.memory))
        weaker.append("memory (as a per-process address-space rlimit)")
    if limits.pids is not None:
        fallback.append((resource.RLIMIT_NPROC, limits.pids, limits.pids))
        weaker.append("pids (as RLIMIT_NPROC, counted per user)")
    if limits.wants_cpu:
        weaker.append("cpu (not limited at all)")
    warnings.warn(
        f"{why_not}. Weaker or missing here: {'; '.join(weaker)}. For real limits run as root, "
        "or on cgroup v2 with a delegated subtree (systemd-run --user -p Delegate=yes).",
        LimitsNotEnforcedWarning,
        stacklevel=4,
    )
    return tuple(fallback)
