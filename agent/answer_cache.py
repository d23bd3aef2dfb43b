"""Finished tasks' read answers kept as bytes, so polling them costs no store read or parse.

A terminal record does not change while it is kept, except when its task id is run again
(a failed task re-run, here or on another instance) or it expires. So the answers of
GET /api/status and GET /api/tasks/{id} for it are rendered once and served from memory:
within `fresh_for` seconds of the last check as they are; after that once the store says
the record's version (a stat of its file, the Redis value) is still the same. A run of the
task id on this instance is seen through `local_runs` (a counter of runs that ended here)
and makes the next read check again. Bounded: least recently used entries go first.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from store.base import Store
from store.common import expires_at
from store.records import TaskRecord, TaskStatus
from store.versions import VersionedReads

# How stale a finished task's answer may be served when it was run again on another
# instance: the file store's own watch poll interval, well under cross-instance watch lag.
DEFAULT_FRESH_FOR = 0.1
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class FinishedAnswer:
    """A terminal record's two read answers, as the routes send them."""

    task_id: str
    status: TaskStatus
    progress_body: bytes
    record_body: bytes
    version: object
    expires_at: float | None
    checked_at: float
    local_runs: int

    @property
    def size(self) -> int:
        """Bytes it keeps in memory (roughly)."""
        return len(self.progress_body) + len(self.record_body) + 200

    @classmethod
    def render(
        cls, record: TaskRecord, version: object, *, ttl: float | None, now: float, runs: int
    ) -> FinishedAnswer:
        """Render both answers of a terminal record (json.dumps, as web.json_response does)."""
        return cls(
            task_id=record.task_id,
            status=record.status,
            progress_body=json.dumps(record.progress_map()).encode(),
            record_body=json.dumps(record.model_dump(mode="json")).encode(),
            version=version,
            expires_at=expires_at(record, ttl),
            checked_at=now,
            local_runs=runs,
        )


class AnswerCache:
    """Answers of finished tasks by task id; reads go to the store only to revalidate."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float | None,
        local_runs: Callable[[], int],
        fresh_for: float = DEFAULT_FRESH_FOR,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._versioned = store if isinstance(store, VersionedReads) else None
        self._ttl = ttl or None
        self._local_runs = local_runs
        self._fresh_for = fresh_for
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[str, FinishedAnswer] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, task_id: str) -> FinishedAnswer | None:
        """The task's answer when it can be served without asking the store (no I/O)."""
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        if self._clock() - entry.checked_at > self._fresh_for:
            return None
        if entry.local_runs != self._local_runs():
            return None
        if entry.expires_at is not None and self._wall_clock() > entry.expires_at:
            return None
        self._entries.move_to_end(task_id)
        return entry

    async def lookup(self, task_id: str) -> FinishedAnswer | TaskRecord | None:
        """The task's finished answer, or its stored record while unfinished, or None.

        Raises StoreError like Store.load when the store cannot be read.
        """
        if self._versioned is None:
            return await self._store.load(task_id)
        answer = self.fresh(task_id)
        if answer is not None:
            return answer
        runs = self._local_runs()
        entry = self._entries.get(task_id)
        if entry is not None:
            if entry.expires_at is not None and self._wall_clock() > entry.expires_at:
                self.forget(task_id)
                return None
            now = self._clock()
            if now - entry.checked_at <= self._fresh_for and entry.local_runs == runs:
                self._entries.move_to_end(task_id)
                return entry
            # Readers arriving during the check are served what was current a moment ago.
            entry.checked_at, entry.local_runs = now, runs
            version = await self._versioned.version(task_id)
            if version is not None and (version is entry.version or version == entry.version):
                self._entries.move_to_end(task_id)
                return entry
            self.forget(task_id)
        found = await self._versioned.load_versioned(task_id)
        if found is None:
            return None
        record, version = found
        if not record.status.is_terminal:
            return record
        entry = FinishedAnswer.render(record, version, ttl=self._ttl, now=self._clock(), runs=runs)
        self._add(entry)
        return entry

    def forget(self, task_id: str) -> None:
        """Drop the task's answer (its record is changing here)."""
        entry = self._entries.pop(task_id, None)
        if entry is not None:
            self._bytes -= entry.size

    def _add(self, entry: FinishedAnswer) -> None:
        self.forget(entry.task_id)
        if entry.size > self._max_bytes:
            return
        self._entries[entry.task_id] = entry
        self._bytes += entry.size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
