"""Session-wide test resources: the Redis server the store tests use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.store_factories import RedisServer, RedisTarget, delete_redis_keys


@pytest.fixture(scope="session")
def redis_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisTarget]:
    """REDIS_URL when set, else a private redis-server for the session; never skipped."""
    prefix = f"test-{uuid.uuid4().hex}:"
    url = os.environ.get("REDIS_URL")
    server: RedisServer | None = None
    if url:
        try:
            with redis.Redis.from_url(url, protocol=2, socket_timeout=5) as client:
                client.ping()
        except (redis.RedisError, ValueError) as exc:
            pytest.fail(f"REDIS_URL={url} is not usable: {exc}")
    else:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            pytest.fail(
                f"no Redis for the store tests: REDIS_URL is unset and redis-server could not"
                f" be started ({exc}); install redis-server or set REDIS_URL"
            )
        url = server.url
    try:
        yield RedisTarget(url, prefix)
    finally:
        try:
            delete_redis_keys(url, prefix)
        finally:
            if server is not None:
                server.kill()
