"""Follow a task to its end wherever it runs: live on this instance, or through the store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable

from agent.runner import RunHandle, TaskRunner
from store.base import Store
from store.records import TaskRecord, TaskStatus


async def follow_task(
    runner: TaskRunner,
    store: Store,
    task_id: str,
    *,
    lease_check: float,
    lost_grace: float = 0.0,
    handle: RunHandle | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[TaskRecord, None]:
    """Yield the task's record on every change, ending with a terminal (or `lost`) one.

    A task of this instance is followed live (`handle`: a run just started here), and
    through the store should another run take it over. Otherwise the store is watched;
    since a dead owner sends nothing more, the record's lease is checked every
    `lease_check` seconds. `lost` only means "suspected
    lost": a frozen owner may come back, or another instance may take the task over, so
    the watch goes on for `lost_grace` seconds after the task turned lost (yielding the lost
    record once) and ends with it only if nothing changed by then.
    """
    handle = handle or runner.get(task_id)
    if handle is not None:
        async for record in handle.updates():
            yield record
        if not handle.superseded:
            return
    queue: asyncio.Queue[TaskRecord | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for record in store.watch(task_id):
                queue.put_nowait(record)
        finally:
            queue.put_nowait(None)

    pumping = asyncio.create_task(pump())
    last: TaskRecord | None = None
    lost_since: float | None = None
    try:
        while True:
            try:
                async with asyncio.timeout(lease_check):
                    item = await queue.get()
            except TimeoutError:
                # Nothing new: has the owner's lease run out meanwhile?
                if last is None:
                    continue
                seen = last.as_seen_at(clock())
            else:
                if item is None:
                    pumping.result()  # the watch ended: re-raise its error, if any
                    return
                last = item
                seen = item.as_seen_at(clock())
            if seen.status is not TaskStatus.LOST:
                lost_since = None
                yield seen
                if seen.status.is_terminal:
                    return
                continue
            if lost_since is None:
                lost_since = monotonic()
                if lost_grace <= 0:
                    yield seen
                    return
                yield seen  # once: the task is suspected lost from now on
            elif monotonic() - lost_since >= lost_grace:
                yield seen
                return
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping


async def wait_for_end(
    runner: TaskRunner,
    store: Store,
    task_id: str,
    *,
    lease_check: float,
    lost_grace: float = 0.0,
) -> TaskRecord | None:
    """The task's terminal (or lost) record, waiting as long as it runs; None if unknown."""
    final: TaskRecord | None = None
    updates = follow_task(runner, store, task_id, lease_check=lease_check, lost_grace=lost_grace)
    try:
        async for record in updates:
            final = record
    finally:
        await updates.aclose()
    return final
