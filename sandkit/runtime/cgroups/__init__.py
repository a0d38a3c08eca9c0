"""Cgroups for containers: limits, per-exec accounting, teardown (v1/hybrid and v2).

Typical use by the runtime (see docs in base.py for the layout)::

    host = cgroups.host()                      # detect once per process
    cg = cgroups.ContainerCgroup.create(host, cid, limits, accounting=True)   # None: no cgroup
    ... clone3(CLONE_INTO_CGROUP, cg.join_fds()[0]) on v2, or cg.add_pid(init_pid) on v1 ...
    ex = cg.exec_cgroup(exec_id); send exec with ex.fds(); on exit: usage = ex.finish()
    cg.destroy()
"""

from __future__ import annotations

from ...sizes import parse_size
from .base import CgroupStats, ContainerCgroup, ExecCgroup, ExecUsage
from .detect import CgroupHost, detect, host
from .limits import Limits


def reap_stale(cgroup_host: CgroupHost | None = None) -> list[str]:
    """Remove sandkit cgroups left by host processes that died without cleaning up (returns the
    directories removed). Cheap: one directory listing per hierarchy."""
    h = cgroup_host or host()
    if not h.usable:
        return []
    if h.version == 1:
        from .v1 import reap_stale as reap
    else:
        from .v2 import reap_stale as reap
    return reap(h)


__all__ = [
    "CgroupHost",
    "CgroupStats",
    "ContainerCgroup",
    "ExecCgroup",
    "ExecUsage",
    "Limits",
    "detect",
    "host",
    "parse_size",
    "reap_stale",
]
