"""Warm pools: started containers kept ready, each handed out once and destroyed after use.

    with sandkit.Pool("python:3.12-slim", size=8, python=True) as pool:
        with pool.container() as c:
            c.exec(["python3", "-c", "print(1)"])

A container's start-up (clone, init, mounts: a few ms; a Python interpreter in it: ~20 ms more)
then happens before a request comes, not during it. The pool is the explicit, user-visible form
of the spares `runtime.prespawn` makes on its own: a fixed number of *started* containers (with
their interpreter, ``python=True``), never reused: leaving ``pool.container()`` destroys the
container off the caller's path, and a new one is started in the background. Starts are bounded
(a few at a time, and at most ``max_containers`` containers alive, whatever the callers do), and a
pool whose starts keep failing retries less and less often and tells its waiting callers why.

`AsyncPool` does the work, in a task group of its own; the sync `Pool` runs an `AsyncPool` on
sandkit's event-loop thread (`_portal`), so that one implementation serves both, and a
`pool.container()` costs one hop to that thread and back.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import resource
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Self, TypeVar, Unpack

import anyio
import anyio.abc
import attrs

from . import _portal, errors
from .api import Container, container_of
from .images.image import Image
from .runtime.container import (
    AsyncContainer,
    ImageSource,
    built_image,
    init_alive,
    resolve_image,
    stopped_because,
    without_spares,
)
from .runtime.options import ContainerOptions
from .runtime.ports import parse_ports

__all__ = ["AsyncPool", "Pool", "PoolStats"]

T = TypeVar("T")

# Starts at a time: each is mostly the kernel's work (namespaces, mounts) and the interpreter's
# start-up, so more starts than cores only make each slower. Four at most: past that the kernel
# locks that mounts and namespaces share make them wait for each other anyway.
START_CONCURRENCY = max(1, min(4, os.cpu_count() or 1))

# Without max_containers=: twice the pool's size, so that as many containers as the pool holds
# can be in use while their replacements start.
DEFAULT_CAP_FACTOR = 2

# What one container costs this process in file descriptors (control socket, pidfd, /dev/null;
# one more on a network, one per published port): with RLIMIT_NOFILE, the most a pool may hold.
FDS_PER_CONTAINER = 4
FDS_KEPT_FREE = 64  # for everything else the program opens

# After failed starts: wait FIRST_RETRY s, doubling with each failure in a row, to LAST_RETRY s.
FIRST_RETRY = 0.1
LAST_RETRY = 5.0


def retry_delay(failures_in_a_row: int) -> float:
    """How long the pool waits before the next start after that many failed starts in a row."""
    if failures_in_a_row <= 0:
        return 0.0
    return min(LAST_RETRY, FIRST_RETRY * 2 ** (failures_in_a_row - 1))


@attrs.frozen
class PoolStats:
    """What a pool has done, and holds now.

    ``hits``: containers handed out at once (one was ready); ``misses``: times `container()`
    found none ready and waited for one to start; ``waits``: of those misses, the ones that found
    the pool at ``max_containers`` with no start under way for them (they wait for a used
    container to be destroyed before one can start). ``created`` / ``destroyed`` /
    ``failed``: containers started / torn down / starts that failed (and ready ones found
    dead). ``ready`` / ``in_use``: containers ready now / handed out now."""

    hits: int
    misses: int
    waits: int
    created: int
    destroyed: int
    ready: int
    in_use: int
    failed: int


def cap_of(size: int, max_containers: int | None) -> int:
    """The pool's checked limit on containers alive at once (ready, starting, in use, being
    destroyed): ``max_containers``, or twice ``size``."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.PoolSpecError(f"size= must be a whole number of containers >= 1, not {size!r}")
    cap = DEFAULT_CAP_FACTOR * size if max_containers is None else max_containers
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < size:
        raise errors.PoolSpecError(
            f"max_containers= must be a whole number >= size ({size}), not {max_containers!r}: "
            "it bounds the ready containers and those in use together"
        )
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = (soft_limit - FDS_KEPT_FREE) // FDS_PER_CONTAINER
    if soft_limit != resource.RLIM_INFINITY and cap > most:
        what = "max_containers" if max_containers is not None else f"size={size} (x2)"
        raise errors.PoolSpecError(
            f"a pool of {cap} containers ({what}) needs about {cap * FDS_PER_CONTAINER} file "
            f"descriptors, more than this process may open (RLIMIT_NOFILE {soft_limit}): "
            f"ask for at most {most}, or raise the limit (`ulimit -n`)"
        )
    return cap


