"""pasta (Debian package ``passt``): the fallback uplink when slirp4netns is missing (see
`uplink`, which finds and starts either), and the /dev/net/tun check both need.

The keeper forks a launcher before it leaves the host's namespaces; once N is ready the launcher
opens N (and, rootless, its user namespace U_N) through /proc, starts pasta on those fds in the
foreground, and watches both pasta and the keeper: when the keeper ends, however it ends, the
launcher kills pasta (given N as an fd, pasta would not notice N's end by itself).
"""

from __future__ import annotations

import os

from ..errors import NetworkUnavailableError

TUN_DEVICE = "/dev/net/tun"
# N's side of pasta: a link-local address, which egress denies to containers anyway, so that it
# can never shadow a real destination (pasta's default copies the host's address into N).
UPLINK_ADDRESS = "169.254.88.2"
UPLINK_GATEWAY = "169.254.88.1"
UPLINK_PREFIX = 30


def check_tun(rootless: bool) -> None:
    """pasta needs /dev/net/tun; a rootless user needs it readable and writable (mode 0666, as
    most distributions ship it). NetworkUnavailableError naming the fix otherwise."""
    if os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        return
    who = "your user" if rootless else "root"
    raise NetworkUnavailableError(
        f"{TUN_DEVICE} is not accessible to {who}, and the outbound path of sandkit's "
        f"networks (slirp4netns or pasta) needs it: as root, run `chmod 0666 {TUN_DEVICE}` "
        "(most distributions ship it so); `sandkit doctor` checks this host"
    )


def pasta_command(pasta: str, *, rootless: bool, netns_fd: int, userns_fd: int | None) -> list[str]:
    """pasta's command line: outbound only (no port forwarded into N), IPv4, its interface
    ``up0`` with `UPLINK_ADDRESS`, attached to the namespace fds the launcher holds."""
    command = [pasta, "--config-net", "-q", "-4", "--no-dhcp"]
    command += ["-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw"]
    command += ["-I", "up0", "-a", UPLINK_ADDRESS, "-n", str(UPLINK_PREFIX), "-g", UPLINK_GATEWAY]
    command += ["--foreground"]  # the launcher's child: it is killed with the keeper
    if not rootless:
        # As root pasta would switch to nobody, who may not enter root's namespaces.
        command += ["--runas", "0:0"]
    if userns_fd is not None:
        command += ["--userns", f"/proc/self/fd/{userns_fd}"]
    command += ["--netns", f"/proc/self/fd/{netns_fd}"]
    return command
