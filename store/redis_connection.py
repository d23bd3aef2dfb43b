"""Redis store connections: options checked, the client made from a URL, the pub/sub link."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

# Printable ASCII without spaces: readable in redis-cli, no quoting needed anywhere.
_PREFIX_PATTERN = re.compile(r"[!-~]{0,200}")
# Redis refuses client names with spaces, newlines or other characters outside "!".."~".
_CLIENT_NAME_UNSAFE = re.compile(r"[^!-~]")


def check_options(
    prefix: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    reconnect_limit: float,
    keepalive: float,
    retries: int,
) -> None:
    """Raise ValueError for a bad prefix, timeout or retry count."""
    if not isinstance(prefix, str) or _PREFIX_PATTERN.fullmatch(prefix) is None:
        raise ValueError(
            f"prefix must be at most 200 printable ASCII characters without spaces, got {prefix!r}"
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


def make_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    retries: int,
    client_name: str | None,
    client_options: Mapping[str, Any] | None,
) -> Redis:
    """A client for url with short timeouts and a capped retry back-off."""
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
    return Redis.from_url(url, **options)


def client_name(instance: str | None) -> str | None:
    """The instance name as Redis accepts it for CLIENT SETNAME; None for none."""
    if not instance:
        return None
    return _CLIENT_NAME_UNSAFE.sub("_", instance)[:128]


def describe(client: Redis) -> str:
    """host:port/db (or the socket path) of the client, for messages; never credentials."""
    options = client.connection_pool.connection_kwargs
    db = options.get("db", 0)
    if "path" in options:
        return f"{options['path']}/{db}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


def subscriber_connection(client: Redis, client_name: str | None) -> AbstractConnection:
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
