"""The /etc files a container on a network gets, and how the setup message carries them."""

from __future__ import annotations

import os

import pytest

from sandkit.errors import ContainerStartError
from sandkit.ipc import File, Interface, encode
from sandkit.runtime import etcfiles, plan

# Docker's layout for a container on a user network (`--hostname web --network-alias db`): the
# loopback and IPv6 names, then the container's address with its host name and aliases.
DOCKER_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
    "10.89.0.5\tweb db\n"
)


def test_hosts_follows_dockers_layout():
    assert etcfiles.hosts("web", "10.89.0.5", ["db"]).decode() == DOCKER_HOSTS


def test_resolv_conf_names_the_resolver_and_the_search_domains():
    assert etcfiles.resolv_conf("10.89.0.1") == b"nameserver 10.89.0.1\n"
    assert etcfiles.resolv_conf("10.89.0.1", ["a.test", "b"]) == (
        b"search a.test b\nnameserver 10.89.0.1\n"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: etcfiles.hosts("web server", "10.0.0.2"),
        lambda: etcfiles.hosts("web", "10.0.0.2", ["db\n10.0.0.9 pypi.org"]),
        lambda: etcfiles.hosts("web#", "10.0.0.2"),
        lambda: etcfiles.hosts("", "10.0.0.2"),
        lambda: etcfiles.hosts("web", "10.0.0.256"),
        lambda: etcfiles.resolv_conf("resolver"),
        lambda: etcfiles.resolv_conf("10.0.0.1", ["a b"]),
    ],
)
def test_a_name_or_address_that_would_break_a_line_is_refused(call):
    with pytest.raises(ContainerStartError, match=r"cannot be a host name|is not an IP address"):
        call()


def _host_setup(files=()):
    return plan.setup_message(
        "host", scratch="/s", hostname="h", mounts=(), read_only=False, rootless=False, files=files
    )


@pytest.mark.skipif(not os.path.exists("/etc/hosts"), reason="the host has no /etc/hosts")
def test_a_file_replaces_the_host_images_bind_of_that_etc_entry():
    def etc_binds(setup):
        return {
            m["dst"] for m in setup.mounts if m["type"] == "bind" and m["dst"].startswith("/etc/")
        }

    plain = etc_binds(_host_setup())
    assert "/etc/hosts" in plain
    with_file = _host_setup([File("/etc/hosts", b"127.0.0.1\tlocalhost\n")])
    assert etc_binds(with_file) == plain - {"/etc/hosts"}
    assert with_file.files == (File("/etc/hosts", b"127.0.0.1\tlocalhost\n"),)


def test_files_over_the_limit_are_refused_with_the_limit_named():
    big = File("/etc/hosts", b"x" * (plan.MAX_SETUP_FILES_BYTES + 1))
    with pytest.raises(ContainerStartError, match="MAX_SETUP_FILES_BYTES"):
        _host_setup([big])
    # and files at the limit still fit in the one set-up packet
    encode(_host_setup([File("/etc/hosts", b"x" * plan.MAX_SETUP_FILES_BYTES)]))


@pytest.mark.parametrize("path", ["etc/hosts", "/etc/../hosts", "/etc//hosts", "/etc/hosts/"])
def test_a_file_path_must_be_absolute_and_normalised(path):
    with pytest.raises(ContainerStartError, match="absolute, normalised path"):
        _host_setup([File(path, b"")])


def test_an_interface_needs_a_network_namespace_of_the_containers_own():
    interface = Interface(iface="eth0", address="10.99.0.2", prefix=24)
    with pytest.raises(ContainerStartError, match="interface eth0 needs a network namespace"):
        plan.setup_message(
            "host",
            scratch="/s",
            hostname="h",
            mounts=(),
            read_only=False,
            rootless=False,
            loopback=False,
            net=interface,
        )