def _check_shareable(options: ContainerOptions, cap: int) -> None:
    """Refuse options that several containers alive at once cannot all have: a fixed host port
    (the second start would find it taken, and the pool would keep failing)."""
    fixed = [spec for spec in parse_ports(options.get("ports")) if spec.host_port]
    if fixed and cap > 1:
        raise errors.PoolSpecError(
            f"up to {cap} containers of the pool are alive at once, and only one can publish on "
            f'host port {fixed[0].host_port}: leave the host port out (ports=["{fixed[0].key}"]) '
            "and ask each container its own with c.port()"
        )


@attrs.define(eq=False)
class _Waiter:
    """A `container()` call that found nothing ready: given a container, or an error."""

    arrived: anyio.Event = attrs.field(factory=anyio.Event)
    container: AsyncContainer | None = None
    error: BaseException | None = None

    def give(self, container: AsyncContainer | None, error: BaseException | None = None) -> None:
        self.container, self.error = container, error
        self.arrived.set()


class AsyncPool:
    """Started containers kept ready, for trio and asyncio alike (anyio):

        async with sandkit.AsyncPool(image, size=8) as pool:
            async with pool.container() as c:
                await c.exec(["true"])

    ``size``: containers kept ready. ``python``: each ready container has its Python interpreter
    started (`AsyncContainer.start_python`). ``max_containers``: the most containers alive at
    once, ready, starting, in use or being destroyed (default ``2 * size``). The other keywords
    are `ContainerOptions`, the same for every container. Entering the pool starts its first
    container in the caller's task (a bad image or option raises here, leaving nothing) and
    the others in the background.
    """

    def __init__(
        self,
        image: ImageSource = "host",
        size: int = 8,
        *,
        python: bool = False,
        max_containers: int | None = None,
        **container_options: Unpack[ContainerOptions],
    ) -> None:
        if container_options.get("detach"):
            raise errors.PoolSpecError(
                "a pool's containers live with this process: leave out detach=True"
            )
        self._cap = cap_of(size, max_containers)
        AsyncContainer(image, **container_options)  # bad options fail here, making nothing
        _check_shareable(container_options, self._cap)
        # Looked up once, here, not by every start; a recipe (the build DSL) is built at start.
        self._source = image
        self._image: Image | str = (
            resolve_image(image) if isinstance(image, Image | str | os.PathLike) else ""
        )
        self._size = size
        self._python = python
        self._options = container_options
        self._ready: collections.deque[AsyncContainer] = collections.deque()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._in_use: set[AsyncContainer] = set()
        self._starting = 0
        self._destroying = 0
        self._counts = collections.Counter[str]()
        self._failures_in_a_row = 0
        self._retry_at = 0.0  # after a failed start: no start before this (anyio's clock)
        self._state = "new"  # -> "open" -> "closing" -> "closed"
        self._tasks: anyio.abc.TaskGroup | None = None
        self._outer: anyio.abc.TaskGroup | None = None
        self._events: _Events | None = None  # made by start(): events need the running loop

    @property
    def _changed(self) -> anyio.Event:
        """Set (and replaced) whenever a start may have become due."""
        assert self._events is not None
        return self._events.changed

    # -- the caller's side --------------------------------------------------------------------

    @property
    def stats(self) -> PoolStats:
        """What the pool has done so far and holds now (see `PoolStats`)."""
        counts = self._counts
        return PoolStats(
            hits=counts["hits"],
            misses=counts["misses"],
            waits=counts["waits"],
            created=counts["created"],
            destroyed=counts["destroyed"],
            ready=len(self._ready),
            in_use=len(self._in_use),
            failed=counts["failed"],
        )

    @contextlib.asynccontextmanager
    async def container(self, timeout: float | None = 30.0) -> AsyncIterator[AsyncContainer]:
        """A started container nobody has used, for the ``async with`` block; leaving the block
        destroys it in the background. Waits up to ``timeout`` s when none is ready
        (`PoolExhaustedError` then); `PoolStartError` when the pool's starts fail."""
        container = await self._acquire(timeout)
        try:
            yield container
        finally:
            self._release(container)

    async def _acquire(self, timeout: float | None = 30.0) -> AsyncContainer:
        """`container()`'s hand-out: the caller gives the container back with `_release`."""
        self._check_open()
        container = self._take_ready()
        if container is not None:
            self._counts["hits"] += 1
            return self._hand_out(container)
        self._counts["misses"] += 1
        if len(self._waiters) >= self._starting and self._alive() >= self._cap:
            self._counts["waits"] += 1  # no start under way is for it, and none may begin
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._notify()
        try:
            with anyio.move_on_after(timeout):
                await waiter.arrived.wait()
        except BaseException:  # cancelled: what was given to it goes to the next caller
            self._abandon(waiter)
            raise
        if not waiter.arrived.is_set():
            self._waiters.remove(waiter)
            raise self._timed_out(timeout)
        if waiter.error is not None:
            raise waiter.error
        if self._state != "open":  # close() came between: it ended the container given
            raise errors.PoolClosedError("the pool was closed")
        assert waiter.container is not None
        return waiter.container  # in use since it was given (see _deliver)

    def _release(self, container: AsyncContainer) -> None:
        """Give back a container `_acquire` handed out: it is destroyed in the background (never
        handed out again). Returns at once, never raises (the sync `Pool` calls it on the loop
        thread, where an error would end the loop); safe to call again, and after `close`."""
        if container not in self._in_use:
            return  # given back before, or already ended by close()
        self._in_use.discard(container)
        self._destroy_soon(container)

    async def wait_ready(self, timeout: float | None = 60.0) -> None:
        """Wait until the pool holds ``size`` ready containers (say, before taking requests);
        `PoolExhaustedError` after ``timeout`` s."""
        with anyio.move_on_after(timeout):
            while len(self._ready) < self._size:
                self._check_open()
                await self._changed.wait()
            return
        raise errors.PoolExhaustedError(
            f"the pool has {len(self._ready)} of its {self._size} containers ready after "
            f"{timeout} s ({self._counts['failed']} starts failed)"
        )

    # -- life ---------------------------------------------------------------------------------

    async def start(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The pool's life, for a task group: ``await tg.start(pool.start)``; `__aenter__` does it.
        Starts the first container here (its error is raised, nothing is left), then keeps the
        pool filled until `close`."""
        if self._state != "new":
            raise errors.PoolClosedError("a pool starts once; make a new one")
        self._state = "open"
        self._events = _Events()
        try:
            if not self._image:
                self._image = resolve_image(await built_image(self._source))
            # Outside the task group, whose error would come wrapped in an ExceptionGroup.
            self._ready.append(await self._make())
            self._counts["created"] += 1
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                async with anyio.create_task_group() as fillers:
                    for _ in range(START_CONCURRENCY):
                        fillers.start_soon(self._fill)
                    task_status.started()
                    await self._events.close_requested.wait()
                    fillers.cancel_scope.cancel()
                self._end_all()
        finally:
            self._state = "closed"
            self._fail_waiters(errors.PoolClosedError("the pool was closed"))
            self._events.finished.set()
            self._notify()

    async def close(self) -> None:
        """End every container, ready and in use (whoever holds one then gets
        `ContainerNotRunningError` on its next call), and wait until all are gone. Safe to call
        again."""
        if self._events is None:  # never started: nothing to end
            self._state = "closed"
            return
        if self._state == "open":
            self._state = "closing"
            self._fail_waiters(errors.PoolClosedError("the pool was closed"))
        self._events.close_requested.set()
        with anyio.CancelScope(shield=True):
            await self._events.finished.wait()

    async def __aenter__(self) -> Self:
        self._outer = anyio.create_task_group()
        await self._outer.__aenter__()
        try:
            await self._outer.start(self.start)
        except BaseException:
            # Nothing runs in it (the pool's life failed before it began): closed empty, so that
            # the error comes out as it is, not wrapped in an ExceptionGroup.
            await self._outer.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        await self.close()
        assert self._outer is not None
        return await self._outer.__aexit__(exc_type, exc, traceback)

    # -- the background work ------------------------------------------------------------------

    async def _fill(self) -> None:
        """One of the starters: start a container whenever one is due, until the pool closes."""
        while True:
            await self._until_a_start_is_due()
            self._starting += 1
            try:
                container = await self._make()
            except Exception as exc:  # noqa: BLE001 - given to the waiting callers
                self._start_failed(exc)
                continue
            finally:
                self._starting -= 1
            self._failures_in_a_row = 0
            self._counts["created"] += 1
            self._deliver(container)

    async def _until_a_start_is_due(self) -> None:
        while True:
            if anyio.current_time() < self._retry_at:  # no spinning on a broken image
                await anyio.sleep_until(self._retry_at)
                continue
            wanted = self._size + len(self._waiters)
            if self._starting + len(self._ready) < wanted and self._alive() < self._cap:
                return
            await self._changed.wait()

    async def _make(self) -> AsyncContainer:
        container = without_spares(AsyncContainer(self._image, **self._options))
        await container.start()
        try:
            if self._python:
                await container.start_python()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await container.kill()
            raise
        return container

    def _start_failed(self, exc: Exception) -> None:
        self._counts["failed"] += 1
        self._failures_in_a_row += 1
        self._retry_at = anyio.current_time() + retry_delay(self._failures_in_a_row)
        error = errors.PoolStartError(
            f"the pool could not start a container ({self._failures_in_a_row} failures in a "
            f"row; it retries in {retry_delay(self._failures_in_a_row):g} s): {exc}"
        )
        error.__cause__ = exc
        self._fail_waiters(error)

    def _deliver(self, container: AsyncContainer) -> None:
        """A new container: to the longest waiting caller, else to the ready ones."""
        if self._state != "open":
            self._destroy_soon(container)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.arrived.is_set():
                self._in_use.add(container)  # counted from now: the waiter runs later
                waiter.give(container)
                self._notify()
                return
        self._ready.append(container)
        self._notify()

    def _destroy_soon(self, container: AsyncContainer) -> None:
        assert self._tasks is not None
        self._destroying += 1
        self._tasks.start_soon(self._destroy, container)

    async def _destroy(self, container: AsyncContainer) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await container.stop()
        except Exception:  # noqa: BLE001 - stop() removes what it can; nobody to tell
            pass
        finally:
            self._destroying -= 1
            self._counts["destroyed"] += 1
            self._notify()

    def _end_all(self) -> None:
        """At close: destroy the ready containers and those in use (their holders' next call
        fails: the container has stopped)."""
        ending = [*self._ready, *self._in_use]
        self._ready.clear()
        self._in_use.clear()
        for container in ending:
            stopped_because(container, "its pool was closed")
            self._destroy_soon(container)

    # -- bookkeeping --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state == "new":
            raise errors.PoolClosedError(
                "the pool is not started: use `async with sandkit.AsyncPool(...) as pool:`"
            )
        if self._state != "open":
            raise errors.PoolClosedError("the pool is closed: it hands out no more containers")

    def _alive(self) -> int:
        return len(self._ready) + self._starting + len(self._in_use) + self._destroying

    def _take_ready(self) -> AsyncContainer | None:
        while self._ready:
            container = self._ready.popleft()
            if init_alive(container):
                return container
            self._counts["failed"] += 1  # it died while ready (killed from outside)
            self._destroy_soon(container)
        return None

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiting caller gave up (cancelled): it waits no more, and a container given to it,
        never seen by anyone, is as good as new."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.container is not None and waiter.container in self._in_use:
            self._in_use.discard(waiter.container)
            self._deliver(waiter.container)

    def _hand_out(self, container: AsyncContainer) -> AsyncContainer:
        self._in_use.add(container)
        self._notify()  # one fewer ready: a start is due
        return container

    def _timed_out(self, timeout: float | None) -> errors.PoolExhaustedError:
        if self._alive() >= self._cap:
            return errors.PoolExhaustedError(
                f"no container within {timeout} s: all max_containers={self._cap} of the pool's "
                f"containers are in use ({len(self._in_use)}), starting or being destroyed; "
                "leave pool.container() blocks sooner, or raise max_containers= (or size=)"
            )
        return errors.PoolExhaustedError(
            f"no container within {timeout} s: {self._starting} are starting, slower than "
            "that (a loaded host?); give container() a longer timeout=, or a larger size="
        )

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.arrived.is_set():
                waiter.give(None, error)

    def _notify(self) -> None:
        if self._events is not None:
            self._events.changed.set()
            self._events.changed = anyio.Event()


@attrs.define
class _Events:
    """A started pool's events (made on its event loop)."""

    changed: anyio.Event = attrs.field(factory=anyio.Event)
    close_requested: anyio.Event = attrs.field(factory=anyio.Event)
    finished: anyio.Event = attrs.field(factory=anyio.Event)


class Pool:
    """Started containers kept ready, each handed out once:

        with sandkit.Pool(image, size=8) as pool:
            with pool.container() as c:
                c.exec(["true"])

    The arguments are `AsyncPool`'s. The pool starts its first container here, in the caller's
    thread (a bad image or option raises here, leaving nothing), and the others in the
    background. Safe to use from many threads at once.
    """

    def __init__(
        self,
        image: ImageSource = "host",
        size: int = 8,
        *,
        python: bool = False,
        max_containers: int | None = None,
        **container_options: Unpack[ContainerOptions],
    ) -> None:
        self._core = AsyncPool(
            image, size, python=python, max_containers=max_containers, **container_options
        )
        self._pid = os.getpid()
        _portal.start(self._core.start)

    def _run(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """`_portal.run`, in the process that made the pool: a forked child has a loop of its
        own, and the pool's containers are not its to use."""
        if os.getpid() != self._pid:
            raise errors.PoolClosedError(
                f"this pool belongs to process {self._pid}, which made it; a forked child "
                "makes a pool of its own"
            )
        return _portal.run(fn, *args)

    @property
    def stats(self) -> PoolStats:
        """What the pool has done so far and holds now (see `PoolStats`)."""
        return self._run(_stats_of, self._core)

    @contextlib.contextmanager
    def container(self, timeout: float | None = 30.0) -> Iterator[Container]:
        """A started container nobody has used, for the ``with`` block; leaving the block
        destroys it in the background. Waits up to ``timeout`` s when none is ready
        (`PoolExhaustedError` then); `PoolStartError` when the pool's starts fail."""
        claim = _Claim()
        try:
            core = self._run(claim.acquire, self._core, timeout)
        except BaseException:  # Ctrl-C in the wait: the loop thread still waits for this caller
            _portal.run_soon(claim.abandon, self._core)
            raise
        try:
            yield container_of(core)
        finally:
            _portal.run_soon(self._core._release, core)

    def wait_ready(self, timeout: float | None = 60.0) -> None:
        """Wait until the pool holds ``size`` ready containers; see `AsyncPool.wait_ready`."""
        self._run(functools.partial(self._core.wait_ready, timeout))

    def close(self) -> None:
        """End every container, ready and in use, and wait until all are gone; see
        `AsyncPool.close`. In a forked child, nothing: the pool is its parent's."""
        if os.getpid() == self._pid:
            _portal.run(self._core.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.define(eq=False)
class _Claim:
    """A sync caller's `_acquire`, which runs on the loop thread and so goes on when the caller
    stops waiting for it (KeyboardInterrupt): `abandon` then ends it, and gives back what it
    took, whichever of the two the loop thread runs first."""

    abandoned: bool = False
    scope: anyio.CancelScope | None = None
    container: AsyncContainer | None = None

    async def acquire(self, pool: AsyncPool, timeout: float | None) -> AsyncContainer:
        with anyio.CancelScope() as self.scope:
            if not self.abandoned:
                self.container = await pool._acquire(timeout)
        if self.abandoned or self.container is None:
            self.abandon(pool)
            raise errors.PoolClosedError("the caller stopped waiting for a container")
        return self.container

    def abandon(self, pool: AsyncPool) -> None:
        """(On the loop thread.) The caller has gone: stop waiting; give back what was taken."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()
        if self.container is not None:
            pool._release(self.container)


async def _stats_of(pool: AsyncPool) -> PoolStats:
    return pool.stats  # read on the loop thread, where the pool's counts change
