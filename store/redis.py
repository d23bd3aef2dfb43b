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

Watches (one shared pub/sub connection, channels synced with the records, reconnection)
are store.redis_watch; connections and their options store.redis_connection.

Connection loss: commands raise StoreError once redis-py's retries are spent (a few
seconds at most with the default timeouts); the client reconnects by itself on the next
call.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store import redis_scripts
from store.base import ClaimSuperseded, StoreError, validate_marker_name, validate_task_id
from store.common import EndedClaims, cancel_ttl, check_claim, check_ttl, expires_at
from store.fencing import token_floor
from store.records import TaskRecord
from store.redis_connection import check_options, client_name, make_client
from store.redis_watch import RedisWatch, as_bytes, parse_record

DEFAULT_PREFIX = "comfyui-agent:"
# An unfinished record without a lease has no owner that could mark it done or lost; it is
# kept this long beyond the TTL, and a new save starts the count again.
UNLEASED_GRACE = 86_400.0
T = TypeVar("T")


class RedisStore(RedisWatch):
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
        check_options(
            prefix,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            reconnect_limit=reconnect_limit,
            keepalive=keepalive,
            retries=retries,
        )
        self._ttl = check_ttl(ttl)
        self._prefix = prefix
        name = client_name(instance)
        if isinstance(url_or_client, str):
            self._redis = make_client(
                url_or_client,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                retries=retries,
                client_name=name,
                client_options=client_options,
            )
            self._owns_client = True
        else:
            self._redis = url_or_client
            self._owns_client = False
        super().__init__(self._redis, name, reconnect_limit=reconnect_limit, keepalive=keepalive)
        self._claim_script = self._redis.register_script(redis_scripts.CLAIM)
        self._renew_script = self._redis.register_script(redis_scripts.RENEW)
        self._release_script = self._redis.register_script(redis_scripts.RELEASE)
        self._save_script = self._redis.register_script(redis_scripts.SAVE)
        self._ended_claims = EndedClaims()

    @property
    def prefix(self) -> str:
        """The prefix of every key and channel this store uses."""
        return self._prefix

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Write the record with its TTL and publish it to watchers, in one atomic script.

        With a token, the script first checks it against the task's fence key (see
        store.redis_scripts) and writes nothing when another claim superseded it; a
        terminal record ends the claim holding the token, in the same script.
        """
        task_id = validate_task_id(task.task_id)
        self._use()
        keys = [self._key(kind, task_id) for kind in ("task", "fence", "claim")]
        expiry_ms = self._expiry_ms(task, time.time())
        # Already past its TTL (e.g. a finished task saved late): the script deletes it,
        # as nothing would keep it, and a watcher would not be shown it by any other store.
        args: list[str | bytes | int] = [
            task.to_json().encode(),
            "" if expiry_ms is None else max(expiry_ms, 0),
            "" if token is None else str(token),
            "1" if task.status.is_terminal else "",
        ]
        result = await self._call(
            f"saving task {task_id}", lambda: self._save_script(keys=keys, args=args)
        )
        if int(result[0]) == 0:
            assert token is not None
            raise ClaimSuperseded(task_id, token, int(result[1]))
        if token is not None and int(result[1]):
            self._ended_claims.ended(task_id, token)

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record; None when unknown or expired, StoreError when not a record."""
        validate_task_id(task_id)
        self._use()
        key = self._key("task", task_id)
        data = await self._call(f"loading task {task_id}", lambda: self._redis.get(key))
        return None if data is None else parse_record(task_id, key, as_bytes(data))

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, bytes] | None:
        """load(), with the stored JSON as the version: version() returns it until it changes."""
        data = await self.version(task_id)
        if data is None:
            return None
        return parse_record(task_id, self._key("task", task_id), data), data

    async def version(self, task_id: str) -> bytes | None:
        """The stored JSON (one GET, not parsed); None when the key is gone (or expired)."""
        validate_task_id(task_id)
        self._use()
        key = self._key("task", task_id)
        data = await self._call(f"loading task {task_id}", lambda: self._redis.get(key))
        return None if data is None else as_bytes(data)

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and on every change pushed, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        validate_task_id(task_id)
        self._check_open()
        return self._watch(task_id, self._key("task", task_id))

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for lease s: a new token, or None if held by another."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        self._use()
        self._ended_claims.changed(task_id)
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
        self._ended_claims.changed(task_id)  # a claim live again after its final record
        keys = [self._key("claim", task_id), self._key("fence", task_id)]
        args: list[str | int] = [owner, str(token), _ms(lease), self._fence_ttl_ms(lease)]
        result = await self._call(
            f"renewing task {task_id}", lambda: self._renew_script(keys=keys, args=args)
        )
        return bool(int(result))

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token; no effect once a newer claim superseded it."""
        validate_task_id(task_id)
        if self._ended_claims.release(task_id, token):
            return  # its final record's save ended it already
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
        await self._stop_watching()
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


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
