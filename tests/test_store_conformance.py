"""One behaviour for every store: each test runs against every kind in STORE_KINDS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from store import (
    ClaimSuperseded,
    FileStore,
    InvalidTaskId,
    MemoryStore,
    NodeProgress,
    OutputFile,
    RedisStore,
    Store,
    StoreError,
    TaskError,
    TaskRecord,
    TaskStatus,
    open_store,
)
from tests.store_factories import STORE_KINDS, RedisTarget, make_store, stored_names

# An upper bound only: every wait below ends as soon as its event happens.
TIMEOUT = 5.0
DEFAULT_TTL = 3600.0

MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(kind: str, request: pytest.FixtureRequest) -> RedisTarget | None:
    """The Redis server for the redis kind (started only when a redis test runs)."""
    if kind != "redis":
        return None
    value = request.getfixturevalue("redis_target")
    assert isinstance(value, RedisTarget)
    return value


@pytest.fixture
async def make(kind: str, tmp_path: Path, target: RedisTarget | None) -> AsyncIterator[MakeStore]:
    """Open stores of this kind (closed after the test); make(ttl=...) for a custom TTL."""
    opened: list[Store] = []

    async def _make(ttl: float | None = DEFAULT_TTL) -> Store:
        store = await make_store(kind, tmp_path, ttl, redis_target=target)
        opened.append(store)
        return store

    yield _make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make: MakeStore) -> Store:
    return await make()


def record(
    task_id: str = "task-1", status: TaskStatus = TaskStatus.RUNNING, **fields: Any
) -> TaskRecord:
    return TaskRecord(task_id=task_id, status=status, **fields)


def full_record(task_id: str = "full-1") -> TaskRecord:
    """A record with every field set, nested and non-ASCII values included."""
    now = time.time()
    return TaskRecord(
        task_id=task_id,
        prompt_id="9f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        status=TaskStatus.FAILED,
        created_at=now - 42.125,
        started_at=now - 40.5,
        finished_at=now - 0.25,
        updated_at=now - 0.125,
        instance="gpu-node-7",
        error=TaskError(
            type="execution_error",
            message="CUDA out of memory — réessayez 🙂",
            node_id="12",
            node_type="KSampler",
            details={"traceback": ["line 1", "line 2"], "nested": {"a": [1, 2.5, None, True]}},
        ),
        progress={
            "3": NodeProgress(max=30, value=30, start=1, last_updated=2),
            "9": NodeProgress(
                max=1,
                value=1,
                images=[
                    OutputFile(filename="猫_00001_.png", subfolder="日本"),
                    OutputFile(filename="b.png", type="temp"),
                ],
            ),
            "4": NodeProgress(cached=True),
        },
        outputs={
            "9": {
                "images": [{"filename": "猫_00001_.png", "subfolder": "日本", "type": "output"}],
                "text": ['héllo\nworld\t"quoted" \\ \u2028'],
                "emoji": "🎨",
            }
        },
    )


async def next_record(watch: AsyncIterator[TaskRecord]) -> TaskRecord:
    return await asyncio.wait_for(anext(watch), TIMEOUT)


async def assert_ended(watch: AsyncIterator[TaskRecord]) -> None:
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(watch), TIMEOUT)


async def settle() -> None:
    """Let callbacks and finalizer tasks the loop already has run to completion."""
    for _ in range(10):
        await asyncio.sleep(0)


# --- save / load -------------------------------------------------------------------------


async def test_round_trip_keeps_every_field(store: Store) -> None:
    saved = full_record()
    await store.save(saved)
    loaded = await store.load(saved.task_id)
    assert loaded == saved
    assert loaded is not None and loaded.to_json() == saved.to_json()


async def test_round_trip_of_a_minimal_record(store: Store) -> None:
    saved = TaskRecord(task_id="min")
    await store.save(saved)
    assert await store.load("min") == saved


async def test_load_unknown_is_none(store: Store) -> None:
    assert await store.load("never-saved") is None


async def test_overwrite_keeps_the_last(store: Store) -> None:
    for value in range(5):
        await store.save(record(progress={"1": NodeProgress(max=5, value=value)}))
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.progress["1"].value == 4


async def test_save_and_load_work_on_copies(store: Store) -> None:
    saved = record(progress={"1": NodeProgress(max=5, value=1)})
    await store.save(saved)
    saved.progress["1"].value = 3
    saved.status = TaskStatus.SUCCEEDED
    loaded = await store.load("task-1")
    assert loaded is not None
    assert (loaded.status, loaded.progress["1"].value) == (TaskStatus.RUNNING, 1)
    loaded.progress["1"].value = 5
    again = await store.load("task-1")
    assert again is not None and again.progress["1"].value == 1


async def test_records_are_kept_per_task(store: Store) -> None:
    await store.save(record("a", instance="one"))
    await store.save(record("b", instance="two"))
    a, b = await store.load("a"), await store.load("b")
    assert a is not None and a.instance == "one"
    assert b is not None and b.instance == "two"


async def test_longest_valid_id_is_accepted(store: Store) -> None:
    task_id = "a" + "b.-_9" * 25 + "xy"
    assert len(task_id) == 128
    await store.save(record(task_id))
    assert await store.load(task_id) is not None


BAD_IDS = [
    "../x",
    "/abs",
    "a/b",
    "x\x00y",
    "",
    "a" * 300,
    "a" * 129,
    ".hidden",
    "..",
    "x/../../y",
    "a\\b",
    "a b",
    "x\n",
    "ünï",
    "-dash-first",
]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
async def test_invalid_ids_are_refused(
    store: Store, kind: str, tmp_path: Path, target: RedisTarget | None, bad_id: str
) -> None:
    with pytest.raises(InvalidTaskId):
        await store.save(record(bad_id))
    with pytest.raises(InvalidTaskId):
        await store.load(bad_id)
    with pytest.raises(InvalidTaskId):
        # The call itself or the first step may refuse: both are fine.
        await anext(store.watch(bad_id))
    assert stored_names(kind, store, tmp_path, redis_target=target) == set()
    assert not await asyncio.to_thread(os.path.exists, "/abs.json")


# --- watch -------------------------------------------------------------------------------


async def test_watch_yields_now_then_each_change_then_stops_at_terminal(store: Store) -> None:
    await store.save(record(status=TaskStatus.QUEUED))
    watch = store.watch("task-1")
    assert (await next_record(watch)).status is TaskStatus.QUEUED
    for value in range(1, 4):
        await store.save(record(progress={"5": NodeProgress(max=3, value=value)}))
        seen = await next_record(watch)
        assert seen.status is TaskStatus.RUNNING and seen.progress["5"].value == value
    await store.save(record(status=TaskStatus.SUCCEEDED, finished_at=time.time()))
    assert (await next_record(watch)).status is TaskStatus.SUCCEEDED
    await assert_ended(watch)


async def test_watch_of_a_finished_task_yields_it_once(store: Store) -> None:
    await store.save(record(status=TaskStatus.INTERRUPTED, finished_at=time.time()))
    watch = store.watch("task-1")
    assert (await next_record(watch)).status is TaskStatus.INTERRUPTED
    await assert_ended(watch)


async def test_watch_waits_for_a_task_not_saved_yet(store: Store) -> None:
    watch = store.watch("later")
    pending = asyncio.ensure_future(anext(watch))
    # Long enough for several polls of a polling store; nothing exists, so nothing may come.
    await asyncio.sleep(0.1)
    assert not pending.done()
    await store.save(record("later", instance="me"))
    seen = await asyncio.wait_for(pending, TIMEOUT)
    assert seen.task_id == "later" and seen.instance == "me"
    await watch.aclose()  # type: ignore[attr-defined]


async def test_two_watchers_both_see_every_change(store: Store) -> None:
    await store.save(record(status=TaskStatus.QUEUED))
    first, second = store.watch("task-1"), store.watch("task-1")
    assert (await next_record(first)).status is TaskStatus.QUEUED
    assert (await next_record(second)).status is TaskStatus.QUEUED
    for value in range(1, 3):
        # A save of another task must not wake these watchers with the wrong record.
        await store.save(record("other", progress={"x": NodeProgress(value=99)}))
        await store.save(record(progress={"1": NodeProgress(max=2, value=value)}))
        for watch in (first, second):
            seen = await next_record(watch)
            assert seen.task_id == "task-1" and seen.progress["1"].value == value
    await store.save(record(status=TaskStatus.SUCCEEDED, finished_at=time.time()))
    for watch in (first, second):
        assert (await next_record(watch)).status is TaskStatus.SUCCEEDED
        await assert_ended(watch)


async def test_watch_leaves_no_tasks_behind(store: Store) -> None:
    await store.load("warm-up")  # starts whatever background work the store keeps
    await store.save(record())
    before = asyncio.all_tasks()

    # The consumer breaks out and closes the iterator.
    async with contextlib.aclosing(store.watch("task-1")) as closed:  # type: ignore[type-var]
        async for _ in closed:
            break
    # The consumer drops the iterator without closing it.
    dropped = store.watch("task-1")
    await next_record(dropped)
    del dropped
    gc.collect()
    # The consumer is cancelled while the iterator waits for a change.
    waiting = store.watch("task-1")
    await next_record(waiting)
    pending = asyncio.ensure_future(anext(waiting))
    await settle()
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending

    await settle()
    assert asyncio.all_tasks() <= before  # (store work running before may have ended)


# --- TTL ---------------------------------------------------------------------------------


async def test_expired_terminal_records_disappear_running_ones_stay(make: MakeStore) -> None:
    store = await make(ttl=60)
    now = time.time()
    long_ago = {"created_at": now - 10_000, "started_at": now - 9_999, "updated_at": now - 9_000}
    await store.save(record("old-done", TaskStatus.SUCCEEDED, **long_ago, finished_at=now - 120))
    await store.save(record("old-failed", TaskStatus.FAILED, **long_ago, finished_at=now - 61))
    await store.save(record("old-lost", TaskStatus.LOST, **long_ago))  # no finished_at
    await store.save(record("old-running", TaskStatus.RUNNING, **long_ago))
    await store.save(record("old-queued", TaskStatus.QUEUED, **long_ago))
    await store.save(record("new-done", TaskStatus.SUCCEEDED, **long_ago, finished_at=now - 5))
    for gone in ("old-done", "old-failed", "old-lost"):
        assert await store.load(gone) is None, gone
    for kept in ("old-running", "old-queued", "new-done"):
        assert await store.load(kept) is not None, kept


async def test_lost_tasks_expire_ttl_after_their_lease_ran_out(make: MakeStore) -> None:
    store = await make(ttl=60)
    now = time.time()
    # Their owners stopped renewing: nobody will ever finish them.
    await store.save(record("long-lost", TaskStatus.RUNNING, lease_expires_at=now - 61))
    await store.save(record("lost-queued", TaskStatus.QUEUED, lease_expires_at=now - 1000))
    await store.save(record("just-lost", TaskStatus.RUNNING, lease_expires_at=now - 30))
    await store.save(record("leased", TaskStatus.RUNNING, lease_expires_at=now + 30))
    for gone in ("long-lost", "lost-queued"):
        assert await store.load(gone) is None, gone
    just_lost = await store.load("just-lost")
    assert just_lost is not None
    assert just_lost.effective_status(time.time()) is TaskStatus.LOST
    leased = await store.load("leased")
    assert leased is not None and leased.effective_status(time.time()) is TaskStatus.RUNNING


@pytest.mark.parametrize("ttl", [None, 0])
async def test_no_ttl_keeps_records_forever(make: MakeStore, ttl: float | None) -> None:
    store = await make(ttl=ttl)
    await store.save(record(status=TaskStatus.SUCCEEDED, finished_at=time.time() - 1e9))
    assert await store.load("task-1") is not None


# --- close -------------------------------------------------------------------------------


async def test_close_is_idempotent_and_final(store: Store) -> None:
    await store.save(record())
    watch = store.watch("task-1")
    await next_record(watch)
    pending = asyncio.ensure_future(anext(watch))
    await settle()
    await store.close()
    await store.close()
    # A watcher must not mistake the end of the store for the end of the task.
    with pytest.raises(StoreError):
        await asyncio.wait_for(pending, TIMEOUT)
    with pytest.raises(StoreError):
        await store.save(record())
    with pytest.raises(StoreError):
        await store.load("task-1")
    with pytest.raises(StoreError):
        await anext(store.watch("task-1"))


async def test_claims_and_cancels_after_close_raise(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreError):
        await store.claim("task-1", "me", 30)
    with pytest.raises(StoreError):
        await store.release("task-1", "me")
    with pytest.raises(StoreError):
        await store.request_cancel("task-1")
    with pytest.raises(StoreError):
        await store.cancel_requested("task-1")


async def test_close_of_an_unused_store(make: MakeStore) -> None:
    store = await make()
    await store.close()
    await store.close()


async def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


# --- open_store --------------------------------------------------------------------------


async def test_open_store_memory() -> None:
    store = open_store("memory://", ttl=10)
    assert isinstance(store, MemoryStore)
    await store.close()


async def test_open_store_file_absolute(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/tasks?poll_interval=0.5&sweep_interval=30", ttl=10)
    assert isinstance(store, FileStore)
    assert store.directory == tmp_path / "tasks"
    await store.save(record())
    assert (tmp_path / "tasks" / "task-1.json").is_file()
    await store.close()


async def test_open_store_file_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file://./data/tasks", ttl=None)
    assert isinstance(store, FileStore)
    assert store.directory == tmp_path / "data" / "tasks"
    await store.close()


@pytest.mark.parametrize(
    ("url", "prefix", "where"),
    [
        ("redis://localhost:6379/0", "comfyui-agent:", "localhost:6379/0"),
        ("redis://cache", "comfyui-agent:", "cache:6379/0"),
        ("REDIS://:s3cret@cache:6380/2?prefix=fc.prod:&retries=0", "fc.prod:", "cache:6380/2"),
        (
            "rediss://user:s3cret@cache:6380/1?prefix=x:&socket_timeout=2&connect_timeout=1"
            "&keepalive=10&reconnect_limit=5&ssl_cert_reqs=none&ssl_check_hostname=false",
            "x:",
            "cache:6380/1",
        ),
    ],
)
async def test_open_store_redis_builds_without_io(url: str, prefix: str, where: str) -> None:
    store = open_store(url, ttl=10, instance="i-1")
    assert isinstance(store, RedisStore)
    assert store.prefix == prefix
    assert store._where == where  # and never the password
    await store.close()


async def test_open_store_redis_works(redis_target: RedisTarget, tmp_path: Path) -> None:
    prefix = redis_target.prefix_for(tmp_path)
    store = open_store(f"{redis_target.url}?prefix={prefix}&socket_timeout=3", ttl=10)
    try:
        assert isinstance(store, RedisStore) and store.prefix == prefix
        saved = record()
        await store.save(saved)
        assert await store.load("task-1") == saved
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/tasks",
        "tasks",
        "file://",
        "file://nas-host/share/tasks",
        "file://relative/dir",
        "file:///tasks?bogus=1",
        "file:///tasks?poll_interval=fast",
        "memory://somewhere",
        "redis://",
        "redis://:6379/0",
        "redis://host:port/0",
        "redis://host:0/0",
        "redis://host/zero",
        "redis://host/0/1",
        "redis://host/0#frag",
        "redis://host/0?bogus=1",
        "redis://host/0?ssl_cert_reqs=none",
        "rediss://host/0?ssl_cert_reqs=maybe",
        "rediss://host/0?ssl_check_hostname=perhaps",
        "redis://host/0?socket_timeout=0",
        "redis://host/0?socket_timeout=fast",
        "redis://host/0?retries=-1",
        "redis://host/0?retries=1.5",
        "redis://host/0?prefix=a+b",
        "redis://host/0?prefix=a:&prefix=b:",
        "redis://host/0?prefix",
    ],
)
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        open_store(url, ttl=10)
    if url.startswith(("s3:", "tasks")):
        for accepted in ("memory://", "file://", "redis://", "rediss://"):
            assert accepted in str(refused.value)


# --- claims and cancel requests ----------------------------------------------------------


async def test_claim_of_a_free_task(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert isinstance(token, int) and token > 0


async def test_claim_held_by_another_owner_is_refused_while_live(store: Store) -> None:
    assert await store.claim("task-1", "owner-a", 30)
    assert await store.claim("task-1", "owner-b", 30) is None
    assert await store.claim("task-1", "owner-b", 30) is None
    # Claims are per task.
    assert await store.claim("task-2", "owner-b", 30)


async def test_renewal_extends_the_claim(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 0.6)
    assert token is not None
    await asyncio.sleep(0.35)
    assert await store.renew("task-1", "owner-a", token, 0.6)
    await asyncio.sleep(0.35)
    # Past the first lease, within the renewed one.
    assert await store.claim("task-1", "owner-b", 0.6) is None


async def test_expired_claim_goes_to_another_owner(store: Store) -> None:
    assert await store.claim("task-1", "owner-a", 0.1)
    await asyncio.sleep(0.25)
    assert await store.claim("task-1", "owner-b", 30)
    assert await store.claim("task-1", "owner-a", 30) is None


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    won = await asyncio.gather(*(store.claim("task-1", f"owner-{n}", 30) for n in range(16)))
    assert sum(token is not None for token in won) == 1


async def test_release_frees_the_task_for_others(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    await store.release("task-1", token)
    assert await store.claim("task-1", "owner-b", 30)


async def test_release_with_another_token_does_nothing(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    await store.release("task-1", token + 1)
    await store.release("task-1", token - 1)
    assert await store.claim("task-1", "owner-b", 30) is None
    await store.release("never-claimed", 1)  # harmless too


# The file store orders a claim and a final record by their files' mtimes: a run's final
# record comes well after its claim; this gap stands for that on coarse timestamps.
RUN_TIME = 0.03


async def test_a_final_record_ends_the_claim_it_was_saved_under(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    await asyncio.sleep(RUN_TIME)
    await store.save(record(status=TaskStatus.RUNNING, instance="owner-a"), token=token)
    assert await store.claim("task-1", "owner-b", 30) is None, "a progress record ends nothing"
    await store.save(record(status=TaskStatus.FAILED, instance="owner-a"), token=token)
    # Free at once, before the owner's release: another instance may run the task again.
    newer = await store.claim("task-1", "owner-b", 30)
    assert newer is not None and newer > token
    await store.release("task-1", token)  # the owner's late release frees nothing of B's
    assert await store.claim("task-1", "owner-c", 30) is None
    with pytest.raises(ClaimSuperseded):
        await store.save(record(status=TaskStatus.SUCCEEDED, instance="owner-a"), token=token)


async def test_a_claim_renewed_after_its_final_record_is_held_until_released(
    store: Store,
) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    await asyncio.sleep(RUN_TIME)
    await store.save(record(status=TaskStatus.SUCCEEDED, instance="owner-a"), token=token)
    await asyncio.sleep(RUN_TIME)
    assert await store.renew("task-1", "owner-a", token, 30)
    assert await store.claim("task-1", "owner-b", 30) is None
    await store.release("task-1", token)
    assert await store.claim("task-1", "owner-b", 30) is not None


# --- claim tokens (fencing) ----------------------------------------------------------------


async def test_every_claim_gets_a_larger_token(store: Store) -> None:
    first = await store.claim("task-1", "owner-a", 0.1)
    assert first is not None
    await asyncio.sleep(0.25)
    second = await store.claim("task-1", "owner-b", 30)  # take-over of a lapsed claim
    assert second is not None and second > first
    await store.release("task-1", second)
    third = await store.claim("task-1", "owner-c", 30)  # after a release
    assert third is not None and third > second
    fourth = await store.claim("task-1", "owner-c", 30)  # the same owner runs it again
    assert fourth is not None and fourth > third
    # A renewal keeps the token.
    assert await store.renew("task-1", "owner-c", fourth, 30)
    assert await store.claim("task-1", "owner-d", 30) is None


async def test_first_token_is_newer_than_any_a_store_could_have_forgotten(store: Store) -> None:
    before = int(time.time() * 1000)
    token = await store.claim("fresh-task", "owner-a", 30)
    assert token is not None and before <= token <= int(time.time() * 1000) + 1


async def test_fenced_save_with_the_current_token_writes(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    await store.save(record(updated_at=1.0), token=token)
    await store.save(record(updated_at=2.0), token=token)
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.updated_at == 2.0


async def test_take_over_fences_out_the_old_run(store: Store) -> None:
    old = await store.claim("task-1", "owner-a", 0.1)
    assert old is not None
    await store.save(record(instance="owner-a"), token=old)
    await asyncio.sleep(0.25)  # owner-a frozen past its lease
    new = await store.claim("task-1", "owner-b", 30)
    assert new is not None
    await store.save(record(instance="owner-b"), token=new)
    # owner-a wakes up: its writes and renewals are refused and change nothing.
    with pytest.raises(ClaimSuperseded) as refused:
        await store.save(record(instance="owner-a", status=TaskStatus.SUCCEEDED), token=old)
    assert refused.value.token == old and refused.value.current == new
    assert not await store.renew("task-1", "owner-a", old, 30)
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.instance == "owner-b"
    assert loaded.status is TaskStatus.RUNNING
    # Releasing with the old token does not free the new run's claim.
    await store.release("task-1", old)
    assert await store.claim("task-1", "owner-c", 30) is None


async def test_old_run_stays_fenced_after_the_new_run_released(store: Store) -> None:
    old = await store.claim("task-1", "owner-a", 0.1)
    assert old is not None
    await asyncio.sleep(0.25)
    new = await store.claim("task-1", "owner-b", 30)
    assert new is not None
    await store.save(record(status=TaskStatus.SUCCEEDED, instance="owner-b"), token=new)
    await store.release("task-1", new)
    with pytest.raises(ClaimSuperseded):
        await store.save(record(instance="owner-a"), token=old)
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.status is TaskStatus.SUCCEEDED
    # The released run's own late final write still passes: nobody claimed since.
    await store.save(record(status=TaskStatus.FAILED, instance="owner-b"), token=new)


async def test_a_lapsed_claim_nobody_took_over_is_renewed(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 0.1)
    assert token is not None
    await asyncio.sleep(0.25)  # frozen past the lease, but nobody re-ran the task
    assert await store.renew("task-1", "owner-a", token, 30)
    assert await store.claim("task-1", "owner-b", 30) is None  # held again
    await store.save(record(), token=token)


async def test_unfenced_save_always_writes(store: Store) -> None:
    assert await store.claim("task-1", "owner-a", 30)
    await store.save(record(instance="tool"))
    loaded = await store.load("task-1")
    assert loaded is not None and loaded.instance == "tool"


async def test_fenced_save_of_a_task_never_claimed_writes(store: Store) -> None:
    # The store remembers no token (never claimed, or forgotten): nothing to refuse.
    await store.save(record("unclaimed"), token=12345)
    assert await store.load("unclaimed") is not None


async def test_concurrent_take_overs_fence_each_other(store: Store) -> None:
    first = await store.claim("task-1", "owner-a", 0.1)
    assert first is not None
    await asyncio.sleep(0.25)
    won = await asyncio.gather(*(store.claim("task-1", f"owner-{n}", 30) for n in range(8)))
    tokens = [token for token in won if token is not None]
    assert len(tokens) == 1 and tokens[0] > first
    with pytest.raises(ClaimSuperseded):
        await store.save(record(), token=first)


async def test_cancel_is_not_requested_by_default(store: Store) -> None:
    assert not await store.cancel_requested("task-1")
    assert await store.claim("task-1", "owner-a", 30)
    assert not await store.cancel_requested("task-1")


async def test_new_claim_clears_a_cancel_request_renewal_keeps_it(store: Store) -> None:
    await store.request_cancel("task-1")
    assert await store.cancel_requested("task-1")
    assert await store.claim("task-1", "owner-a", 30)  # new: starts clean
    assert not await store.cancel_requested("task-1")
    await store.request_cancel("task-1")
    await store.request_cancel("task-1")  # asking twice is asking once
    token = await store.claim("task-1", "owner-a", 30)  # a new run: starts clean
    assert token is not None and not await store.cancel_requested("task-1")
    await store.request_cancel("task-1")
    assert await store.renew("task-1", "owner-a", token, 30)  # renewal: the request stands
    assert await store.cancel_requested("task-1")
    assert await store.claim("task-1", "owner-b", 30) is None  # refused: changes nothing
    assert await store.cancel_requested("task-1")
    await store.release("task-1", token)
    assert await store.claim("task-1", "owner-b", 30)  # new again
    assert not await store.cancel_requested("task-1")


async def test_taking_over_an_expired_claim_clears_a_cancel_request(store: Store) -> None:
    assert await store.claim("task-1", "owner-a", 0.1)
    await store.request_cancel("task-1")
    await asyncio.sleep(0.25)
    assert await store.cancel_requested("task-1")  # the run it was for may still be ending
    assert await store.claim("task-1", "owner-b", 30)
    assert not await store.cancel_requested("task-1")


async def test_cancel_request_for_an_unknown_task_is_harmless(store: Store) -> None:
    await store.request_cancel("nobody")
    assert await store.load("nobody") is None
    assert await store.cancel_requested("nobody")
    assert await store.claim("nobody", "owner-a", 30)
    assert not await store.cancel_requested("nobody")


async def test_cancel_requests_are_per_task(store: Store) -> None:
    await store.request_cancel("task-1")
    assert not await store.cancel_requested("task-2")


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
async def test_invalid_ids_are_refused_by_claims_and_cancels(
    store: Store, kind: str, tmp_path: Path, target: RedisTarget | None, bad_id: str
) -> None:
    with pytest.raises(InvalidTaskId):
        await store.claim(bad_id, "owner-a", 30)
    with pytest.raises(InvalidTaskId):
        await store.renew(bad_id, "owner-a", 1, 30)
    with pytest.raises(InvalidTaskId):
        await store.release(bad_id, 1)
    with pytest.raises(InvalidTaskId):
        await store.save(record(bad_id), token=1)
    with pytest.raises(InvalidTaskId):
        await store.request_cancel(bad_id)
    with pytest.raises(InvalidTaskId):
        await store.cancel_requested(bad_id)
    assert stored_names(kind, store, tmp_path, redis_target=target) == set()


@pytest.mark.parametrize(
    ("owner", "lease"),
    [("", 30), ("owner-a", 0), ("owner-a", -1), ("owner-a", float("nan")), ("a", float("inf"))],
)
async def test_bad_claim_arguments_are_refused(
    store: Store,
    kind: str,
    tmp_path: Path,
    target: RedisTarget | None,
    owner: str,
    lease: float,
) -> None:
    with pytest.raises(ValueError):
        await store.claim("task-1", owner, lease)
    with pytest.raises(ValueError):
        await store.renew("task-1", owner, 1, lease)
    assert stored_names(kind, store, tmp_path, redis_target=target) == set()


# --- the file store's claims on disk -----------------------------------------------------


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[FileStore]:
    opened = FileStore(tmp_path / "tasks", ttl=60, sweep_interval=3600)
    yield opened
    await opened.close()


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))


async def test_file_claims_and_cancels_live_in_their_own_directory(file_store: FileStore) -> None:
    await file_store.save(record())
    token = await file_store.claim("task-1", "owner-a", 30)
    await file_store.request_cancel("task-1")
    claims = file_store.directory / ".claims"
    files = {p.name for p in file_store.directory.iterdir() if not p.name.startswith(".spare.")}
    assert files == {"task-1.json", ".claims"}
    assert {p.name for p in claims.iterdir()} == {"task-1.claim", "task-1.cancel"}
    claim = json.loads((claims / "task-1.claim").read_text())
    assert claim["owner"] == "owner-a" and claim["expires_at"] > time.time() + 29
    assert claim["token"] == token
    assert token is not None
    await file_store.release("task-1", token)
    # Released: expired, but its token is kept (the fence).
    claim = json.loads((claims / "task-1.claim").read_text())
    assert claim["expires_at"] <= time.time() and claim["token"] == token


async def test_file_claims_without_hard_links(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: Any, target: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    won = await asyncio.gather(*(file_store.claim("task-1", f"o-{n}", 30) for n in range(8)))
    assert sum(token is not None for token in won) == 1
    assert not any(p.name.endswith(".tmp") for p in (file_store.directory / ".claims").iterdir())


async def test_file_claim_being_written_counts_as_held_then_as_garbage(
    file_store: FileStore,
) -> None:
    await file_store.request_cancel("task-1")  # creates the directory
    path = file_store.directory / ".claims" / "task-1.claim"
    path.write_bytes(b"")  # what O_EXCL creation shows before its write lands
    assert not await file_store.claim("task-1", "owner-a", 30)
    then = time.time() - 60
    os.utime(path, (then, then))
    assert await file_store.claim("task-1", "owner-a", 30)
    assert json.loads(path.read_text())["owner"] == "owner-a"


async def test_file_sweep_removes_expired_claims_and_cancel_requests(
    file_store: FileStore,
) -> None:
    now = time.time()
    claims = file_store.directory / ".claims"
    for task_id in ("old", "recent", "live", "lost"):
        assert await file_store.claim(task_id, "owner-a", 30)
        await file_store.request_cancel(task_id)
    claim = {"owner": "a", "token": 7, "nonce": "n"}
    write_json(claims / "old.claim", {**claim, "expires_at": now - 120})
    write_json(claims / "recent.claim", {**claim, "expires_at": now - 5})
    # An old claim whose task is still kept stays: its token fences the task.
    await file_store.save(record("kept"))
    write_json(claims / "kept.claim", {**claim, "expires_at": now - 120})
    write_json(claims / "old.cancel", {"requested_at": now - 100, "expires_at": now - 40})
    # A task whose record expires takes its cancel request along.
    await file_store.save(record("lost", TaskStatus.RUNNING, lease_expires_at=now - 20_000))
    age = now - 20_000
    os.utime(file_store.directory / "lost.json", (age, age))
    stale_temp = claims / ".old.0123.tmp"
    stale_temp.write_text("{")
    os.utime(stale_temp, (age, age))
    (claims / "notes.txt").write_text("left alone")

    assert await file_store.sweep() == 5
    assert {p.name for p in claims.iterdir()} == {
        "recent.claim",  # expired, but within CLAIM_SWEEP_GRACE
        "recent.cancel",
        "live.claim",
        "live.cancel",
        "lost.claim",
        "kept.claim",
        "notes.txt",
    }
    assert not await file_store.cancel_requested("old")
    assert await file_store.cancel_requested("recent")
    assert await file_store.claim("old", "owner-b", 30)
    assert await file_store.sweep() == 0


async def test_file_expired_cancel_request_is_not_reported(file_store: FileStore) -> None:
    await file_store.request_cancel("task-1")
    marker = file_store.directory / ".claims" / "task-1.cancel"
    write_json(marker, {"requested_at": 1.0, "expires_at": 2.0})
    assert not await file_store.cancel_requested("task-1")
    marker.write_text("garbage")  # somebody asked, even if we cannot read when
    assert await file_store.cancel_requested("task-1")


# --- once-markers ------------------------------------------------------------------------


async def test_mark_once_is_true_only_the_first_time(store: Store) -> None:
    assert await store.mark_once("task-1", "webhook_succeeded")
    assert not await store.mark_once("task-1", "webhook_succeeded")
    assert await store.mark_once("task-1", "webhook_failed")  # markers are per name
    assert await store.mark_once("task-2", "webhook_succeeded")  # and per task


async def test_mark_once_is_independent_of_claims(store: Store) -> None:
    token = await store.claim("task-1", "owner-a", 30)
    assert token is not None
    assert await store.mark_once("task-1", "webhook_succeeded")
    await store.release("task-1", token)
    assert await store.claim("task-1", "owner-b", 30)  # a new claim clears no marker
    assert not await store.mark_once("task-1", "webhook_succeeded")


async def test_concurrent_marks_have_one_winner(make: MakeStore, kind: str) -> None:
    first = await make()
    # Two instances on one backend (a memory store is one process's only).
    second = first if kind == "memory" else await make()
    results = await asyncio.gather(
        *(s.mark_once("task-1", "webhook_succeeded") for s in (first, second) * 4)
    )
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize("name", ["", "Upper", "has-dash", "a" * 33, "1st", "a/b", "a:b"])
async def test_mark_once_refuses_bad_names(store: Store, name: str) -> None:
    with pytest.raises(ValueError):
        await store.mark_once("task-1", name)
    with pytest.raises(InvalidTaskId):
        await store.mark_once("../x", "webhook")


async def test_file_sweep_removes_expired_marks(file_store: FileStore) -> None:
    assert await file_store.mark_once("old", "webhook")
    assert await file_store.mark_once("live", "webhook")
    claims = file_store.directory / ".claims"
    write_json(claims / "old.webhook.mark", {"expires_at": time.time() - 10})
    assert await file_store.sweep() == 1
    assert {p.name for p in claims.iterdir()} == {"live.webhook.mark"}
    assert await file_store.mark_once("old", "webhook")


async def test_file_take_over_marker_of_a_crashed_instance_is_broken_when_stale(
    file_store: FileStore,
) -> None:
    old = await file_store.claim("task-1", "owner-a", 0.1)
    assert old is not None
    await asyncio.sleep(0.25)
    claims = file_store.directory / ".claims"
    judged = (claims / "task-1.claim").read_bytes()
    digest = hashlib.sha256(judged).hexdigest()[:32]
    marker = claims / f".task-1.{digest}.take"
    marker.write_bytes(b"")  # an instance crashed in the middle of rewriting this version
    assert await file_store.claim("task-1", "owner-b", 30) is None, "a fresh marker holds"
    assert not await file_store.renew("task-1", "owner-a", old, 30)
    then = time.time() - 60
    os.utime(marker, (then, then))
    new = await file_store.claim("task-1", "owner-b", 30)
    assert new is not None and new > old
    assert {p.name for p in claims.iterdir()} == {"task-1.claim"}, "markers are cleaned up"


async def test_file_claim_rewrites_leave_no_markers(file_store: FileStore) -> None:
    token = await file_store.claim("task-1", "owner-a", 30)
    assert token is not None
    for _ in range(3):
        assert await file_store.renew("task-1", "owner-a", token, 30)
    await file_store.release("task-1", token)
    assert {p.name for p in (file_store.directory / ".claims").iterdir()} == {"task-1.claim"}
