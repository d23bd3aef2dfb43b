"""Versioned reads: a cheap token that changes whenever a task's stored record changes.

Lets a reader keep what it made of a record (e.g. a finished task's answer as bytes) and
check it is still current without reading and parsing the record again: the file store's
token is the file's (inode, size, mtime) from one stat, Redis's the stored JSON itself (one
GET, no parsing), the memory store's the stored object.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from store.records import TaskRecord


@runtime_checkable
class VersionedReads(Protocol):
    """A store that can tell, cheaply, whether a record changed since it was read."""

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, object] | None:
        """Like Store.load, with the version of what was read."""
        ...

    async def version(self, task_id: str) -> object | None:
        """The current version (equal to the one load_versioned gave while unchanged)."""
        ...
