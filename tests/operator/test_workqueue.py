"""The per-run work queue: coalescing, one pass per key at a time, timed and error requeues."""

from __future__ import annotations

import asyncio

import pytest
from rlhf_operator.controller.workqueue import WorkQueue

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(20)]


async def test_events_coalesce_and_keys_never_run_concurrently() -> None:
    running: set[str] = set()
    passes: list[str] = []
    overlap: list[str] = []
    release = asyncio.Event()

    async def process(key: str) -> float | None:
        if key in running:
            overlap.append(key)
        running.add(key)
        passes.append(key)
        if len(passes) == 1:
            await release.wait()  # the first pass is slow; events arrive meanwhile
        running.discard(key)
        return None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=4)
    queue.add("a")
    await asyncio.sleep(0.01)
    for _ in range(5):
        queue.add("a")  # during the pass: coalesced into one more pass
    queue.add("b")
    await asyncio.sleep(0.05)
    release.set()
    for _ in range(100):
        if passes.count("a") == 2 and queue.pending == 0:
            break
        await asyncio.sleep(0.01)
    await queue.close()
    assert passes.count("a") == 2 and passes.count("b") == 1
    assert overlap == []


async def test_requeue_after_and_error_backoff() -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def process(key: str) -> float | None:
        times.append(loop.time())
        if len(times) == 1:
            raise RuntimeError("API down")  # retried after the error backoff
        if len(times) == 2:
            return 0.1  # a timed transition (retry backoff of a stage)
        return None

    queue: WorkQueue[str] = WorkQueue(process, error_backoff=0.05, error_backoff_max=1.0)
    queue.add("run")
    for _ in range(100):
        if len(times) == 3:
            break
        await asyncio.sleep(0.01)
    await queue.close()
    assert len(times) == 3
    assert times[1] - times[0] >= 0.04 and times[2] - times[1] >= 0.09


async def test_urgent_keys_get_free_slots_first() -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def process(key: str) -> float | None:
        if key == "busy":
            await gate.wait()
        order.append(key)
        return None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=1, priority=lambda key: 0 if key.startswith("new") else 1)
    queue.add("busy")
    await asyncio.sleep(0.01)
    for key in ("old-1", "new-1", "old-2", "new-2"):
        queue.add(key)
    await asyncio.sleep(0.01)
    gate.set()
    for _ in range(100):
        if len(order) == 5:
            break
        await asyncio.sleep(0.01)
    await queue.close()
    assert order == ["busy", "new-1", "new-2", "old-1", "old-2"]
