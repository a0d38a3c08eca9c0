"""Container lifecycle: spawning the init, rootfs, mounts, limits, teardown."""
