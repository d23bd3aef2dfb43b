"""What a Redis store knows of one watched task's channel: its newest record, sync state."""

from __future__ import annotations

import asyncio
import secrets

from store.base import StoreError

# Published by the sync script; a record's JSON always starts with "{".
MARKER_PREFIX = b"\x00sync:"


class Channel:
    """What this store knows of one watched task: its newest record and who waits on it."""

    def __init__(self, key: str, name: bytes, now: float) -> None:
        self.key = key
        self.name = name
        self.watchers: set[asyncio.Event] = set()
        self.latest: bytes | None = None
        # Bumped on each change of latest: watchers compare it to what they yielded.
        self.version = 0
        self.ready = False  # synced at least once
        self.error: StoreError | None = None
        self.sync_task: asyncio.Task[None] | None = None
        # Since when the channel has not been in sync (monotonic); None while it is.
        self._lost_at: float | None = now
        self._marker: bytes | None = None
        self._marker_seen = False
        self._reply_seen = False
        self._newer = False

    def lost_since(self, now: float) -> float:
        """When the channel went out of sync (now if it is in sync)."""
        return now if self._lost_at is None else self._lost_at

    def lose(self, now: float) -> None:
        """The subscription is gone (connection lost): updates stop until a resync."""
        if self._lost_at is None:
            self._lost_at = now
        self.cancel_sync()

    def begin_sync(self) -> bytes:
        """Return the marker for a read of the current record that is about to be made."""
        self._marker = MARKER_PREFIX + secrets.token_hex(8).encode()
        self._marker_seen = self._reply_seen = self._newer = False
        return self._marker

    def receive(self, payload: bytes) -> None:
        """A message on the channel: a record, or a sync marker."""
        if payload.startswith(MARKER_PREFIX):
            if payload == self._marker:
                self._marker_seen = True
                if self._reply_seen:
                    self._marker = None
            return
        if self._marker is not None:
            if not self._marker_seen:
                return  # published before the sync read, which returns it or a newer one
            self._newer = True  # after the marker, but the read's reply is still on its way
        self._update(payload)

    def end_sync(self, marker: bytes, value: bytes | None) -> None:
        """The sync read tagged with marker returned value."""
        if marker != self._marker:
            return  # superseded by a later sync
        if not self._newer:
            self._update(value)
        self._reply_seen = True
        if self._marker_seen:
            self._marker = None
        self._lost_at = None
        if not self.ready:
            self.ready = True
            self.wake()

    def cancel_sync(self) -> None:
        """Stop a sync in progress (its result would be stale or unwanted)."""
        self._marker = None
        if self.sync_task is not None:
            self.sync_task.cancel()
            self.sync_task = None

    def wake(self) -> None:
        """Wake every watcher of the channel."""
        for event in self.watchers:
            event.set()

    def _update(self, value: bytes | None) -> None:
        # Another instance may rewrite an identical record: not a change.
        if value != self.latest:
            self.latest = value
            self.version += 1
            self.wake()
