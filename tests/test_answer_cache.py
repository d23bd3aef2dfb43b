"""The finished-answer cache: served from memory, revalidated against every store kind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.answer_cache import AnswerCache, FinishedAnswer
from store import NodeProgress, OutputFile, Store, TaskRecord, TaskStatus
from tests.store_factories import STORE_KINDS, RedisTarget, make_store


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(
    task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED, **extra: object
) -> TaskRecord:
    record = TaskRecord(task_id=task_id, status=status, finished_at=2_000_000_000.0, **extra)
    record.progress = {
        "1": NodeProgress(max=1, value=1),
        "2": NodeProgress(max=1, value=1, images=[OutputFile(filename="a.png")]),
    }
    record.outputs = {"2": {"images": [{"filename": "a.png"}], "text": ["hi"]}}
    return record


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_target: RedisTarget
) -> AsyncIterator[Store]:
    kind = request.param
    opened = await make_store(
        kind, tmp_path, None, redis_target=redis_target if kind == "redis" else None
    )
    try:
        yield opened
    finally:
        await opened.close()


class Runs:
    """Stands for the runner's count of runs that ended here."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def cache_for(store: Store, clock: Clock, runs: Runs, **options: object) -> AnswerCache:
    return AnswerCache(store, ttl=None, local_runs=runs, clock=clock, **options)  # type: ignore[arg-type]


async def test_finished_answer_is_the_routes_json(store: Store) -> None:
    record = finished("t1")
    await store.save(record)
    cache = cache_for(store, Clock(), Runs())
    answer = await cache.lookup("t1")
    assert isinstance(answer, FinishedAnswer)
    assert answer.status is TaskStatus.SUCCEEDED
    assert answer.progress_body == json.dumps(record.progress_map()).encode()
    assert answer.record_body == json.dumps(record.model_dump(mode="json")).encode()
    assert json.loads(answer.progress_body)["2"]["outputs"] == {"text": ["hi"]}


async def test_unknown_and_unfinished_tasks_are_not_kept(store: Store) -> None:
    cache = cache_for(store, Clock(), Runs())
    assert await cache.lookup("nothing") is None
    running = TaskRecord(task_id="run", status=TaskStatus.RUNNING)
    await store.save(running)
    found = await cache.lookup("run")
    assert isinstance(found, TaskRecord)
    assert found.status is TaskStatus.RUNNING
    assert len(cache) == 0


async def test_answer_is_served_from_memory_while_fresh(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save(finished("t1"))
    clock = Clock()
    cache = cache_for(store, clock, Runs(), fresh_for=0.1)
    first = await cache.lookup("t1")

    async def no_reads(task_id: str) -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(store, "version", no_reads)
    monkeypatch.setattr(store, "load_versioned", no_reads)
    clock.now += 0.05
    assert await cache.lookup("t1") is first


async def test_unchanged_record_is_revalidated_without_a_load(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save(finished("t1"))
    clock = Clock()
    cache = cache_for(store, clock, Runs(), fresh_for=0.1)
    first = await cache.lookup("t1")

    async def no_load(task_id: str) -> None:
        raise AssertionError("the record was loaded again")

    monkeypatch.setattr(store, "load_versioned", no_load)
    clock.now += 1.0
    assert await cache.lookup("t1") is first


async def test_a_run_again_elsewhere_is_seen_after_the_fresh_window(store: Store) -> None:
    await store.save(finished("t1", TaskStatus.FAILED))
    clock = Clock()
    cache = cache_for(store, clock, Runs(), fresh_for=0.1)
    assert isinstance(await cache.lookup("t1"), FinishedAnswer)
    # Another instance runs the failed task again: its records replace the stored one.
    await store.save(TaskRecord(task_id="t1", status=TaskStatus.RUNNING))
    clock.now += 0.2
    found = await cache.lookup("t1")
    assert isinstance(found, TaskRecord)
    assert found.status is TaskStatus.RUNNING
    await store.save(finished("t1", TaskStatus.SUCCEEDED))
    clock.now += 0.2
    answer = await cache.lookup("t1")
    assert isinstance(answer, FinishedAnswer)
    assert answer.status is TaskStatus.SUCCEEDED


async def test_a_run_that_ended_here_is_seen_at_once(store: Store) -> None:
    await store.save(finished("t1", TaskStatus.FAILED))
    clock, runs = Clock(), Runs()
    cache = cache_for(store, clock, runs, fresh_for=10.0)
    assert isinstance(await cache.lookup("t1"), FinishedAnswer)
    await store.save(finished("t1", TaskStatus.SUCCEEDED))
    runs.count += 1  # the runner counts the run that just ended here
    answer = await cache.lookup("t1")
    assert isinstance(answer, FinishedAnswer)
    assert answer.status is TaskStatus.SUCCEEDED


async def test_deleted_and_expired_records_are_not_served(store: Store) -> None:
    await store.save(finished("gone"))
    clock = Clock()
    cache = cache_for(store, clock, Runs(), fresh_for=0.1)
    assert await cache.lookup("gone") is not None
    if hasattr(store, "_records"):
        store._records.pop("gone")
    elif hasattr(store, "directory"):
        (store.directory / "gone.json").unlink()
    else:
        await store._redis.delete(store._key("task", "gone"))  # type: ignore[attr-defined]
    clock.now += 0.2
    assert await cache.lookup("gone") is None

    wall = [3_000_000_000.0]
    expiring = AnswerCache(
        store, ttl=60, local_runs=Runs(), clock=clock, wall_clock=lambda: wall[0]
    )
    record = finished("old")
    record.finished_at = wall[0] - 30
    await store.save(record)
    assert await expiring.lookup("old") is not None
    wall[0] += 31  # past finished_at + ttl: gone even inside the fresh window
    assert await expiring.lookup("old") is None


async def test_entries_are_bounded(store: Store) -> None:
    cache = cache_for(store, Clock(), Runs(), max_entries=3)
    for i in range(5):
        await store.save(finished(f"t{i}"))
        await cache.lookup(f"t{i}")
    assert len(cache) == 3
    small = cache_for(store, Clock(), Runs(), max_bytes=1500)
    for i in range(5):
        await small.lookup(f"t{i}")
    assert 0 < len(small) < 5
