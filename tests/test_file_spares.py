"""Spare files of the file store (store/file_spares.py): terminal records are written into
files made and flushed ahead of time, padded with spaces; anything else falls back."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import store.file_spares
from store import FileStore, NodeProgress, TaskRecord, TaskStatus
from store.file_io import is_temp_name
from store.file_spares import SPARE_PREFIX, SPARE_SIZE, SpareFiles


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[FileStore]:
    store = FileStore(tmp_path / "tasks", ttl=60, sweep_interval=3600)
    yield store
    await store.close()


def spares(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{SPARE_PREFIX}*"))


async def ready(directory: Path, count: int = 2) -> None:
    async with asyncio.timeout(10):
        while len(spares(directory)) < count:
            await asyncio.sleep(0.01)


def finished(task_id: str = "task-1", nodes: int = 3) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        instance="a",
        progress={str(n): NodeProgress(max=1, value=1) for n in range(nodes)},
    )


async def test_a_terminal_record_goes_into_a_spare_and_reads_back_whole(
    file_store: FileStore, tmp_path: Path
) -> None:
    await file_store.start()
    await ready(file_store.directory)
    before = set(spares(file_store.directory))
    record = finished()
    await file_store.save(record)
    path = file_store.directory / "task-1.json"
    assert path.stat().st_size == SPARE_SIZE  # padded: written over a spare
    assert path.read_bytes().endswith(b" ")
    other = FileStore(file_store.directory, ttl=60, sweep_interval=3600)  # another instance
    try:
        loaded = await other.load("task-1")
    finally:
        await other.close()
    assert loaded == record
    await ready(file_store.directory)  # used spares are replaced
    assert set(spares(file_store.directory)) != before


async def test_records_too_large_or_unfinished_are_written_plainly(file_store: FileStore) -> None:
    await file_store.start()
    await ready(file_store.directory)
    large = finished("large", nodes=400)
    await file_store.save(large)
    running = finished("running")
    running.status = TaskStatus.RUNNING
    await file_store.save(running)
    for record in (large, running):
        path = file_store.directory / f"{record.task_id}.json"
        assert path.stat().st_size == len(record.to_json().encode())
        assert await file_store.load(record.task_id) == record
    assert not any(p.name.startswith(".large.") for p in file_store.directory.iterdir())


async def test_a_spare_removed_behind_the_stores_back_falls_back_to_a_plain_write(
    file_store: FileStore,
) -> None:
    await file_store.start()
    await ready(file_store.directory)
    for spare in spares(file_store.directory):
        spare.unlink()  # as the sweeper of another instance would after temp_max_age
    record = finished()
    await file_store.save(record)
    assert await file_store.load("task-1") == record


async def test_close_removes_the_spares_and_the_sweeper_knows_them_as_temp_files(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "tasks", ttl=60, sweep_interval=3600)
    await store.start()
    await ready(store.directory)
    assert all(is_temp_name(spare.name) for spare in spares(store.directory))
    await store.close()
    assert spares(store.directory) == []


async def test_spares_too_old_to_trust_are_not_handed_out(tmp_path: Path) -> None:
    now = [0.0]
    pool = SpareFiles(tmp_path, keep=1, max_age=10, clock=lambda: now[0])
    pool.refill()
    await ready(tmp_path, 1)
    (old,) = spares(tmp_path)
    now[0] = 11
    assert pool.take() is None  # too old (the sweeper may be about to remove it)
    await ready(tmp_path, 1)
    async with asyncio.timeout(5):
        while old.exists():
            await asyncio.sleep(0.01)
    fresh = pool.take()
    assert fresh is not None and fresh != old and fresh.stat().st_size == SPARE_SIZE
    await pool.close()
    os.unlink(fresh)  # handed out: the caller's to use or remove
    assert spares(tmp_path) == []


async def test_spares_are_made_only_while_the_store_writes_nothing_else(tmp_path: Path) -> None:
    pool = SpareFiles(tmp_path, keep=1)
    with pool.writing():
        pool.refill()
        await asyncio.sleep(0.2)
        assert spares(tmp_path) == []  # a burst of final writes is not slowed by spares
    await ready(tmp_path, 1)
    await pool.close()
    assert spares(tmp_path) == []


async def test_close_while_a_spare_is_being_made_leaves_none_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thread that makes a spare cannot be cancelled: close waits for it and removes the
    # file it made, instead of leaving it for the sweeper.
    gate = threading.Event()
    real_make = store.file_spares.make_spare

    def slow_make(directory: Path) -> Path:
        path = real_make(directory)
        gate.wait(5)  # the file is on disk; the thread has not returned yet
        return path

    monkeypatch.setattr(store.file_spares, "make_spare", slow_make)
    pool = SpareFiles(tmp_path, keep=1, quiet=0)
    pool.refill()
    await ready(tmp_path, 1)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # it waits for the thread
    gate.set()
    await closing
    assert spares(tmp_path) == []
    assert pool.take() is None


async def test_spares_wait_until_the_store_has_been_quiet(tmp_path: Path) -> None:
    # A final write is followed by its answer: a spare flushed right then would slow it.
    pool = SpareFiles(tmp_path, keep=1, quiet=0.3)
    with pool.writing():
        pool.refill()
    await asyncio.sleep(0.15)
    assert spares(tmp_path) == []
    await ready(tmp_path, 1)
    await pool.close()
    assert spares(tmp_path) == []
