"""In-process task store: for tests and single-instance deployments."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from store.base import ClaimSuperseded, StoreError, validate_marker_name, validate_task_id
from store.common import Watchers, cancel_ttl, check_claim, check_ttl, is_expired
from store.fencing import next_token
from store.records import TaskRecord

# Expired records are pruned on save at most this often, so a busy store does not rescan
# every record on every save; load() hides expired records in between anyway.
_MAX_PRUNE_INTERVAL = 60.0


class MemoryStore:
    """Task records in a dict of this process: for tests and single-instance deployments."""

    def __init__(self, *, ttl: float | None = None) -> None:
        self._ttl = check_ttl(ttl)
        self._records: dict[str, TaskRecord] = {}
        # Claims and cancel requests expire on the monotonic clock: they only ever concern
        # this process, and a wall-clock step must not hand a task to a second runner.
        self._claims: dict[str, tuple[str, float]] = {}  # task id -> (owner, expiry)
        # The current claim token of each task ever claimed (the fence), kept past its claim.
        self._tokens: dict[str, int] = {}
        self._cancels: dict[str, float] = {}  # task id -> expiry
        self._marks: dict[tuple[str, str], float] = {}  # (task id, name) -> expiry
        self._watchers = Watchers()
        self._closed = False
        self._last_prune = time.monotonic()

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Store a copy of the record (fenced by token), and wake its watchers."""
        task_id = validate_task_id(task.task_id)
        self._check_open()
        current = self._tokens.get(task_id)
        if token is not None and current is not None and current != token:
            raise ClaimSuperseded(task_id, token, current)
        # A JSON round trip rather than a deep copy: the record then holds exactly what the
        # file and Redis stores would give back, so tests on memory:// catch the same bugs.
        self._records[task_id] = TaskRecord.from_json(task.to_json())
        if token is not None and task.status.is_terminal and current == token:
            self._claims.pop(task_id, None)  # the run's final record ends its claim
        self._prune()
        self._watchers.notify(task_id)

    async def load(self, task_id: str) -> TaskRecord | None:
        """Return a copy of the record, or None when unknown or expired."""
        validate_task_id(task_id)
        self._check_open()
        record = self._current(task_id, time.time())
        return None if record is None else record.deep_copy()

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, TaskRecord] | None:
        """load(), with the stored object as the version (every save stores a new one)."""
        validate_task_id(task_id)
        self._check_open()
        record = self._current(task_id, time.time())
        return None if record is None else (record.deep_copy(), record)

    async def version(self, task_id: str) -> TaskRecord | None:
        """The stored object itself; compared by the caller, never changed by this store."""
        validate_task_id(task_id)
        self._check_open()
        return self._current(task_id, time.time())

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and after every save, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        validate_task_id(task_id)
        self._check_open()
        return self._watch(task_id)

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for lease s: a new token, or None if held by another."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        self._check_open()
        now = time.monotonic()
        held = self._claims.get(task_id)
        if held is not None and held[1] > now and held[0] != owner:
            return None
        token = next_token(self._tokens.get(task_id), time.time())
        self._tokens[task_id] = token
        self._claims[task_id] = (owner, now + lease)
        self._cancels.pop(task_id, None)
        return token

    async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
        """Extend the claim holding token; False once a newer claim superseded it."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        self._check_open()
        current = self._tokens.get(task_id)
        if current is not None and current != token:
            return False
        self._tokens[task_id] = token
        self._claims[task_id] = (owner, time.monotonic() + lease)
        return True

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token; no effect once a newer claim superseded it."""
        validate_task_id(task_id)
        self._check_open()
        if self._tokens.get(task_id) == token:
            self._claims.pop(task_id, None)

    async def request_cancel(self, task_id: str) -> None:
        """Ask the runner of task_id to interrupt it; the request is kept for the task TTL."""
        validate_task_id(task_id)
        self._check_open()
        self._cancels[task_id] = time.monotonic() + cancel_ttl(self._ttl)

    async def cancel_requested(self, task_id: str) -> bool:
        """True when an interrupt of task_id was requested since it was last claimed anew."""
        validate_task_id(task_id)
        self._check_open()
        expiry = self._cancels.get(task_id)
        if expiry is None:
            return False
        if expiry <= time.monotonic():
            del self._cancels[task_id]
            return False
        return True

    async def mark_once(self, task_id: str, name: str) -> bool:
        """Set marker name of task_id unless set (and not expired); True when this call set it."""
        validate_task_id(task_id)
        validate_marker_name(name)
        self._check_open()
        now = time.monotonic()
        expiry = self._marks.get((task_id, name))
        if expiry is not None and expiry > now:
            return False
        self._marks[(task_id, name)] = now + cancel_ttl(self._ttl)
        return True

    async def close(self) -> None:
        """Drop all records; running watch() iterators raise StoreError (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._records.clear()
        self._claims.clear()
        self._tokens.clear()
        self._cancels.clear()
        self._marks.clear()
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
                    yield record.deep_copy()
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

    def _prune(self) -> None:
        tick = time.monotonic()
        interval = _MAX_PRUNE_INTERVAL if self._ttl is None else min(self._ttl, _MAX_PRUNE_INTERVAL)
        if tick - self._last_prune < interval:
            return
        self._last_prune = tick
        now = time.time()
        for task_id in [t for t, r in self._records.items() if is_expired(r, self._ttl, now)]:
            del self._records[task_id]
        for task_id in [t for t, (_, expiry) in self._claims.items() if expiry <= tick]:
            del self._claims[task_id]
        for task_id in [t for t, expiry in self._cancels.items() if expiry <= tick]:
            del self._cancels[task_id]
        # Forgetting a token is safe (store.fencing): keep only those of kept tasks.
        kept = self._records.keys() | self._claims.keys()
        for task_id in [t for t in self._tokens if t not in kept]:
            del self._tokens[task_id]

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")
