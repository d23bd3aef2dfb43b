"""RedisStore specifics: push to other instances, one pub/sub connection, TTLs, outages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from store import NodeProgress, RedisStore, StoreError, TaskRecord, TaskStatus
from store.redis_channel import Channel
from tests.store_factories import RedisServer, RedisTarget

TIMEOUT = 10.0  # an upper bound only
# A polling store would need at least this long between polls to be cheap; pushes arrive
# in about a millisecond.
PUSH_BOUND = 0.2

OpenStore = Callable[..., RedisStore]


def record(
    task_id: str = "task-1", status: TaskStatus = TaskStatus.RUNNING, **fields: Any
) -> TaskRecord:
    return TaskRecord(task_id=task_id, status=status, **fields)


def done(task_id: str = "task-1") -> TaskRecord:
    return record(task_id, TaskStatus.SUCCEEDED, finished_at=time.time())


@pytest.fixture
async def stores(
    redis_target: RedisTarget, tmp_path: Path
) -> AsyncIterator[Callable[..., RedisStore]]:
    """Open RedisStores on the session's server (each one stands for an instance)."""
    opened: list[RedisStore] = []

    def _open(url: str | None = None, **options: Any) -> RedisStore:
        options = {"ttl": 60.0, "prefix": redis_target.prefix_for(tmp_path), **options}
        opened.append(RedisStore(url or redis_target.url, **options))
        return opened[-1]

    yield _open
    for opened_store in opened:
        await opened_store.close()


@pytest.fixture
async def client(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A plain client on the session's server, to look behind the store's back."""
    plain = Redis.from_url(redis_target.url, protocol=2)
    yield plain
    await plain.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server this test may kill and restart."""
    private = RedisServer(tmp_path / "redis")
    private.start()
    yield private
    private.kill()


async def next_record(watch: AsyncIterator[TaskRecord]) -> TaskRecord:
    return await asyncio.wait_for(anext(watch), TIMEOUT)


async def pubsub_clients(client: Redis, name: str) -> list[dict[str, Any]]:
    """CLIENT LIST entries of the connections named name that are subscribed to something."""
    return [c for c in await client.client_list() if c["name"] == name and int(c["sub"]) > 0]


# --- push to other instances -------------------------------------------------------------


async def test_another_instance_watching_is_pushed_each_save(stores: OpenStore) -> None:
    owner, other = stores(instance="owner"), stores(instance="watcher")
    watch = other.watch("task-1")
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)  # let the watch subscribe before the task exists
    await owner.save(record(status=TaskStatus.QUEUED))
    assert (await asyncio.wait_for(pending, TIMEOUT)).status is TaskStatus.QUEUED
    delays = []
    for value in range(1, 6):
        started = time.perf_counter()
        await owner.save(record(progress={"7": NodeProgress(max=5, value=value)}))
        seen = await next_record(watch)
        delays.append(time.perf_counter() - started)
        assert seen.progress["7"].value == value
    assert max(delays) < PUSH_BOUND, delays
    await owner.save(done())
    assert (await next_record(watch)).status is TaskStatus.SUCCEEDED
    with pytest.raises(StopAsyncIteration):
        await next_record(watch)


async def test_watchers_never_see_a_record_go_back_in_time(stores: OpenStore) -> None:
    owner = stores()
    # Separate stores (instances), so each follower subscribes and syncs mid-stream.
    others = [stores() for _ in range(12)]
    writes = 300

    async def write() -> None:
        for n in range(1, writes + 1):
            await owner.save(record(progress={"1": NodeProgress(max=writes, value=n)}))
            if n % 10 == 0:
                await asyncio.sleep(0)
        await owner.save(done().model_copy(update={"progress": {"1": NodeProgress(value=-1)}}))

    async def follow(other: RedisStore, start_after: float) -> list[int]:
        await asyncio.sleep(start_after)
        values = []
        async for seen in other.watch("task-1"):
            values.append(seen.progress["1"].value if "1" in seen.progress else 0)
        return values

    followers = [asyncio.create_task(follow(others[n % len(others)], n * 0.004)) for n in range(36)]
    await owner.save(record())
    await write()
    for values in await asyncio.wait_for(asyncio.gather(*followers), TIMEOUT):
        assert values[-1] == -1  # every watcher got to the end...
        progress = values[:-1]
        assert progress == sorted(set(progress)), progress  # ...never going back, no repeats


