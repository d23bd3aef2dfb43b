"""In-process task store, plus the in-process pieces the other stores share (TTL, wake-ups)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from store.base import StoreError, validate_task_id
from store.records import TaskRecord

# Expired records are pruned on save at most this often, so a busy store does not rescan
# every record on every save; load() hides expired records in between anyway.
_MAX_PRUNE_INTERVAL = 60.0


def check_ttl(ttl: float | None) -> float | None:
    """Return the TTL in seconds, or None for 'keep forever' (ttl 0 or None)."""
    if ttl is None or ttl == 0:
        return None
    if ttl < 0:
        raise ValueError(f"ttl must be >= 0 seconds (0 or None keeps records forever), got {ttl}")
    return float(ttl)


def is_expired(record: TaskRecord, ttl: float | None, now: float) -> bool:
    """True when the record is terminal and finished more than ttl seconds before now."""
    if ttl is None or not record.status.is_terminal:
        return False
    # A terminal record without finished_at (e.g. LOST written by a reader) ages from its
    # last update instead, so it still expires.
    finished = record.finished_at if record.finished_at is not None else record.updated_at
    return now - finished > ttl


class Watchers:
    """Wake-up events of the watch() iterators running in this process, per task id."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    def add(self, task_id: str) -> asyncio.Event:
        """Register a new watcher of task_id and return its event."""
        event = asyncio.Event()
        self._events.setdefault(task_id, set()).add(event)
        return event

    def remove(self, task_id: str, event: asyncio.Event) -> None:
        """Unregister a watcher (idempotent)."""
        events = self._events.get(task_id)
        if events is None:
            return
        events.discard(event)
        if not events:
            del self._events[task_id]

    def notify(self, task_id: str) -> None:
        """Wake every watcher of task_id."""
        for event in self._events.get(task_id, ()):
            event.set()

    def notify_all(self) -> None:
        """Wake every watcher (the store is closing)."""
        for events in self._events.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())


class MemoryStore:
    """Task records in a dict of this process: for tests and single-instance deployments."""

    def __init__(self, *, ttl: float | None = None) -> None:
        self._ttl = check_ttl(ttl)
        self._records: dict[str, TaskRecord] = {}
        self._watchers = Watchers()
        self._closed = False
        self._last_prune = time.time()

    async def save(self, task: TaskRecord) -> None:
        """Store a copy of the record, replacing any earlier version, and wake its watchers."""
        task_id = validate_task_id(task.task_id)
        self._check_open()
        # A JSON round trip rather than a deep copy: the record then holds exactly what the
        # file and Redis stores would give back, so tests on memory:// catch the same bugs.
        self._records[task_id] = TaskRecord.from_json(task.to_json())
        self._prune(time.time())
        self._watchers.notify(task_id)

    async def load(self, task_id: str) -> TaskRecord | None:
        """Return a copy of the record, or None when unknown or expired."""
        validate_task_id(task_id)
        self._check_open()
        record = self._current(task_id, time.time())
        return None if record is None else record.model_copy(deep=True)

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and after every save, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        validate_task_id(task_id)
        self._check_open()
        return self._watch(task_id)

    async def close(self) -> None:
        """Drop all records; running watch() iterators raise StoreError (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._records.clear()
        self._watchers.notify_all()

    async def _watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        event = self._watchers.add(task_id)
        try:
            seen: TaskRecord | None = None
            while True:
                # Cleared before reading, so a save made while the consumer holds the
                # previous record still wakes us.
                event.clear()
                self._check_open()
                record = self._current(task_id, time.time())
                # Every save stores a new object: identity tells a new version apart.
                if record is not None and record is not seen:
                    seen = record
                    yield record.model_copy(deep=True)
                    if record.status.is_terminal:
                        return
                await event.wait()
        finally:
            self._watchers.remove(task_id, event)

    def _current(self, task_id: str, now: float) -> TaskRecord | None:
        record = self._records.get(task_id)
        if record is not None and is_expired(record, self._ttl, now):
            del self._records[task_id]
            return None
        return record

    def _prune(self, now: float) -> None:
        if self._ttl is None or now - self._last_prune < min(self._ttl, _MAX_PRUNE_INTERVAL):
            return
        self._last_prune = now
        for task_id in [t for t, r in self._records.items() if is_expired(r, self._ttl, now)]:
            del self._records[task_id]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")
