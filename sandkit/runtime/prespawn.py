"""Inits started ahead of need, so that a container's start does not wait for clone and exec.

Creating the namespaces and exec'ing the init is most of a container's start-up (about 1-2 ms
here, the network namespace alone ~0.4 ms), and none of it depends on the container: an init
waits for its `setup` message before doing anything container-specific. So once a kind of
container has been started, a background thread keeps one more init of that kind ready, on
the other core while the caller works, and the next `start()` takes it.

Only containers without a cgroup are served this way (a cgroup must be joined at clone time
on v2). The ready inits are ordinary children of this process: they die with it like any
container (their control socket closes), and a forked child never uses its parent's.
``SANDKIT_PRESPAWN=0`` turns this off.
"""

from __future__ import annotations

import os
import socket
import threading

import attrs

from .spawn import SpawnedInit, spawn_init

_SPARES_PER_KIND = 1


@attrs.frozen
class InitKind:
    user_namespace: bool
    network: bool


@attrs.define(eq=False)
class ReadyInit:
    init: SpawnedInit
    control: socket.socket


def spawn_ready(kind: InitKind) -> ReadyInit:
    host_end, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with init_end:
        try:
            init = spawn_init(init_end, user_namespace=kind.user_namespace, network=kind.network)
        except BaseException:
            host_end.close()
            raise
    return ReadyInit(init, host_end)


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready: dict[InitKind, list[ReadyInit]] = {}
        self._failed: set[InitKind] = set()
        self._spawning: InitKind | None = None
        self._worker: threading.Thread | None = None

    def take(self, kind: InitKind) -> ReadyInit | None:
        """A ready init of this kind if one is waiting or about to be; asks for the next one
        either way. Waiting for one the worker is already making beats making a second one
        while it competes for the same cores."""
        with self._lock:
            spares = self._ready.setdefault(kind, [])
            while not spares and self._spawning == kind:
                self._wake.wait()
            ready = spares.pop() if spares else None
            if kind not in self._failed:
                self._start_worker()
                self._wake.notify_all()
        if ready is not None and ready.init.poll() is not None:
            # It died while waiting (killed from outside): no use to anyone.
            ready.control.close()
            ready.init.close()
            return None
        return ready

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._fill, name="sandkit-prespawn", daemon=True)
            self._worker.start()

    def _wanted(self) -> InitKind | None:
        for kind, spares in self._ready.items():
            if len(spares) < _SPARES_PER_KIND and kind not in self._failed:
                return kind
        return None

    def _fill(self) -> None:
        while True:
            with self._lock:
                while (kind := self._wanted()) is None:
                    self._wake.wait()
                self._spawning = kind
            try:
                ready = spawn_ready(kind)
            except Exception:  # noqa: BLE001 - the foreground start reports the real error
                with self._lock:
                    self._failed.add(kind)
                    self._spawning = None
                    self._wake.notify_all()
                continue
            with self._lock:
                self._spawning = None
                self._wake.notify_all()
                if kind in self._ready:
                    self._ready[kind].append(ready)
                    continue
            ready.control.close()  # drained meanwhile
            ready.init.close()

    def drain(self) -> None:
        """Stop every spare and forget the kinds asked for (until the next `take`)."""
        with self._lock:
            spares = [ready for kind in self._ready.values() for ready in kind]
            self._ready.clear()
        for ready in spares:
            ready.control.close()
            ready.init.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the spares belong to the parent; drop our copies of their sockets."""
        for spares in self._ready.values():
            for ready in spares:
                ready.control.close()
                os.close(ready.init.pidfd)
        self.__init__()  # type: ignore[misc]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget_after_fork)


def enabled() -> bool:
    return os.environ.get("SANDKIT_PRESPAWN", "1") != "0"


def take(kind: InitKind) -> ReadyInit | None:
    return _pool.take(kind) if enabled() else None


def drain() -> None:
    """Stop the inits kept ready (they cost a few processes); the next start makes new ones."""
    _pool.drain()
