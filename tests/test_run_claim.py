"""A run's claim (agent/run_claim.py) and its record writer against a real store: renewal on
a clock, the token on every write, and stopping for good once another run took over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.record_writer import RecordWriter
from agent.run_claim import ClaimReleases, RunClaim
from store import MemoryStore, StoreError, TaskRecord, TaskStatus


class Clock:
    """A monotonic clock the test moves by hand (a freeze is a jump)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def take(store: Any, clock: Clock, owner: str = "a", lease: float = 0.3) -> RunClaim:
    token = await store.claim("task-1", owner, lease)
    assert token is not None
    return RunClaim(store, "task-1", owner, token, lease, monotonic=clock)


async def test_renewal_is_due_a_third_of_the_lease_after_the_last_one() -> None:
    store, clock = MemoryStore(), Clock()
    claim = await take(store, clock, lease=30)
    assert not claim.due()
    clock.now += 9.9
    assert not claim.due()
    clock.now += 0.2
    assert claim.due()
    assert await claim.renew()
    assert not claim.due()


async def test_a_take_over_is_noticed_once_and_stops_everything() -> None:
    store, clock = MemoryStore(), Clock()
    claim = await take(store, clock)
    noticed: list[bool] = []

    async def superseded() -> None:
        noticed.append(True)

    claim.on_superseded = superseded
    await asyncio.sleep(0.4)  # frozen past the lease
    assert await store.claim("task-1", "b", 30)  # another run takes over
    assert not await claim.renew()
    assert not await claim.renew()
    assert claim.superseded and noticed == [True]
    await claim.release()  # a superseded claim releases nothing
    assert await store.claim("task-1", "c", 30) is None


async def test_an_outage_during_renewal_is_not_a_take_over() -> None:
    class Down(MemoryStore):
        async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
            raise StoreError("down")

    store, clock = Down(), Clock()
    claim = await take(store, clock)
    failures: list[Exception] = []
    claim.on_failure = failures.append
    assert await claim.renew()
    assert not claim.superseded and len(failures) == 1


def writer_for(claim: RunClaim, record: TaskRecord, settle: float = 0.02) -> RecordWriter:
    return RecordWriter(
        claim,
        lambda: record.model_copy(deep=True),
        interval=0.01,
        clock=lambda: 0.0 + asyncio.get_running_loop().time(),
        on_failure=lambda exc: None,
        settle=settle,
    )


async def test_writer_after_a_freeze_renews_first_and_goes_on_when_nobody_took_over() -> None:
    store, clock = MemoryStore(), Clock()
    claim = await take(store, clock)
    record = TaskRecord(task_id="task-1", status=TaskStatus.RUNNING, instance="a")
    writer = writer_for(claim, record)
    assert await writer.start()
    await asyncio.sleep(0.4)
    clock.now += 10  # frozen well past the lease; nobody claimed it
    record.status = TaskStatus.SUCCEEDED
    assert await writer.close()
    stored = await store.load("task-1")
    assert stored is not None and stored.status is TaskStatus.SUCCEEDED
    assert not claim.superseded


@pytest.mark.parametrize("noticed_by", ["renewal", "write"])
async def test_writer_of_a_superseded_run_writes_nothing_more(noticed_by: str) -> None:
    store, clock = MemoryStore(), Clock()
    claim = await take(store, clock)
    record = TaskRecord(task_id="task-1", status=TaskStatus.RUNNING, instance="a")
    writer = writer_for(claim, record)
    assert await writer.start()
    await asyncio.sleep(0.4)
    if noticed_by == "renewal":
        clock.now += 10  # a renewal is due: it is refused before the write
    new = await store.claim("task-1", "b", 30)
    assert new is not None
    await store.save(TaskRecord(task_id="task-1", instance="b"), token=new)
    record.status = TaskStatus.SUCCEEDED
    assert await writer.close(), "nothing is left to store for a superseded run"
    assert claim.superseded
    stored = await store.load("task-1")
    assert stored is not None and stored.instance == "b" and stored.status is TaskStatus.QUEUED


