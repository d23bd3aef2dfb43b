"""Pieces the stores share: the TTL rule, claim argument checks, in-process wake-ups, and
the claims their final records ended (whose release has nothing left to do)."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict

from store.records import TaskRecord, TaskStatus

# Claims ended by their final record, kept to skip their release (one per run ending now).
ENDED_CLAIMS_KEPT = 1024

# How long a cancel request is kept when the store keeps records forever (ttl None): long
# enough for any run to notice it, short enough that requests for tasks that never run
# again do not pile up.
DEFAULT_CANCEL_TTL = 86_400.0


def check_ttl(ttl: float | None) -> float | None:
    """Return the TTL in seconds, or None for 'keep forever' (ttl 0 or None)."""
    if ttl is None or ttl == 0:
        return None
    if ttl < 0 or not math.isfinite(ttl):
        raise ValueError(
            f"ttl must be a finite number >= 0 seconds (0 or None keeps records forever), got {ttl}"
        )
    return float(ttl)


def expires_at(record: TaskRecord, ttl: float | None) -> float | None:
    """Unix time after which the record is no longer kept, or None when the TTL never ends it.

    Terminal records are kept ttl seconds after they finished. Unfinished records whose
    owner stopped renewing the lease are lost: nobody will finish them, so they are kept
    ttl seconds after the lease ran out. Unfinished records without a lease are kept.
    """
    if ttl is None:
        return None
    if record.status.is_terminal or record.status is TaskStatus.LOST:
        # A terminal record without finished_at, or one stored as lost (written by hand,
        # or by an older version: no owner renews it), ages from its last update instead.
        finished = record.finished_at if record.finished_at is not None else record.updated_at
        return finished + ttl
    if record.lease_expires_at is not None:
        return record.lease_expires_at + ttl
    return None


def is_expired(record: TaskRecord, ttl: float | None, now: float) -> bool:
    """True when the TTL rule (see expires_at) no longer keeps the record at time now."""
    end = expires_at(record, ttl)
    return end is not None and now > end


def cancel_ttl(ttl: float | None) -> float:
    """How long a cancel request is kept: the task TTL, or DEFAULT_CANCEL_TTL without one."""
    return DEFAULT_CANCEL_TTL if ttl is None else ttl


def check_claim(owner: str, lease: float) -> None:
    """Raise ValueError unless owner is a non-empty string and lease a positive duration."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("claim owner must be a non-empty string")
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise ValueError(f"lease must be a number of seconds, got {lease!r}")
    if not (math.isfinite(lease) and lease > 0):
        raise ValueError(f"lease must be a finite number of seconds > 0, got {lease}")


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


class EndedClaims:
    """The claims (task id -> token) whose final record ended them: no release to write."""

    def __init__(self, keep: int = ENDED_CLAIMS_KEPT) -> None:
        self._keep = keep
        self._tokens: OrderedDict[str, int] = OrderedDict()

    def ended(self, task_id: str, token: int) -> None:
        """The task's final record, written under token, ended its claim."""
        self._tokens[task_id] = token
        self._tokens.move_to_end(task_id)
        if len(self._tokens) > self._keep:
            self._tokens.popitem(last=False)  # its release writes, as it did before

    def changed(self, task_id: str) -> None:
        """The task's claim was written again (a new claim, a renewal)."""
        self._tokens.pop(task_id, None)

    def release(self, task_id: str, token: int) -> bool:
        """True (once) when the claim holding token needs no release write."""
        if self._tokens.get(task_id) != token:
            return False
        del self._tokens[task_id]
        return True
