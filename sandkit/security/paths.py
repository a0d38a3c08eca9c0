"""The /proc and /sys paths Docker hides or makes read-only in every container (moby's
oci/defaults), for the ``masked`` and ``readonly`` lists of the ``setup`` message."""

from __future__ import annotations

# Hidden: a file gets /dev/null bound over it, a directory an empty read-only tmpfs. They leak host
# state (kernel memory, keys, timers usable as side channels, power readings: PLATYPUS) or drive
# host hardware.
MASKED_PATHS: tuple[str, ...] = (
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

# Re-bound read-only: readable for tools, but writes would change the host kernel (sysctls, IRQ
# affinity, the sysrq trigger) since these are not namespaced.
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
