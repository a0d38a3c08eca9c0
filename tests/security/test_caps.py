"""Capability masks (bit N = capability N) and the Docker default path lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docker_defaults import (
    DOCKER_CAP_MASK,
    DOCKER_CAPS,
    DOCKER_MASKED_PATHS,
    DOCKER_READONLY_PATHS,
    NOT_IN_DOCKER_CAPS,
)

from sandkit.errors import SandkitError, SecurityConfigError
from sandkit.security import MASKED_PATHS, READONLY_PATHS, resolve_caps
from sandkit.security.capabilities import (
    CAP_NAMES,
    DOCKER_DEFAULT_CAPS,
    DOCKER_DEFAULT_MASK,
    all_caps,
    cap_names,
    cap_number,
)

HEADER = Path("/usr/include/linux/capability.h")


@pytest.mark.skipif(not HEADER.exists(), reason="no kernel headers")
def test_numbers_match_the_kernel_header():
    defined = dict(re.findall(r"#define CAP_(\w+)\s+(\d+)\s*$", HEADER.read_text(), re.MULTILINE))
    for name, nr in defined.items():
        if name not in ("LAST_CAP",):
            assert CAP_NAMES[int(nr)] == name


def test_docker_default_set():
    """Docker's set, written out in tests/docker_defaults.py, not taken from sandkit's table."""
    assert sorted(cap_names(resolve_caps())) == sorted(f"CAP_{name}" for name in DOCKER_CAPS)
    assert resolve_caps() == DOCKER_DEFAULT_MASK == DOCKER_CAP_MASK
    assert sorted(DOCKER_DEFAULT_CAPS) == sorted(DOCKER_CAPS)
    for name in NOT_IN_DOCKER_CAPS:
        assert not resolve_caps() & (1 << cap_number(name)), name


@pytest.mark.parametrize("spelling", ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", "cap_Net_Admin "])
def test_names_any_case_with_or_without_prefix(spelling):
    assert resolve_caps(add=[spelling]) == DOCKER_DEFAULT_MASK | 1 << 12


def test_add_and_drop():
    assert resolve_caps(drop=["ALL"]) == 0
    assert resolve_caps(drop=["all"], add=["NET_BIND_SERVICE"]) == 1 << 10
    assert resolve_caps(add=["ALL"]) == all_caps()
    assert resolve_caps(add=["ALL"], drop=["SYS_ADMIN"]) == all_caps() & ~(1 << 21)
    assert resolve_caps(drop=["NET_RAW", "mknod"]) == DOCKER_DEFAULT_MASK & ~(1 << 13 | 1 << 27)
    assert all_caps() == (1 << int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1) - 1


def test_errors_are_clear():
    with pytest.raises(SecurityConfigError, match="unknown capability 'CAP_FLY'"):
        resolve_caps(add=["CAP_FLY"])
    with pytest.raises(SecurityConfigError, match="both added and dropped"):
        resolve_caps(add=["NET_ADMIN"], drop=["cap_net_admin"])
    with pytest.raises(SecurityConfigError, match="list of names"):
        resolve_caps(add="NET_ADMIN")  # type: ignore[arg-type]
    assert issubclass(SecurityConfigError, SandkitError) and issubclass(
        SecurityConfigError, ValueError
    )


def test_path_lists():
    assert set(MASKED_PATHS) >= set(DOCKER_MASKED_PATHS)
    assert set(READONLY_PATHS) >= set(DOCKER_READONLY_PATHS)
    assert isinstance(MASKED_PATHS, tuple) and isinstance(READONLY_PATHS, tuple)
    assert all(p.startswith(("/proc/", "/sys/")) for p in MASKED_PATHS + READONLY_PATHS)


def test_every_container_is_set_up_with_dockers_defaults(busybox):
    """What the init is told, for the paths this host's kernel may lack (the attack tests check
    the ones it has from inside a container)."""
    from sandkit.runtime.container import AsyncContainer

    setup = AsyncContainer(busybox)._setup_message(busybox)
    assert set(setup.masked) >= set(DOCKER_MASKED_PATHS)
    assert set(setup.readonly) >= set(DOCKER_READONLY_PATHS)
    assert setup.caps == DOCKER_CAP_MASK
