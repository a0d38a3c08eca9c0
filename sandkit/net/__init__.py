"""Container networks: definitions (`store`), the per-network keeper process that holds a
network's namespace, bridge, resolver and egress rules while containers are on it, and the host
side that joins containers to it. See docs/architecture.md, "Networks"."""
