"""What `docker run` gives a container by default, written out here as literals so that tests
compare sandkit against Docker and not against sandkit's own tables (a wrong entry there would
otherwise be copied into the expectation).

Sources: moby's `oci/caps/defaults.go` (DefaultCapabilities) and `oci/defaults.go`
(DefaultLinuxSpec: MaskedPaths, ReadonlyPaths), plus `/sys/devices/virtual/powercap`, masked
since Docker 20.10 (the PLATYPUS power side channel). Capability numbers are those of
<linux/capability.h>. No pytest in here.
"""

from __future__ import annotations

from collections.abc import Iterable

# Docker's default capability set, by name and by number in <linux/capability.h>.
DOCKER_CAPS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
    "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
    "AUDIT_WRITE": 29, "SETFCAP": 31,
}  # fmt: skip

# The CapEff/CapPrm/CapBnd a root process shows in `docker run busybox grep Cap /proc/self/status`:
# the set above as a bitmask, written out as Docker users know it.
DOCKER_CAP_MASK = 0x00000000A80425FB

# A few capabilities Docker leaves out because each one is an escape or a host-wide change.
NOT_IN_DOCKER_CAPS: dict[str, int] = {
    "DAC_READ_SEARCH": 2, "NET_ADMIN": 12, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_PTRACE": 19,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_TIME": 25, "PERFMON": 38, "BPF": 39,
}  # fmt: skip

# Hidden in every container: a file under /dev/null, a directory under an empty read-only tmpfs.
DOCKER_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

# Bound read-only in every container (writes fail with EROFS).
DOCKER_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


# The namespaces every container gets (by their /proc/PID/ns names): mount, pid, network, uts, ipc.
DOCKER_NAMESPACES = ("mnt", "pid", "net", "uts", "ipc")


def cap_mask(names: Iterable[str]) -> int:
    """The bitmask of capabilities named in `DOCKER_CAPS` or `NOT_IN_DOCKER_CAPS`."""
    numbers = DOCKER_CAPS | NOT_IN_DOCKER_CAPS
    return sum(1 << numbers[name] for name in names)