def test_sync_marker_orders_the_read_and_the_messages() -> None:
    channel = Channel("p:task:t", b"p:task:t", 0.0)
    versions: list[bytes | None] = []

    def latest() -> list[bytes | None]:
        if not versions or versions[-1] != channel.latest:
            versions.append(channel.latest)
        return versions

    # The read's reply arrives first; a message published before the read is still queued.
    marker = channel.begin_sync()
    channel.end_sync(marker, b"v5")
    latest()
    channel.receive(b"v4")  # older than the read: dropped
    channel.receive(b"\x00sync:someone-else")  # another instance's marker: ignored
    channel.receive(marker)
    channel.receive(b"v6")
    assert latest() == [b"v5", b"v6"] and channel.ready

    # After a reconnect the marker may come back before the reply does.
    marker = channel.begin_sync()
    channel.receive(b"v6")  # older than the read
    channel.receive(marker)
    channel.receive(b"v8")  # newer than the read
    channel.end_sync(marker, b"v7")  # so the read's (older) value is not used
    assert latest() == [b"v5", b"v6", b"v8"]
    channel.receive(b"v9")
    assert latest() == [b"v5", b"v6", b"v8", b"v9"]

    # A superseded sync's reply changes nothing.
    stale = channel.begin_sync()
    fresh = channel.begin_sync()
    channel.end_sync(stale, b"v1")
    channel.end_sync(fresh, b"v9")
    assert channel.latest == b"v9"


# --- one pub/sub connection --------------------------------------------------------------


async def test_many_watchers_share_one_pubsub_connection(stores: OpenStore, client: Redis) -> None:
    name = f"watchers-{uuid.uuid4().hex[:8]}"
    owner, watching = stores(), stores(instance=name)
    tasks = [f"task-{n}" for n in range(100)]
    for task_id in tasks:
        await owner.save(record(task_id, status=TaskStatus.QUEUED))
    watches = [watching.watch(task_id) for task_id in tasks for _ in range(2)]
    firsts = await asyncio.gather(*(next_record(watch) for watch in watches))
    assert all(first.status is TaskStatus.QUEUED for first in firsts)

    assert watching.subscribed_channels == 100
    connections = await pubsub_clients(client, name)
    assert len(connections) == 1 and int(connections[0]["sub"]) == 100, connections

    for task_id in tasks:
        await owner.save(record(task_id, instance="owner"))
    seconds = await asyncio.gather(*(next_record(watch) for watch in watches))
    assert all(second.instance == "owner" for second in seconds)

    await asyncio.gather(*(watch.aclose() for watch in watches))
    assert watching.subscribed_channels == 0
    deadline = time.monotonic() + TIMEOUT
    while await pubsub_clients(client, name):
        assert time.monotonic() < deadline, "the channels were not unsubscribed"
        await asyncio.sleep(0.01)


async def test_instance_names_the_connections(stores: OpenStore, client: Redis) -> None:
    tag = uuid.uuid4().hex[:8]
    named = stores(instance=f"gpu node {tag}\n")
    await named.save(record())
    watch = named.watch("task-1")
    await next_record(watch)
    names = [c["name"] for c in await client.client_list()]
    assert names.count(f"gpu_node_{tag}_") == 2  # the data connection and the pub/sub one
    await watch.aclose()


async def test_a_client_passed_in_is_used_and_left_open(
    redis_target: RedisTarget, tmp_path: Path
) -> None:
    # redis-py's defaults (RESP3), and decoded responses: the store copes with both.
    given = Redis.from_url(redis_target.url, decode_responses=True)
    try:
        shared = RedisStore(given, ttl=60, prefix=redis_target.prefix_for(tmp_path))
        saved = record(instance="given")
        await shared.save(saved)
        assert await shared.load("task-1") == saved
        watch = shared.watch("task-1")
        assert await next_record(watch) == saved
        await shared.save(done())
        assert (await next_record(watch)).status is TaskStatus.SUCCEEDED
        assert await shared.claim("task-1", "me", 30)
        await shared.close()
        assert await given.ping()
    finally:
        await given.aclose()


# --- keys and TTLs -----------------------------------------------------------------------


async def test_keys_carry_their_ttl(stores: OpenStore, client: Redis) -> None:
    store = stores(ttl=100)
    key = f"{store.prefix}task:"
    now = time.time()
    await store.save(record("finished", TaskStatus.FAILED, finished_at=now))
    await store.save(record("leased", lease_expires_at=now + 30))
    await store.save(record("unleased", TaskStatus.QUEUED))
    await store.save(record("gone", TaskStatus.SUCCEEDED, finished_at=now - 101))
    assert 98_000 < await client.pttl(key + "finished") <= 100_000
    assert 128_000 < await client.pttl(key + "leased") <= 130_000
    assert 86_498_000 < await client.pttl(key + "unleased") <= 86_500_000
    assert not await client.exists(key + "gone")

    # Saving a record past its TTL removes what was there.
    await store.save(record("finished", TaskStatus.FAILED, finished_at=now - 200))
    assert not await client.exists(key + "finished")

    assert await store.claim("leased", "me", 20)
    assert 19_000 < await client.pttl(f"{store.prefix}claim:leased") <= 20_000
    await store.request_cancel("leased")
    assert 98_000 < await client.pttl(f"{store.prefix}cancel:leased") <= 100_000


