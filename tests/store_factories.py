"""How the store conformance suite builds each kind of store: add a kind here, and a param."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from store import FileStore, MemoryStore, RedisStore, Store

STORE_KINDS = ["memory", "file", "redis"]


@dataclass(frozen=True)
class RedisTarget:
    """The Redis server the tests use, and the key prefix this test session owns on it."""

    url: str
    prefix: str

    def prefix_for(self, tmp_path: Path) -> str:
        """A prefix private to one test (tmp_path names are unique within a session)."""
        return f"{self.prefix}{tmp_path.name}:"


async def make_store(
    kind: str, tmp_path: Path, ttl: float | None, *, redis_target: RedisTarget | None = None
) -> Store:
    """A fresh, empty store of the given kind, private to one test."""
    if kind == "memory":
        return MemoryStore(ttl=ttl)
    if kind == "file":
        # Fast polling keeps cross-instance watch tests quick; the sweeper is driven by the
        # tests themselves (sweep()), never by the clock.
        return FileStore(tmp_path / "tasks", ttl=ttl, poll_interval=0.02, sweep_interval=3600)
    if kind == "redis":
        if redis_target is None:
            raise ValueError("the redis store kind needs the redis_target fixture")
        # Stores of one test share the prefix: they stand for instances of one deployment.
        return RedisStore(
            redis_target.url, ttl=ttl, prefix=redis_target.prefix_for(tmp_path), instance="tests"
        )
    raise ValueError(f"unknown store kind {kind!r}")


def stored_names(
    kind: str, store: Store, tmp_path: Path, *, redis_target: RedisTarget | None = None
) -> set[str]:
    """Everything the backend holds for the test, to prove a refused save wrote nothing."""
    if kind == "memory":
        assert isinstance(store, MemoryStore)
        return set(store._records) | set(store._claims) | set(store._cancels)
    if kind == "file":
        return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir()}
    if kind == "redis":
        assert isinstance(store, RedisStore) and redis_target is not None
        return redis_keys(redis_target.url, store.prefix)
    raise ValueError(f"unknown store kind {kind!r}")


def redis_keys(url: str, prefix: str) -> set[str]:
    """The keys under prefix on the server at url (a blocking call: tests only)."""
    with redis.Redis.from_url(url, protocol=2) as client:
        return {key.decode() for key in client.scan_iter(match=_glob_escape(prefix) + "*")}


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete the keys under prefix (SCAN + DEL); return how many there were."""
    with redis.Redis.from_url(url, protocol=2) as client:
        keys = list(client.scan_iter(match=_glob_escape(prefix) + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        return len(keys)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# --- a private redis-server --------------------------------------------------------------


class RedisServer:
    """A redis-server child on a free loopback port, in memory only; tests stop it by PID."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, db 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before, if restarted) and wait for PING."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see "
                    f"{self.directory / 'redis.log'}"
                )
            with contextlib.suppress(redis.RedisError):
                with redis.Redis(port=self.port, protocol=2, socket_timeout=1) as client:
                    if client.ping():
                        return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server by its PID and reap it (idempotent)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, 9)
        self.process.wait()
        self.process = None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
