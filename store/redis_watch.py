"""Watches of a Redis store: one shared pub/sub connection, channels synced with the records.

All watches of one store share a single pub/sub connection, read by one background task
that hands each message to the channel it concerns. A channel is "synced" when the server
confirms its subscription: a small script reads the record and publishes a marker on the
channel in one atomic step, so messages that arrive before the marker are older than what
the read returned and are dropped, and those after it are newer. Watchers therefore never
see a record go back in time, neither at start nor after a reconnect.

Connection loss: the pub/sub reader reconnects with back-off for as long as the store is
open, then resubscribes and resyncs every channel, so running watches resume and yield
whatever changed during the gap. A watch that cannot follow its task for longer than
reconnect_limit seconds raises StoreError instead of waiting on a dead server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.base import StoreError
from store.records import TaskRecord
from store.redis_channel import Channel
from store.redis_connection import describe, subscriber_connection

logger = logging.getLogger("store.redis")

_RECONNECT_FIRST_DELAY = 0.05
_RECONNECT_MAX_DELAY = 2.0

# KEYS[1] task key. ARGV[1] channel, ARGV[2] marker. Read and mark in one atomic step.
_SYNC_SCRIPT = """
local value = redis.call('GET', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return value
"""


class RedisWatch:
    """The watch side of RedisStore: the pub/sub reader and the channels it follows.

    A base class of store.redis.RedisStore, which gives each watch its channel's key.
    """

    def __init__(
        self,
        redis: Redis,
        client_name: str | None,
        *,
        reconnect_limit: float,
        keepalive: float,
    ) -> None:
        self._where = describe(redis)
        self._subscriber = subscriber_connection(redis, client_name)
        self._sync_script = redis.register_script(_SYNC_SCRIPT)
        self._reconnect_limit = reconnect_limit
        self._keepalive = keepalive
        self._channels: dict[bytes, Channel] = {}
        self._wanted = asyncio.Event()
        self._live = False
        self._ping_outstanding = False
        self._reconnect_delay = _RECONNECT_FIRST_DELAY
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def subscribed_channels(self) -> int:
        """How many task channels the shared pub/sub connection follows now."""
        return len(self._channels)

    def _use(self) -> None:
        """Refuse work after close; start the pub/sub reader (idle until a watch) on first use."""
        self._check_open()
        if self._reader is None:
            self._reader = asyncio.create_task(
                self._read_forever(), name=f"RedisStore pub/sub {self._where}"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"redis store {self._where} is closed")

    async def _stop_watching(self) -> None:
        """End every watch (they raise StoreError), the reader and the pub/sub connection."""
        for channel in self._channels.values():
            channel.cancel_sync()
            channel.wake()
        self._channels.clear()
        if self._reader is not None:
            self._reader.cancel()
            # wait() rather than await: it does not re-raise the reader's CancelledError.
            await asyncio.wait([self._reader])
        await self._subscriber.disconnect(nowait=True)

    # --- watch ---------------------------------------------------------------------------

    async def _watch(self, task_id: str, key: str) -> AsyncGenerator[TaskRecord, None]:
        self._use()
        event = asyncio.Event()
        channel = await self._join(key, event)
        try:
            seen = 0
            while True:
                # Cleared before looking, so a change while the consumer holds the previous
                # record still wakes us.
                event.clear()
                self._check_open()
                if channel.error is not None:
                    raise StoreError(str(channel.error))
                # Only the newest version counts: several changes while the consumer was
                # busy yield once.
                if channel.ready and channel.version != seen:
                    seen = channel.version
                    if channel.latest is not None:
                        record = parse_record(task_id, channel.key, channel.latest)
                        yield record
                        if record.status.is_terminal:
                            return
                await event.wait()
        finally:
            await self._leave(channel, event)

    async def _join(self, key: str, event: asyncio.Event) -> Channel:
        name = key.encode()
        channel = self._channels.get(name)
        if channel is not None:
            channel.watchers.add(event)
            return channel
        channel = Channel(key, name, asyncio.get_running_loop().time())
        # Registered before any await, so a watcher of the same task leaving meanwhile
        # cannot drop the channel under us.
        channel.watchers.add(event)
        self._channels[name] = channel
        if self._live:
            await self._send_subscription("SUBSCRIBE", name)
        else:
            # The reader subscribes every wanted channel once it is connected.
            self._wanted.set()
        return channel

    async def _leave(self, channel: Channel, event: asyncio.Event) -> None:
        channel.watchers.discard(event)
        if channel.watchers or self._channels.get(channel.name) is not channel:
            return
        del self._channels[channel.name]
        channel.cancel_sync()
        if not self._closed:
            await self._send_subscription("UNSUBSCRIBE", channel.name)

    async def _send_subscription(self, command: str, name: bytes) -> None:
        connection = self._subscriber
        # Only while the reader has the connection up: checking is_connected right before
        # the call keeps redis-py from reconnecting it here, behind the reader's back.
        if not (self._live and connection.is_connected):
            return
        try:
            await connection.send_command(command, name, check_health=False)
        except (RedisError, OSError) as exc:
            # redis-py dropped the connection; the reader notices, reconnects and
            # subscribes whatever is wanted then.
            logger.debug("%s %r on %s failed: %s", command, name, self._where, exc)

    def _fail(self, channel: Channel, error: StoreError) -> None:
        channel.error = error
        channel.cancel_sync()
        if self._channels.get(channel.name) is channel:
            del self._channels[channel.name]
        channel.wake()

    # --- the pub/sub reader ----------------------------------------------------------------

    async def _read_forever(self) -> None:
        connection = self._subscriber
        outage_logged = False
        while True:
            if not self._channels and not connection.is_connected:
                # Nothing to follow: stay disconnected until a watch starts.
                self._wanted.clear()
                await self._wanted.wait()
                continue
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                self._live = True
                self._ping_outstanding = False
                # Taken in the same step as going live: a channel added later is
                # subscribed by its watcher, one added before is in this list.
                names = list(self._channels)
                if names:
                    await connection.send_command("SUBSCRIBE", *names, check_health=False)
                if outage_logged:
                    logger.warning("redis pub/sub at %s is back", self._where)
                    outage_logged = False
                await self._read_until_lost(connection)
            except asyncio.CancelledError:
                self._live = False
                raise
            except Exception as exc:
                self._live = False
                await connection.disconnect(nowait=True)
                now = asyncio.get_running_loop().time()
                for channel in list(self._channels.values()):
                    channel.lose(now)
                    if now - channel.lost_since(now) > self._reconnect_limit:
                        self._fail(channel, self._outage_error(channel, exc))
                if not isinstance(exc, RedisError | OSError):
                    logger.exception("redis pub/sub reader at %s failed", self._where)
                elif not outage_logged:
                    logger.warning("redis pub/sub at %s lost: %s; reconnecting", self._where, exc)
                    outage_logged = True
                await asyncio.sleep(self._reconnect_delay)
                self._reconnect_delay = min(self._reconnect_delay * 2, _RECONNECT_MAX_DELAY)

    async def _read_until_lost(self, connection: AbstractConnection) -> None:
        while True:
            try:
                response = await connection.read_response(
                    timeout=self._keepalive, disconnect_on_error=False, disable_decoding=True
                )
            except ResponseError as exc:
                # An error reply can only answer our SUBSCRIBE (e.g. an ACL refusing the
                # channel): the channels still waiting for their first sync cannot start.
                for channel in list(self._channels.values()):
                    if not channel.ready:
                        self._fail(channel, StoreError(f"redis refused to subscribe: {exc}"))
                continue
            if response is None:
                if self._ping_outstanding:
                    raise RedisTimeoutError(
                        f"no answer to PING within {self._keepalive} s on the pub/sub connection"
                    )
                self._ping_outstanding = True
                await connection.send_command("PING", check_health=False)
                continue
            self._ping_outstanding = False
            # Reset only once the server answered: one that accepts connections and drops
            # them at once still gets the full back-off.
            self._reconnect_delay = _RECONNECT_FIRST_DELAY
            resubscribe = self._dispatch(response)
            if resubscribe is not None:
                await connection.send_command("SUBSCRIBE", resubscribe, check_health=False)

    def _dispatch(self, response: Any) -> bytes | None:
        """Hand one pub/sub reply to its channel; return a channel to subscribe again."""
        if not isinstance(response, list) or len(response) < 3:
            return None  # PONG
        kind, payload = response[0], response[2]
        name: bytes = response[1]
        channel = self._channels.get(name)
        if channel is None:
            return None  # a late message for a watch that ended
        if kind == b"message":
            channel.receive(payload)
        elif kind == b"subscribe":
            # A new subscription, or a resubscription after a reconnect: read the current
            # record so nothing published before (or during the gap) is missed.
            self._start_sync(channel)
        elif kind == b"unsubscribe":
            # A watch ended and a new one started for the same task before this arrived.
            return name
        return None

    def _start_sync(self, channel: Channel) -> None:
        channel.cancel_sync()
        # The marker is set now, not when the task first runs: messages the reader hands
        # over meanwhile are older than the coming read and must be dropped.
        marker = channel.begin_sync()
        channel.sync_task = asyncio.create_task(self._sync(channel, marker))

    async def _sync(self, channel: Channel, marker: bytes) -> None:
        delay = _RECONNECT_FIRST_DELAY
        while True:
            try:
                value = await self._sync_script(keys=[channel.key], args=[channel.name, marker])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                now = asyncio.get_running_loop().time()
                if now - channel.lost_since(now) > self._reconnect_limit:
                    self._fail(channel, self._outage_error(channel, exc))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_DELAY)
                marker = channel.begin_sync()
                continue
            except RedisError as exc:
                self._fail(channel, StoreError(f"redis at {self._where} failed to read: {exc}"))
                return
            channel.end_sync(marker, None if value is None else as_bytes(value))
            return

    def _outage_error(self, channel: Channel, exc: BaseException) -> StoreError:
        return StoreError(
            f"lost redis at {self._where} for more than {self._reconnect_limit} s while"
            f" watching {channel.key}: {exc}"
        )


def parse_record(task_id: str, key: str, data: bytes) -> TaskRecord:
    """The record stored under key; StoreError when it is not task_id's record."""
    try:
        record = TaskRecord.from_json(data)
    except ValidationError as exc:
        raise StoreError(f"redis key {key} does not hold a task record: {exc}") from exc
    if record.task_id != task_id:
        raise StoreError(f"redis key {key} holds task {record.task_id!r}, not {task_id!r}")
    return record


def as_bytes(value: Any) -> bytes:
    """A reply as bytes."""
    # A client passed in may decode responses.
    return value.encode() if isinstance(value, str) else bytes(value)