class CountingStore(MemoryStore):
    """A memory store that remembers the status of every record written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[TaskStatus] = []

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        self.written.append(task.status)
        await super().save(task, token=token)


async def test_a_run_ending_while_its_changes_settle_writes_its_final_record_only() -> None:
    store, clock = CountingStore(), Clock()
    claim = await take(store, clock, lease=30)
    record = TaskRecord(task_id="task-1", status=TaskStatus.QUEUED, instance="a")
    writer = writer_for(claim, record)
    writer.start_soon()
    record.status = TaskStatus.RUNNING
    writer.mark_dirty(urgent=True)
    record.status = TaskStatus.SUCCEEDED
    assert await writer.close()
    assert store.written == [TaskStatus.SUCCEEDED]


async def test_a_change_is_written_once_it_settled_and_the_ones_behind_it_go_along() -> None:
    store, clock = CountingStore(), Clock()
    claim = await take(store, clock, lease=30)
    record = TaskRecord(task_id="task-1", status=TaskStatus.QUEUED, instance="a")
    writer = writer_for(claim, record, settle=0.3)
    writer.start_soon()
    await asyncio.sleep(0.01)  # within the settle time: the queued state is not out yet
    record.status = TaskStatus.RUNNING
    writer.mark_dirty(urgent=True)
    await asyncio.sleep(0.8)
    assert store.written == [TaskStatus.RUNNING]
    stored = await store.load("task-1")
    assert stored is not None and stored.status is TaskStatus.RUNNING
    record.status = TaskStatus.SUCCEEDED
    assert await writer.close()
    assert store.written == [TaskStatus.RUNNING, TaskStatus.SUCCEEDED]


async def test_a_claim_taken_in_the_background_is_held_once_the_store_gave_a_token() -> None:
    store = MemoryStore()
    claim = RunClaim.taking(store, "task-1", "a", 30)
    assert not claim.refused
    assert await claim.held() and claim.token > 0
    assert await store.claim("task-1", "b", 30) is None  # really held
    await claim.release()
    assert await store.claim("task-1", "b", 30) is not None


async def test_a_background_claim_is_not_asked_for_until_the_run_needs_it() -> None:
    # The run posts its prompt first, then asks (held()): the post waits for no store I/O.
    store = MemoryStore()
    claim = RunClaim.taking(store, "task-1", "a", 30)
    await asyncio.sleep(0.05)
    assert not claim.refused
    assert await store.claim("task-1", "b", 30) is not None  # nothing was taken meanwhile
    assert not await claim.held() and claim.refusal == "the task is held by another run"


class DownStore(MemoryStore):
    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        raise StoreError("down")


async def test_a_claim_taken_in_the_background_can_be_refused_and_then_writes_nothing() -> None:
    store = DownStore()
    claim = RunClaim.taking(store, "task-1", "a", 30)
    outages: list[Exception] = []
    claim.on_failure = outages.append
    assert not await claim.held()
    assert claim.refused and "could not be reached" in (claim.refusal or "")
    assert len(outages) == 1  # counted as a store failure, like an outage at take()
    record = TaskRecord(task_id="task-1", status=TaskStatus.SUCCEEDED, instance="a")
    writer = writer_for(claim, record)
    writer.start_soon()
    assert not await writer.close()
    assert await store.load("task-1") is None
    await claim.release()  # nothing to release, and no error
    held_elsewhere = MemoryStore()
    assert await held_elsewhere.claim("task-1", "b", 30) is not None
    other = RunClaim.taking(held_elsewhere, "task-1", "a", 30)
    assert not await other.held() and other.refusal == "the task is held by another run"


async def test_an_ended_runs_claim_is_released_once_its_caller_was_answered() -> None:
    store, failures = MemoryStore(), []
    releases = ClaimReleases(lambda: failures.append(1))
    claim = await RunClaim.take(store, "task-1", "a", 30)
    assert claim is not None
    answered = asyncio.Event()
    releases.start(claim, answered)
    await asyncio.sleep(0.05)
    assert await store.claim("task-1", "b", 30) is None  # still held: the answer is not out
    waiting = asyncio.ensure_future(releases.wait("task-1"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # a new run of the task id here waits for the release
    answered.set()
    await asyncio.wait_for(waiting, 1)
    assert await store.claim("task-1", "b", 30) is not None
    await releases.wait_all()
    assert failures == []
