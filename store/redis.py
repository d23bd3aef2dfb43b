"""Task store in Redis, shared by every instance that points at the same server.

Keys (all under the store's prefix, nothing else is touched):

- ``{prefix}task:{id}``: the record's JSON, with a TTL (see RedisStore._expiry_ms).
- ``{prefix}claim:{id}``: ``"<token>:<owner>"`` of the claim, expiring with its lease.
- ``{prefix}fence:{id}``: the task's current claim token (see store.redis_scripts).
- ``{prefix}cancel:{id}``: present while an interrupt of the task is requested.
- ``{prefix}mark:{name}:{id}``: a once-marker (mark_once), set with NX, kept for the task TTL.

Every save also publishes the record's JSON on the channel ``{prefix}task:{id}`` in the
same script, so watchers on any instance are pushed each change; a save carrying a claim
token is refused in that script when the token is not the current one (check-and-set).
Pub/sub channels are not per database: stores that share a server (any db) must not share a prefix.

All watches of one store share a single pub/sub connection, read by one background task
that hands each message to the channel it concerns. A channel is "synced" when the server
confirms its subscription: a small script reads the record and publishes a marker on the
channel in one atomic step, so messages that arrive before the marker are older than what
the read returned and are dropped, and those after it are newer. Watchers therefore never
see a record go back in time, neither at start nor after a reconnect.

Connection loss: commands raise StoreError once redis-py's retries are spent (a few
seconds at most with the default timeouts); the client reconnects by itself on the next
call. The pub/sub reader reconnects with back-off for as long as the store is open, then
resubscribes and resyncs every channel, so running watches resume and yield whatever
changed during the gap. A watch that cannot follow its task for longer than
reconnect_limit seconds raises StoreError instead of waiting on a dead server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import redis_scripts
from store.base import ClaimSuperseded, StoreError, validate_marker_name, validate_task_id
from store.common import cancel_ttl, check_claim, check_ttl, expires_at
from store.fencing import token_floor
from store.records import TaskRecord

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "comfyui-agent:"
# An unfinished record without a lease has no owner that could mark it done or lost; it is
# kept this long beyond the TTL, and a new save starts the count again.
UNLEASED_GRACE = 86_400.0

# Printable ASCII without spaces: readable in redis-cli, no quoting needed anywhere.
_PREFIX_PATTERN = re.compile(r"[!-~]{0,200}")
# Redis refuses client names with spaces, newlines or other characters outside "!".."~".
_CLIENT_NAME_UNSAFE = re.compile(r"[^!-~]")
# Published by the sync script; a record's JSON always starts with "{".
_MARKER_PREFIX = b"\x00sync:"
_RECONNECT_FIRST_DELAY = 0.05
_RECONNECT_MAX_DELAY = 2.0

# KEYS[1] task key. ARGV[1] channel, ARGV[2] marker. Read and mark in one atomic step.
_SYNC_SCRIPT = """
local value = redis.call('GET', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return value
"""
T = TypeVar("T")


class RedisStore:
    """Task records in Redis with TTLs; watch() is pushed over pub/sub."""

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        ttl: float | None,
        prefix: str = DEFAULT_PREFIX,
        instance: str | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        reconnect_limit: float = 30.0,
        keepalive: float = 30.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Build the store without I/O; a URL makes a client the store owns and closes.

        instance names the connections (CLIENT SETNAME, sanitised); with a client passed
        in, only the store's own pub/sub connection takes it. socket_timeout,
        connect_timeout, retries and client_options (more Redis() keywords) apply only to
        a client made from a URL. reconnect_limit bounds how long a watch waits for Redis
        to come back; keepalive is how long the pub/sub connection may stay silent before
        it is pinged (and, with no answer after as long again, reconnected).
        """
        if not isinstance(prefix, str) or _PREFIX_PATTERN.fullmatch(prefix) is None:
            raise ValueError(
                f"prefix must be at most 200 printable ASCII characters without spaces, "
                f"got {prefix!r}"
            )
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
            ("reconnect_limit", reconnect_limit),
            ("keepalive", keepalive),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        self._ttl = check_ttl(ttl)
        self._prefix = prefix
        self._reconnect_limit = reconnect_limit
        self._keepalive = keepalive
        client_name = _client_name(instance)
        if isinstance(url_or_client, str):
            options: dict[str, Any] = {
                # RESP2: every Redis since 2.6 speaks it (managed Redis 5 included), and
                # nothing here needs RESP3.
                "protocol": 2,
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                # Short, capped back-off: a dead server fails a command within seconds
                # instead of hanging the run; the next call reconnects.
                "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
                "client_name": client_name,
                **(client_options or {}),
            }
            self._redis = Redis.from_url(url_or_client, **options)
            self._owns_client = True
        else:
            self._redis = url_or_client
            self._owns_client = False
        self._where = _describe(self._redis)
        self._subscriber = _subscriber_connection(self._redis, client_name)
        self._sync_script = self._redis.register_script(_SYNC_SCRIPT)
        self._claim_script = self._redis.register_script(redis_scripts.CLAIM)
        self._renew_script = self._redis.register_script(redis_scripts.RENEW)
        self._release_script = self._redis.register_script(redis_scripts.RELEASE)
        self._save_script = self._redis.register_script(redis_scripts.SAVE)
        self._channels: dict[bytes, _Channel] = {}
        self._wanted = asyncio.Event()
        self._live = False
        self._ping_outstanding = False
        self._reconnect_delay = _RECONNECT_FIRST_DELAY
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def prefix(self) -> str:
        """The prefix of every key and channel this store uses."""
        return self._prefix

    @property
    def subscribed_channels(self) -> int:
        """How many task channels the shared pub/sub connection follows now."""
        return len(self._channels)

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Write the record with its TTL and publish it to watchers, in one atomic script.

        With a token, the script first checks it against the task's fence key (see
        store.redis_scripts) and writes nothing when another claim superseded it.
        """
        task_id = validate_task_id(task.task_id)
        self._use()
        keys = [self._key("task", task_id), self._key("fence", task_id)]
        expiry_ms = self._expiry_ms(task, time.time())
        # Already past its TTL (e.g. a finished task saved late): the script deletes it,
        # as nothing would keep it, and a watcher would not be shown it by any other store.
        args: list[str | bytes | int] = [
            task.to_json().encode(),
            "" if expiry_ms is None else max(expiry_ms, 0),
            "" if token is None else str(token),
        ]
        result = await self._call(
            f"saving task {task_id}", lambda: self._save_script(keys=keys, args=args)
        )
        if int(result[0]) == 0:
            assert token is not None
            raise ClaimSuperseded(task_id, token, int(result[1]))

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record; None when unknown or expired, StoreError when not a record."""
        validate_task_id(task_id)
        self._use()
        key = self._key("task", task_id)
        data = await self._call(f"loading task {task_id}", lambda: self._redis.get(key))
        return None if data is None else _parse(task_id, key, _as_bytes(data))

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, bytes] | None:
        """load(), with the stored JSON as the version: version() returns it until it changes."""
        data = await self.version(task_id)
        if data is None:
            return None
        return _parse(task_id, self._key("task", task_id), data), data

    async def version(self, task_id: str) -> bytes | None:
        """The stored JSON (one GET, not parsed); None when the key is gone (or expired)."""
        validate_task_id(task_id)
        self._use()
        key = self._key("task", task_id)
        data = await self._call(f"loading task {task_id}", lambda: self._redis.get(key))
        return None if data is None else _as_bytes(data)

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and on every change pushed, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        validate_task_id(task_id)
        self._check_open()
        return self._watch(task_id)

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for lease s: a new token, or None if held by another."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        self._use()
        keys = [
            self._key("claim", task_id),
            self._key("cancel", task_id),
            self._key("fence", task_id),
        ]
        args: list[str | int] = [
            owner,
            _ms(lease),
            token_floor(time.time()),
            self._fence_ttl_ms(lease),
        ]
        result = await self._call(
            f"claiming task {task_id}", lambda: self._claim_script(keys=keys, args=args)
        )
        token = int(result)
        return token if token > 0 else None

    async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
        """Extend the claim holding token; False once a newer claim superseded it."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        self._use()
        keys = [self._key("claim", task_id), self._key("fence", task_id)]
        args: list[str | int] = [owner, str(token), _ms(lease), self._fence_ttl_ms(lease)]
        result = await self._call(
            f"renewing task {task_id}", lambda: self._renew_script(keys=keys, args=args)
        )
        return bool(int(result))

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token; no effect once a newer claim superseded it."""
        validate_task_id(task_id)
        self._use()
        keys = [self._key("claim", task_id)]
        await self._call(
            f"releasing task {task_id}",
            lambda: self._release_script(keys=keys, args=[str(token)]),
        )

    async def request_cancel(self, task_id: str) -> None:
        """Ask the runner of task_id to interrupt it; the request is kept for the task TTL."""
        validate_task_id(task_id)
        self._use()
        key = self._key("cancel", task_id)
        expiry_ms = math.ceil(cancel_ttl(self._ttl) * 1000)
        await self._call(
            f"requesting cancel of task {task_id}",
            lambda: self._redis.set(key, b"1", px=expiry_ms),
        )

    async def cancel_requested(self, task_id: str) -> bool:
        """True when an interrupt of task_id was requested since it was last claimed anew."""
        validate_task_id(task_id)
        self._use()
        key = self._key("cancel", task_id)
        found = await self._call(
            f"checking cancel of task {task_id}", lambda: self._redis.exists(key)
        )
        return bool(found)

    async def mark_once(self, task_id: str, name: str) -> bool:
        """Set marker name of task_id with SET NX; True when this call set it."""
        validate_task_id(task_id)
        validate_marker_name(name)
        self._use()
        key = self._key(f"mark:{name}", task_id)
        expiry_ms = math.ceil(cancel_ttl(self._ttl) * 1000)
        result = await self._call(
            f"marking task {task_id} {name}",
            lambda: self._redis.set(key, b"1", px=expiry_ms, nx=True),
        )
        return bool(result)

    async def close(self) -> None:
        """Stop the pub/sub reader and close connections; running watches raise StoreError."""
        if self._closed:
            return
        self._closed = True
        for channel in self._channels.values():
            channel.cancel_sync()
            channel.wake()
        self._channels.clear()
        if self._reader is not None:
            self._reader.cancel()
            # wait() rather than await: it does not re-raise the reader's CancelledError.
            await asyncio.wait([self._reader])
        await self._subscriber.disconnect(nowait=True)
        if self._owns_client:
            await self._redis.aclose()

    # --- records and keys ----------------------------------------------------------------

    def _key(self, kind: str, task_id: str) -> str:
        return f"{self._prefix}{kind}:{task_id}"

    def _fence_ttl_ms(self, lease: float) -> int | str:
        # The fence must outlive the task's record (store.fencing makes forgetting it
        # afterwards safe): ttl beyond the last renewal, or forever like the records.
        return "" if self._ttl is None else _ms(self._ttl + lease)

    def _expiry_ms(self, record: TaskRecord, now: float) -> int | None:
        """Milliseconds the record's key lives, or None for no expiry (ttl None)."""
        if self._ttl is None:
            return None
        end = expires_at(record, self._ttl)
        if end is None:
            # Unfinished without a lease: the store TTL rule keeps it, but in Redis nobody
            # sweeps by hand, so an abandoned one must still end some day.
            end = now + self._ttl + UNLEASED_GRACE
        return math.ceil((end - now) * 1000)

    async def _call(self, doing: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreError(f"redis at {self._where} unreachable while {doing}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"redis at {self._where} failed {doing}: {exc}") from exc

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

    # --- watch ---------------------------------------------------------------------------

    async def _watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        self._use()
        event = asyncio.Event()
        channel = await self._join(task_id, event)
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
                        record = _parse(task_id, channel.key, channel.latest)
                        yield record
                        if record.status.is_terminal:
                            return
                await event.wait()
        finally:
            await self._leave(channel, event)

    async def _join(self, task_id: str, event: asyncio.Event) -> _Channel:
        key = self._key("task", task_id)
        name = key.encode()
        channel = self._channels.get(name)
        if channel is not None:
            channel.watchers.add(event)
            return channel
        channel = _Channel(key, name, asyncio.get_running_loop().time())
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

    async def _leave(self, channel: _Channel, event: asyncio.Event) -> None:
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

    def _fail(self, channel: _Channel, error: StoreError) -> None:
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

    def _start_sync(self, channel: _Channel) -> None:
        channel.cancel_sync()
        # The marker is set now, not when the task first runs: messages the reader hands
        # over meanwhile are older than the coming read and must be dropped.
        marker = channel.begin_sync()
        channel.sync_task = asyncio.create_task(self._sync(channel, marker))

    async def _sync(self, channel: _Channel, marker: bytes) -> None:
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
            channel.end_sync(marker, None if value is None else _as_bytes(value))
            return

    def _outage_error(self, channel: _Channel, exc: BaseException) -> StoreError:
        return StoreError(
            f"lost redis at {self._where} for more than {self._reconnect_limit} s while"
            f" watching {channel.key}: {exc}"
        )


class _Channel:
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
        self._marker = _MARKER_PREFIX + secrets.token_hex(8).encode()
        self._marker_seen = self._reply_seen = self._newer = False
        return self._marker

    def receive(self, payload: bytes) -> None:
        """A message on the channel: a record, or a sync marker."""
        if payload.startswith(_MARKER_PREFIX):
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


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _parse(task_id: str, key: str, data: bytes) -> TaskRecord:
    try:
        record = TaskRecord.from_json(data)
    except ValidationError as exc:
        raise StoreError(f"redis key {key} does not hold a task record: {exc}") from exc
    if record.task_id != task_id:
        raise StoreError(f"redis key {key} holds task {record.task_id!r}, not {task_id!r}")
    return record


def _as_bytes(value: Any) -> bytes:
    # A client passed in may decode responses.
    return value.encode() if isinstance(value, str) else bytes(value)


def _client_name(instance: str | None) -> str | None:
    if not instance:
        return None
    return _CLIENT_NAME_UNSAFE.sub("_", instance)[:128]


def _describe(client: Redis) -> str:
    """host:port/db (or the socket path) of the client, for messages; never credentials."""
    options = client.connection_pool.connection_kwargs
    db = options.get("db", 0)
    if "path" in options:
        return f"{options['path']}/{db}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


def _subscriber_connection(client: Redis, client_name: str | None) -> AbstractConnection:
    """A connection like the client's own, for pub/sub only, that the reader manages."""
    pool = client.connection_pool
    options = {
        name: value
        for name, value in pool.connection_kwargs.items()
        # Maintenance notifications exist only with RESP3, which this connection does not use.
        if not name.startswith(("maint_notifications", "orig_"))
    }
    options.update(
        # RESP2 pub/sub replies are plain arrays the reader parses itself.
        protocol=2,
        # The reader pings on its own schedule; redis-py's health check would read (and
        # drop) a pub/sub message in place of its PONG.
        health_check_interval=0,
        # The reader retries with its own back-off, forever.
        retry=Retry(NoBackoff(), 0),
    )
    if client_name is not None:
        options["client_name"] = client_name
    connection: AbstractConnection = pool.connection_class(**options)
    return connection
