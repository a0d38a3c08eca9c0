"""Containers made ahead of need, so that `start()` does not wait for clone, exec and mounts.

Creating the namespaces, exec'ing the init and building the root filesystem is all of a
container's start-up, and none of it depends on anything but the container's `setup` message.
So when a container has stopped, a background thread makes one more with the same setup, and
the next `start()` with that setup takes it: it then only sets the host name. Asking when a
container stops, not when it starts, keeps that work from competing with the container's own
(on two cores, kernel locks shared by mounts and namespaces make such overlap a loss); a start
that comes while a spare is still being made waits the little that is left rather than making a
second one. A spare is indistinguishable from a fresh container: nothing
has run in it, its writable layer is empty, its namespaces are its own.

A container with limits gets a spare with its cgroup already made and limited (the recipe
holds the limits), named after the spare rather than the container. Not served this way:
containers with a lifetime (its clock starts at set-up). A spare of a store image holds no lease on it; the
container that takes a spare takes the lease and then checks the layers are still there.
Spares are ordinary children of this process: they die with it like any container (their
control socket closes), and a forked child never uses its parent's. ``SANDKIT_PRESPAWN=0``
turns this off; `drain()` stops the spares.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
import time

import attrs

from ..ipc import Setup, encode
from . import startup
from .cgroups import ContainerCgroup
from .cgroups.base import HostDirs
from .channel import ControlChannel
from .resources import ResourcePlan
from .spawn import SpawnedInit


@attrs.frozen
class Recipe:
    """What makes two containers interchangeable before their first exec."""

    user_namespace: bool
    network: bool
    setup: bytes  # the encoded setup message, host name left out
    resources: ResourcePlan | None = None  # when the container has a cgroup


@attrs.define(eq=False)
class ReadyContainer:
    """A spare: an init that has built its container and answered ``ready``, with its control
    channel and, when the recipe has limits, its cgroup. Whoever takes it owns all three."""

    init: SpawnedInit
    channel: ControlChannel  # its setup answered, nothing else sent yet
    cgroup: ContainerCgroup | None = None
    made_at: float = attrs.field(factory=time.monotonic)

    def discard(self) -> None:
        """Close the spare's control channel (its init then kills everything and exits), reap
        its init, and remove its cgroup."""
        self.channel.close()
        self.init.close()
        if self.cgroup is not None:
            self.cgroup.destroy()


def recipe_for(
    setup: Setup, *, user_namespace: bool, network: bool, resources: ResourcePlan
) -> Recipe:
    """The recipe of a container with this ``setup`` (host name left out, as a spare gets its own
    when taken), namespaces and resources: containers of equal recipes may use each other's
    spares."""
    return Recipe(
        user_namespace,
        network,
        encode(attrs.evolve(setup, hostname="")),
        resources if resources.wants_cgroup else None,
    )


def make_container(recipe: Recipe) -> ReadyContainer:
    """Spawn an init and have it build the container (blocking: for the worker thread)."""
    cgroup = (
        recipe.resources.make_cgroup(f"spare-{secrets.token_hex(8)}") if recipe.resources else None
    )
    try:
        init, channel = startup.spawn_with_setup(
            recipe.setup,
            user_namespace=recipe.user_namespace,
            network=recipe.network,
            cgroup=cgroup,
        )
    except BaseException:
        if cgroup is not None:
            cgroup.destroy()
        raise
    ready = ReadyContainer(init, channel, cgroup)
    try:
        startup.wait_ready_blocking(channel, rootless=recipe.user_namespace)
    except BaseException:
        ready.discard()
        raise
    return ready


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready: dict[Recipe, ReadyContainer] = {}
        self._wanted: list[Recipe] = []
        self._failed: set[Recipe] = set()
        self._making: Recipe | None = None
        self._worker: threading.Thread | None = None
        self._closed = False

    def take(self, recipe: Recipe) -> ReadyContainer | None:
        """A spare made from ``recipe`` if one is ready (never blocks)."""
        with self._lock:
            ready = self._ready.pop(recipe, None)
        if ready is not None and ready.init.poll() is not None:
            ready.discard()  # it died while waiting (killed from outside): no use to anyone
            return None
        return ready

    def request(self, recipe: Recipe) -> None:
        """Have a spare made from ``recipe`` (unless one is there, or making one failed)."""
        with self._lock:
            if (
                self._closed
                or recipe in self._ready
                or recipe in self._failed
                or recipe in self._wanted
            ):
                return
            self._wanted.append(recipe)
            self._start_worker()
            self._wake.notify_all()

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._fill, name="sandkit-prespawn", daemon=True)
            self._worker.start()

    def _fill(self) -> None:
        while True:
            with self._lock:
                while not self._wanted:
                    self._wake.wait()
                recipe = self._making = self._wanted.pop(0)
            try:
                ready = make_container(recipe)
            except Exception:  # noqa: BLE001 - the foreground start reports the real error
                ready = None
            with self._lock:
                self._making = None
                self._wake.notify_all()
                if ready is None:
                    self._failed.add(recipe)
                    continue
                old: ReadyContainer | None
                if self._closed:  # made while the process exits: nobody will take it
                    old = ready
                else:
                    old = self._ready.pop(recipe, None)
                    self._ready[recipe] = ready
            if old is not None:
                old.discard()

    def making(self, recipe: Recipe) -> bool:
        with self._lock:
            return self._making == recipe

    def drain(self) -> None:
        """Discard every spare, the one being made included (it is waited for: left to land
        after the drain, it would outlive it)."""
        with self._lock:
            self._wanted.clear()
            self._wake.wait_for(lambda: self._making is None, timeout=startup.SET_UP_TIMEOUT)
            spares = list(self._ready.values())
            self._ready.clear()
        for ready in spares:
            ready.discard()

    def close(self) -> None:
        """At exit: make no more spares and discard them all, so that their cgroups are
        removed rather than left empty on the host."""
        with self._lock:
            self._closed = True
        self.drain()

    def spares(self) -> list[ReadyContainer]:
        with self._lock:
            return list(self._ready.values())

    def forget_after_fork(self) -> None:
        """In a forked child: the spares belong to the parent; drop our copies of their fds."""
        for ready in self._ready.values():
            ready.channel.sock.close()  # not channel.close(): its shutdown would end the parent's
            os.close(ready.init.pidfd)
        self.__init__()  # type: ignore[misc]


def _close_at_exit() -> None:
    _pool.close()
    # The spares' cgroups were under this process's own cgroup directories, which the cgroup
    # module's exit hook may have found busy (whichever hook runs first): try those again.
    HostDirs.remove_own()


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget_after_fork)
atexit.register(_close_at_exit)


def enabled() -> bool:
    """False when ``SANDKIT_PRESPAWN=0`` turns spares off (read at each call)."""
    return os.environ.get("SANDKIT_PRESPAWN", "1") != "0"


def take(recipe: Recipe) -> ReadyContainer | None:
    """A spare made from ``recipe`` if one is ready and spares are enabled, else None; never
    blocks."""
    return _pool.take(recipe) if enabled() else None


def request(recipe: Recipe) -> None:
    """Have a spare made from ``recipe`` in the background (nothing when spares are off, or one
    is already there)."""
    if enabled():
        _pool.request(recipe)


def making(recipe: Recipe) -> bool:
    """Whether the worker is making a spare from ``recipe`` right now."""
    return _pool.making(recipe)


def drain() -> None:
    """Stop the spare containers (each costs a process or so); the next start makes new ones."""
    _pool.drain()


def spares() -> list[ReadyContainer]:
    """The spares ready now (for tests); they stay in the pool."""
    return _pool.spares()
