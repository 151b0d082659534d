"""A per-key work queue: events coalesce, one pass per key at a time, timed and error requeues,
and a priority (new runs first: their first job is the latency users see).

kopf's `@kopf.on.event` handlers are fire-and-forget (no retries, but also no progress
annotations written to the object), so retries after API errors and the retry backoff of failed
stages are scheduled here instead: the same idea as controller-runtime's rate-limited queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class _PrioritySlots:
    """A semaphore whose waiters are served lowest priority value first, then in FIFO order."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._sequence), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        *,
        concurrency: int = 8,
        error_backoff: float = 1.0,
        error_backoff_max: float = 60.0,
        priority: Callable[[K], int] | None = None,
    ) -> None:
        self._process = process
        self._slots = _PrioritySlots(concurrency)
        self._priority = priority or (lambda key: 0)
        self._error_backoff = error_backoff
        self._error_backoff_max = error_backoff_max
        self._due: dict[K, float] = {}  # key -> loop time when it should run next
        self._wake: dict[K, asyncio.Event] = {}
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self._failures: dict[K, int] = {}
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        """Run `key` after `delay` seconds (an earlier pending run wins)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, delay)
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        if key in self._tasks:
            self._wake[key].set()
        else:
            self._wake[key] = asyncio.Event()
            self._tasks[key] = loop.create_task(self._serve(key), name=f"reconcile {key}")

    def forget(self, key: K) -> None:
        self._due.pop(key, None)
        self._failures.pop(key, None)
        if key in self._wake:
            self._wake[key].set()

    @property
    def pending(self) -> int:
        return len(self._due)

    async def _serve(self, key: K) -> None:
        loop = asyncio.get_running_loop()
        try:
            while key in self._due:
                wait = self._due[key] - loop.time()
                if wait > 0:
                    wake = self._wake[key]
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=wait)
                    continue
                del self._due[key]
                await self._slots.acquire(self._priority(key))
                try:
                    requeue = await self._attempt(key)
                finally:
                    self._slots.release()
                if requeue is not None:
                    self.add(key, requeue)
        finally:
            self._tasks.pop(key, None)
            self._wake.pop(key, None)

    async def _attempt(self, key: K) -> float | None:
        try:
            requeue = await self._process(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(self._error_backoff_max, self._error_backoff * 2 ** (failures - 1))
            logger.warning("reconcile of %s failed (%s); retrying in %.1fs", key, error, delay)
            return delay
        self._failures.pop(key, None)
        return requeue

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
