"""Writes one run's task record to the store: coalesced, in the background, lease renewed.

Every write carries the run's claim token (agent.run_claim): once another run took the task
over, the store refuses it and the writer stops writing for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agent.run_claim import RunClaim
from store.base import ClaimSuperseded
from store.records import TaskRecord

log = logging.getLogger("agent.writer")

# How long a state change waits for the next one before it is written. A short run goes
# queued -> submitted -> running -> done within milliseconds; each of those written on its
# own costs a store round trip (a thread hop and a rename on the file store) that the
# final write then waits behind. Well under the cross-instance watch lag (the file store
# polls every 100 ms), so no reader elsewhere sees the difference.
DEFAULT_SETTLE = 0.02


class RecordWriter:
    """Soon after state changes, at most every `interval` for progress, every lease/3 anyway.

    Writes happen in a background task, so a slow store (fsync on a NAS, a Redis round
    trip) never delays event handling; only the first and the final write are awaited by
    the run. Each write stamps `lease_expires_at` and is preceded by a claim renewal when
    one is due (also the first write after a freeze), so other instances can tell a live
    owner from a dead one, and a superseded owner learns it before it writes.
    """

    def __init__(
        self,
        claim: RunClaim,
        snapshot: Callable[[], TaskRecord],
        *,
        interval: float,
        clock: Callable[[], float],
        on_failure: Callable[[Exception], None],
        on_write: Callable[[float], None] | None = None,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self._claim = claim
        self._store = claim.store
        self._snapshot = snapshot
        self._interval = interval
        self._lease = claim.lease
        self._clock = clock
        self._on_failure = on_failure
        self._on_write = on_write
        self._settle = settle
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.writes = 0

    async def start(self) -> bool:
        """Write the first record (awaited: it must exist before the caller is answered)."""
        ok = await self._write()
        self._flusher = asyncio.create_task(self._flush_loop())
        return ok

    def start_soon(self) -> None:
        """Write the first record in the background; close() waits for it.

        For runs whose caller is answered only at the end: the claim already holds the
        task in the store, so the run need not wait for this write to begin. Like any state
        change it settles first: a run that ends meanwhile writes its final record only.
        """
        self.mark_dirty(urgent=True)
        self._flusher = asyncio.create_task(self._flush_loop())

    @property
    def claim(self) -> RunClaim:
        """The claim every write carries."""
        return self._claim

    def mark_dirty(self, *, urgent: bool = False) -> None:
        """The record changed; write it within `interval` (urgent: as soon as possible)."""
        self._dirty.set()
        if urgent:
            self._urgent.set()

    async def close(self, attempts: int = 4) -> bool:
        """Stop the background writes, then write the final record; False if the store failed.

        A superseded run writes nothing and answers True: there is nothing left to store.
        """
        # Never cancelled mid-write: a file write finishing in its thread after the final
        # one would put an older state back.
        self._closing.set()
        self._dirty.set()
        self._urgent.set()
        if self._flusher is not None:
            if self._lock.locked():
                await self._flusher  # a write in progress: the final one goes after it
            else:
                # Idle between writes: once cancelled it cannot start another one, so the
                # final write need not wait for it to wake up first.
                self._flusher.cancel()
        if not await self._claim.held():
            return False  # never claimed: there is no token to store it with
        delay = 0.1
        for attempt in range(attempts):
            if await self._write() or self._claim.superseded:
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
                delay *= 2
        return False

    async def _flush_loop(self) -> None:
        renew_every = self._claim.renew_every
        while not self._closing.is_set() and not self._claim.superseded:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(renew_every):
                    await self._dirty.wait()
            if self._closing.is_set():
                return
            # Let the change settle: the ones right behind it go in the same write, and a
            # run that ends meanwhile skips straight to its final write.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settle):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            self._dirty.clear()
            self._urgent.clear()
            if not await self._write():
                self._dirty.set()
            # Coalesce progress for `interval`, unless a state change wants out sooner.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._urgent.wait()

    async def _write(self) -> bool:
        async with self._lock:
            if not await self._claim.held():
                return False  # never claimed: nothing may be written (the run stops)
            # Renewed on a clock, not when idle: a sampler sending progress all the time
            # must not let its claim lapse (another delivery could then run the task too).
            if self._claim.superseded or (self._claim.due() and not await self._claim.renew()):
                return False
            record = self._snapshot()
            if not record.status.is_terminal:
                record.lease_expires_at = self._clock() + self._lease
            else:
                record.lease_expires_at = None
            started = self._clock()
            try:
                await self._store.save(record, token=self._claim.token)
            except ClaimSuperseded as exc:
                await self._claim.supersede(exc)
                return False
            except Exception as exc:  # a store outage must not kill the run
                self._on_failure(exc)
                log.warning(
                    "task %s: store write failed: %r",
                    record.task_id,
                    exc,
                    extra={"task_id": record.task_id, "prompt_id": record.prompt_id},
                )
                return False
            self.writes += 1
            if self._on_write is not None:
                self._on_write(self._clock() - started)
            return True
