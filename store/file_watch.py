"""Reading the file store's task records: parsing, stat and read off the event loop, and
watch() by polling (saves by other instances are seen only that way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from store.base import StoreError
from store.common import Watchers, is_expired
from store.file_io import FilePath, Signature, read_file, stat_signature
from store.records import TaskRecord


async def watch_file(
    task_id: str,
    path: Path,
    watchers: Watchers,
    *,
    ttl: float | None,
    poll_interval: float,
    start: Callable[[], Awaitable[None]],
    check_open: Callable[[], None],
) -> AsyncGenerator[TaskRecord, None]:
    """Yield task_id's record now (if any) and on every change seen, until it is terminal.

    A save by this store wakes the watch through watchers at once; start runs first,
    check_open before every look.
    """
    await start()
    loop = asyncio.get_running_loop()
    event = watchers.add(task_id)
    try:
        seen_signature: Signature | None = None
        seen_data: bytes | None = None
        while True:
            # Cleared before looking, so a save by this store while we look (or while
            # the consumer holds the previous record) still wakes us at once.
            event.clear()
            check_open()
            signature = await stat_path(path)
            if signature is not None and signature != seen_signature:
                found = await read_path(path)
                if found is not None:
                    data, seen_signature = found
                    # Another instance may rewrite an identical record: not a change.
                    if data != seen_data:
                        seen_data = data
                        record = parse_record(task_id, path, data)
                        if not is_expired(record, ttl, time.time()):
                            yield record
                            if record.status.is_terminal:
                                return
            # Saves by other instances are only seen by polling; a timer on the same
            # event (rather than wait_for) keeps the wait free of extra tasks.
            timer = loop.call_later(poll_interval, event.set)
            try:
                await event.wait()
            finally:
                timer.cancel()
    finally:
        watchers.remove(task_id, event)


async def stat_path(path: Path) -> Signature | None:
    """The file's signature (None when absent), off the event loop; StoreError on failure."""
    try:
        return await asyncio.to_thread(stat_signature, path)
    except OSError as exc:
        raise StoreError(f"cannot stat {path}: {exc}") from exc


async def read_path(path: Path) -> tuple[bytes, Signature] | None:
    """The file's bytes and signature (None when absent), off the loop; StoreError on failure."""
    try:
        return await asyncio.to_thread(read_file, path)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc


def parse_record(task_id: str, path: FilePath, data: bytes) -> TaskRecord:
    """The record in a task file; StoreError when it is not task_id's record."""
    try:
        record = TaskRecord.from_json(data)
    except ValidationError as exc:
        raise StoreError(
            f"{path} is not a task record ({exc.error_count()} errors: {_first_error(exc)})"
        ) from exc
    if record.task_id != task_id:
        raise StoreError(f"{path} holds task {record.task_id!r}, not {task_id!r}")
    return record


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"
