"""Final records the store refused (an outage): served from here and retried until stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agent.metrics import Metrics
from agent.run_handle import task_log
from store.base import ClaimSuperseded, Store
from store.records import TaskRecord

log = logging.getLogger("agent.runner")


class UnsavedFinals:
    """Final records waiting to be stored, each with the claim token it is written with."""

    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.store = store
        self._metrics = metrics
        self._clock = clock
        self.records: dict[str, TaskRecord] = {}
        # The claim token each of those final records is written with (the fence).
        self.tokens: dict[str, int] = {}
        self._retrier: asyncio.Task[None] | None = None

    def add(self, record: TaskRecord, token: int) -> None:
        """Keep a final record the store refused; retry it in the background until stored."""
        self.records[record.task_id] = record
        self.tokens[record.task_id] = token
        self._ensure_retrier()

    def discard(self, task_id: str) -> None:
        """Forget a task's unsaved final record (a new run of the task starts)."""
        self.records.pop(task_id, None)
        self.tokens.pop(task_id, None)

    async def stop_retrying(self) -> None:
        """Stop the background retrier (store_all still tries once more)."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier

    def _ensure_retrier(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry(), name="store-retrier")

    async def _retry(self) -> None:
        delay = 1.0
        while self.records:
            await asyncio.sleep(delay)
            await self.store_all()
            delay = min(delay * 2, 30.0)

    async def store_all(self) -> None:
        """Try to store every kept final record once; keep those the store still refuses."""
        for task_id, record in list(self.records.items()):
            started = self._clock()
            try:
                await self.store.save(record, token=self.tokens.get(task_id))
            except ClaimSuperseded:
                # Another run took the task over meanwhile: its state is the task's now.
                log.warning(
                    "task %s: final state dropped: the task was taken over meanwhile",
                    task_id,
                    extra=task_log(record),
                )
                self._forget(task_id, record)
                continue
            except Exception as exc:  # still down: keep it for the next round
                self._metrics.store_failure()
                log.warning(
                    "task %s: final state still not stored: %r",
                    task_id,
                    exc,
                    extra=task_log(record),
                )
                continue
            self._metrics.store_write(self._clock() - started)
            log.info(
                "task %s: final state stored after a store outage", task_id, extra=task_log(record)
            )
            self._forget(task_id, record)

    def _forget(self, task_id: str, record: TaskRecord) -> None:
        if self.records.get(task_id) is record:
            del self.records[task_id]
            self.tokens.pop(task_id, None)
