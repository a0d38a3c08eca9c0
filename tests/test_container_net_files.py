"""setup.net, setup.files and the netif request through the real host side (the clone helper,
the ipc codec, the control channel), as root and rootless. The test stands in for the network
keeper: between spawn and setup it puts a veth end named eth0 into the container's network
namespace (with its peer: made as the namespace's owner, nothing touches the host's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import sandkit
from sandkit.ipc import File, Interface, Netif, Ok
from sandkit.runtime import etcfiles, plan, startup

NET = Interface(iface="eth0", address="10.99.0.2", prefix=24, gateway="10.99.0.1", mtu=1400)
HOSTS = etcfiles.hosts("web", "10.99.0.2", ["db"])
RESOLV = etcfiles.resolv_conf("10.99.0.1")


def add_veth(pid: int, name: str) -> None:
    """A veth pair ``name``/``name``-peer inside the network namespace of process ``pid``."""
    userns = ["--user", "--preserve-credentials"] if os.geteuid() else []
    subprocess.run(
        [
            *("nsenter", f"--target={pid}", "--net", *userns),
            *("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}-peer"),
        ],
        check=True,
    )


@pytest.fixture
def wired(monkeypatch):
    """Every container started gets eth0 before its setup, which carries NET and the files."""
    real_spawn, real_message = startup.spawn_init, plan.setup_message

    def spawn(*args, **kwargs):
        init = real_spawn(*args, **kwargs)
        try:
            add_veth(init.pid, "eth0")
        except BaseException:
            init.close()
            raise
        return init

    def message(image, **kwargs):
        files = [File("/etc/hosts", HOSTS), File("/etc/resolv.conf", RESOLV, mode=0o600)]
        return real_message(image, **kwargs, net=NET, files=files)

    monkeypatch.setattr(startup, "spawn_init", spawn)
    monkeypatch.setattr(plan, "setup_message", message)


def _inside(image) -> tuple[str, object, str]:
    """What the container sees of its network and files, and of an interface connected later."""
    with sandkit.Container(image) as c:
        first = c.exec(
            [
                "sh",
                "-c",
                "ip addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf; "
                "stat -c '%a %u' /etc/hosts /etc/resolv.conf",
            ]
        ).stdout.decode()
        core = c._core
        add_veth(core._init.pid, "eth1")
        request = Netif(
            id=core._channel.protocol.next_id(),
            net=Interface(iface="eth1", address="10.98.0.2", prefix=16),
        )
        reply = core._channel.request_from_thread(request, timeout=10)
        later = c.exec(["ip", "addr", "show", "eth1"]).stdout.decode()
    return first, reply and reply[0], later


def _check(seen: tuple[str, object, str]) -> None:
    first, reply, later = seen
    assert "inet 10.99.0.2/24 " in first and "mtu 1400 " in first
    assert "default via 10.99.0.1 dev eth0" in first
    assert (HOSTS + RESOLV).decode() in first
    assert first.endswith("644 0\n600 0\n")
    assert isinstance(reply, Ok)
    assert "inet 10.98.0.2/16 " in later


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("image", ["busybox", "host"])
def test_a_container_gets_its_interface_and_files(wired, busybox, image, no_leaks):
    _check(_inside(busybox if image == "busybox" else "host"))


def _rootless(image: str) -> tuple[str, object, str]:
    from conftest import make_busybox_rootfs

    if image == "busybox":  # built by the user, as a rootless user's images are
        root = make_busybox_rootfs(Path(os.environ["SANDKIT_HOME"]) / "rootfs")
        return _inside(sandkit.Image.from_directory(root))
    return _inside("host")


@pytest.mark.parametrize("image", ["busybox", "host"])
def test_a_rootless_container_gets_its_interface_and_files(wired, as_unprivileged, image):
    _check(as_unprivileged(_rootless, image))
