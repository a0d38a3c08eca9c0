"""The outbound path of a network: a user-mode network stack that carries traffic from the
network's namespace N to the host's network through a tap in N (``up0``), as root too (so the
host's firewall, sysctls and interfaces are never touched).

slirp4netns (Debian package ``slirp4netns``) is the first choice; pasta (package ``passt``) is
the fallback when slirp4netns is missing. Measured on Debian 12 (passt 0.0~git20230309,
slirp4netns 1.2.0): pasta loses a half-closed connection's answer (a client that shuts down
its sending side never gets the server's data or FIN, even from N itself, with no forwarding
involved), while slirp4netns carried 1 GB each way and 1000 half-closed exchanges intact.

The keeper forks a launcher before it leaves the host's namespaces; once N is ready the launcher
opens N (and, rootless, U_N) through /proc and execs the program on those fds; it stays in the
foreground, the keeper's child, and kills it when the keeper ends; slirp4netns also watches the
keeper's pipe itself (--exit-fd), so that it ends with the keeper even without its launcher.
"""

from __future__ import annotations

import os
import shutil

from ..errors import NetworkUnavailableError
from . import pasta

# The programs tried in turn: (program, Debian package).
PROGRAMS = (("slirp4netns", "slirp4netns"), ("pasta", "passt"))
# Where they are looked for (None: $PATH, then /usr/bin and /usr/sbin). Tests point it at an
# empty directory to see the error a host without either gets.
SEARCH_PATH: str | None = None
TAP_NAME = "up0"
MTU = 65520
# slirp4netns's network: a link-local /24 (egress denies 169.254.0.0/16 to containers anyway),
# so it can never shadow a real destination or a network's subnet. N's tap gets .100, and
# slirp4netns's own "host" (.2, the host's loopback unless disabled) and DNS (.3) addresses are
# both switched off below.
SLIRP_CIDR = "169.254.88.0/24"
SLIRP_TAP_ADDRESS = "169.254.88.100"


def find_uplink() -> str:
    """The path of the first program of `PROGRAMS` installed; NetworkUnavailableError naming
    the package to install when none is."""
    path = SEARCH_PATH
    if path is None:
        path = os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin:/bin"
    for program, _ in PROGRAMS:
        found = shutil.which(program, path=path)
        if found is not None:
            return found
    raise NetworkUnavailableError(
        "network='bridge' and user networks need slirp4netns for their outbound traffic, and "
        "it is not installed: install slirp4netns (apt install slirp4netns), or use "
        "network='none' or 'host'"
    )


def is_slirp4netns(program: str) -> bool:
    """Whether the uplink program ``program`` (a path) is slirp4netns (else pasta)."""
    return os.path.basename(program) == "slirp4netns"


def slirp4netns_command(program: str, *, netns_fd: int, exit_fd: int) -> list[str]:
    """slirp4netns's command line, attached to N (an fd of the launcher): outbound only, no
    way to the host's loopback, no DNS forwarder (the keeper's resolver serves containers),
    sandboxed (its own mount namespace, capabilities dropped) and seccomp-filtered. Run from
    inside U_N when rootless (see keeper), so that its sandbox may make a mount namespace.
    It exits when ``exit_fd`` (the read end of a pipe the keeper holds) hangs up."""
    return [
        program,
        "--configure",
        f"--mtu={MTU}",
        f"--cidr={SLIRP_CIDR}",
        "--disable-host-loopback",
        "--disable-dns",
        "--enable-sandbox",
        "--enable-seccomp",
        f"--exit-fd={exit_fd}",
        "--netns-type=path",
        f"/proc/self/fd/{netns_fd}",
        TAP_NAME,
    ]


def uplink_command(
    program: str, *, rootless: bool, netns_fd: int, userns_fd: int | None, exit_fd: int
) -> list[str]:
    """The command line of ``program`` (slirp4netns or pasta) attached to N; slirp4netns ends
    when ``exit_fd`` hangs up (pasta has no such option: its launcher kills it)."""
    if is_slirp4netns(program):
        return slirp4netns_command(program, netns_fd=netns_fd, exit_fd=exit_fd)
    return pasta.pasta_command(program, rootless=rootless, netns_fd=netns_fd, userns_fd=userns_fd)
