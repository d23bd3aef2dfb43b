"""The file store: a run's final record ends its claim, so the run writes no release.

The order of the two files' writes is read from their mtimes; tests set them with
os.utime rather than sleep past the file system's timestamp granularity.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.base import ClaimSuperseded
from store.file import FileStore
from store.records import TaskRecord, TaskStatus


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    opened = FileStore(tmp_path / "tasks", ttl=60, sweep_interval=3600)
    yield opened
    await opened.close()


def claim_file(store: FileStore, task_id: str = "task-1") -> Path:
    return store.directory / ".claims" / f"{task_id}.claim"


def record_file(store: FileStore, task_id: str = "task-1") -> Path:
    return store.directory / f"{task_id}.json"


def age(path: Path, seconds: float) -> None:
    """Move the file's mtime into the past (or the future, with a negative age)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def record(status: TaskStatus, instance: str = "owner-a") -> TaskRecord:
    return TaskRecord(task_id="task-1", status=status, instance=instance)


def claim_state(store: FileStore) -> tuple[bytes, int]:
    """The claim file's bytes and mtime: what a release would change."""
    path = claim_file(store)
    return path.read_bytes(), path.stat().st_mtime_ns


async def test_a_final_record_ends_the_claim_without_a_release_write(store: FileStore) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), 5)  # claimed a while before the run ends
    await store.save(record(TaskStatus.RUNNING), token=token)
    assert await store.claim("task-1", "owner-b", 30) is None, "a running task stays held"
    await store.save(record(TaskStatus.SUCCEEDED), token=token)
    before = claim_state(store)
    await store.release("task-1", token)
    assert claim_state(store) == before, "the release wrote nothing"
    assert json.loads(before[0])["expires_at"] > time.time(), "the claim file is as it was"
    # Yet the task is free: another instance may run it again, and fences the old run out.
    newer = await store.claim("task-1", "owner-b", 30)
    assert newer is not None and newer > token
    with pytest.raises(ClaimSuperseded):
        await store.save(record(TaskStatus.FAILED), token=token)
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.status is TaskStatus.SUCCEEDED


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.INTERRUPTED])
async def test_every_terminal_record_ends_the_claim(store: FileStore, status: TaskStatus) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), 5)
    await store.save(record(status), token=token)
    await store.release("task-1", token)
    assert await store.claim("task-1", "owner-b", 30) is not None


async def test_a_final_record_older_than_the_claim_frees_nothing(store: FileStore) -> None:
    # An earlier run failed; a new run claimed the task and has not written yet.
    first = await store.claim("task-1", "owner-a", 30)
    assert first is not None
    await store.save(record(TaskStatus.FAILED), token=first)
    await store.release("task-1", first)
    second = await store.claim("task-1", "owner-b", 30)
    assert second is not None
    age(record_file(store), 5)  # the failed record was written before this claim
    assert await store.claim("task-1", "owner-c", 30) is None
    # The same holds within one timestamp tick: equal mtimes free nothing.
    stamp = claim_file(store).stat().st_mtime_ns
    os.utime(record_file(store), ns=(stamp, stamp))
    assert await store.claim("task-1", "owner-c", 30) is None


async def test_a_final_record_not_after_the_claim_is_released_the_usual_way(
    store: FileStore,
) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), -60)  # changed "after" the record about to be written
    await store.save(record(TaskStatus.SUCCEEDED), token=token)
    before = claim_state(store)
    assert await store.claim("task-1", "owner-b", 30) is None
    await store.release("task-1", token)
    after = claim_state(store)
    assert after[0] != before[0] and json.loads(after[0])["expires_at"] <= time.time()
    assert await store.claim("task-1", "owner-b", 30) is not None


async def test_a_claim_renewed_after_its_final_record_is_released_the_usual_way(
    store: FileStore,
) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), 5)
    await store.save(record(TaskStatus.SUCCEEDED), token=token)
    assert await store.renew("task-1", "owner-a", token, 30)
    age(record_file(store), 10)  # the renewal is the newer write
    await store.release("task-1", token)
    assert json.loads(claim_file(store).read_bytes())["expires_at"] <= time.time()
    assert await store.claim("task-1", "owner-b", 30) is not None


async def test_a_progress_record_never_ends_a_claim(store: FileStore) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), 5)
    for status in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.LOST):
        await store.save(record(status), token=token)
        assert await store.claim("task-1", "owner-b", 30) is None


async def test_a_damaged_record_frees_nothing(store: FileStore) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    age(claim_file(store), 5)
    for content in (b"", b"[1]", b'{"status": "finished"}', b"{not json"):
        record_file(store).write_bytes(content)
        assert await store.claim("task-1", "owner-b", 30) is None