async def test_no_ttl_means_no_expiry_except_for_cancel_requests(
    stores: OpenStore, client: Redis
) -> None:
    store = stores(ttl=None)
    await store.save(record(status=TaskStatus.SUCCEEDED, finished_at=time.time() - 1e6))
    assert await client.pttl(f"{store.prefix}task:task-1") == -1
    await store.request_cancel("task-1")
    assert 86_398_000 < await client.pttl(f"{store.prefix}cancel:task-1") <= 86_400_000


async def test_a_foreign_value_is_a_store_error(stores: OpenStore, client: Redis) -> None:
    store = stores()
    key = f"{store.prefix}task:task-1"
    await client.set(key, b"not json")
    with pytest.raises(StoreError, match=key):
        await store.load("task-1")
    with pytest.raises(StoreError, match=key):
        await next_record(store.watch("task-1"))
    await client.set(key, record("someone-else").to_json())
    with pytest.raises(StoreError, match="someone-else"):
        await store.load("task-1")


async def test_only_keys_under_the_prefix_are_touched(server: RedisServer) -> None:
    plain = Redis.from_url(server.url, protocol=2)
    store = RedisStore(server.url, ttl=60, prefix="mine:")
    try:
        foreign = {"theirs:task:task-1": b"a", "task:task-1": b"b", "comfyui-agent:task:x": b"c"}
        for key, value in foreign.items():
            await plain.set(key, value)
        await store.save(record())
        watch = store.watch("task-1")
        await next_record(watch)
        token = await store.claim("task-1", "me", 30)
        assert token is not None
        await store.request_cancel("task-1")
        await store.save(done(), token=token)
        await next_record(watch)
        await store.release("task-1", token)
        keys = {key.decode() if isinstance(key, bytes) else key for key in await plain.keys("*")}
        assert keys == {*foreign, "mine:task:task-1", "mine:cancel:task-1", "mine:fence:task-1"}
        for key, value in foreign.items():
            assert await plain.get(key) == value
    finally:
        await store.close()
        await plain.aclose()


# --- connection loss ---------------------------------------------------------------------


async def test_server_restart_fails_calls_fast_then_everything_resumes(
    server: RedisServer,
) -> None:
    owner = RedisStore(server.url, ttl=60, prefix="loss:")
    other = RedisStore(server.url, ttl=60, prefix="loss:")
    try:
        await owner.save(record(instance="before"))
        watch = other.watch("task-1")
        assert (await next_record(watch)).instance == "before"
        pending = asyncio.ensure_future(anext(watch))

        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreError, match="unreachable while saving task task-1"):
            await owner.save(record(instance="during"))
        assert time.monotonic() - started < 6
        with pytest.raises(StoreError, match="unreachable"):
            await other.load("task-1")
        assert not pending.done()  # the running watch waits for Redis to come back

        server.start()  # same port, empty (no persistence)
        await owner.save(record(instance="after"))  # the same store object reconnects
        # The watch resumed: resubscribed, and resynced what changed in the gap.
        assert (await asyncio.wait_for(pending, TIMEOUT)).instance == "after"
        loaded = await other.load("task-1")
        assert loaded is not None and loaded.instance == "after"
        await owner.save(done())
        assert (await next_record(watch)).status is TaskStatus.SUCCEEDED
    finally:
        await owner.close()
        await other.close()


async def test_a_watch_gives_up_when_redis_stays_away(server: RedisServer) -> None:
    store = RedisStore(server.url, ttl=60, prefix="gone:", reconnect_limit=0.5)
    try:
        await store.save(record())
        watch = store.watch("task-1")
        await next_record(watch)
        pending = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.05)
        server.kill()
        started = time.monotonic()
        with pytest.raises(StoreError, match="lost redis"):
            await asyncio.wait_for(pending, TIMEOUT)
        assert time.monotonic() - started < 4
        # A new watch of a store whose Redis is back works again.
        server.start()
        await store.save(record(instance="back"))
        assert (await next_record(store.watch("task-1"))).instance == "back"
    finally:
        await store.close()


async def test_a_dropped_pubsub_connection_resyncs_what_it_missed(
    stores: OpenStore, client: Redis
) -> None:
    name = f"dropped-{uuid.uuid4().hex[:8]}"
    owner, watching = stores(), stores(instance=name)
    await owner.save(record(instance="v1"))
    watch = watching.watch("task-1")
    assert (await next_record(watch)).instance == "v1"
    (connection,) = await pubsub_clients(client, name)
    assert await client.client_kill_filter(_id=connection["id"]) == 1
    # Published while the watcher is disconnected: only the resync can deliver it.
    await owner.save(record(instance="v2"))
    assert (await next_record(watch)).instance == "v2"
    await owner.save(record(instance="v3"))
    assert (await next_record(watch)).instance == "v3"
    await watch.aclose()


async def test_close_ends_running_watches_and_the_reader(stores: OpenStore) -> None:
    store = stores()
    await store.save(record())
    watch = store.watch("task-1")
    await next_record(watch)
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.01)
    reader = store._reader
    assert reader is not None and not reader.done()
    await store.close()
    assert reader.done()
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(pending, TIMEOUT)
