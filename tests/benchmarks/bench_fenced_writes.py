"""Benchmark: what the fence costs a record write (file store and Redis), side by side.

    .venv/bin/python -m tests.benchmarks.bench_fenced_writes [--writes 500] [--redis URL]

Saves the same record `--writes` times without a claim token (the unconditional write)
and with one (the check-and-set every run's write now is), alternating in rounds so both
see the same machine load, and prints the median and p95 latency of each and their ratio.
Also times a claim renewal. Redis runs only with --redis (keys under a private prefix,
deleted at the end). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from store import FileStore, NodeProgress, RedisStore, Store, TaskRecord, TaskStatus
from tests.store_factories import delete_redis_keys

Operation = Callable[[], Awaitable[object]]


async def timed(operation: Operation, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        await operation()
        took.append(time.perf_counter() - started)
    return took


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(ordered) * 1e3:.3f} ms, p95 {p95 * 1e3:.3f} ms"


async def bench(name: str, store: Store, writes: int) -> None:
    # A 30-node workflow's record mid-run.
    progress = {str(n): NodeProgress(max=20, value=7, start=1, last_updated=2) for n in range(30)}
    record = TaskRecord(
        task_id="bench-1", status=TaskStatus.RUNNING, instance="bench", progress=progress
    )
    token = await store.claim("bench-1", "bench", 60)
    assert token is not None
    plain: list[float] = []
    fenced: list[float] = []
    renewals: list[float] = []
    rounds = 10
    for _ in range(rounds):
        plain += await timed(lambda: store.save(record), writes // rounds)
        fenced += await timed(lambda: store.save(record, token=token), writes // rounds)
        renewals += await timed(lambda: store.renew("bench-1", "bench", token, 60), 5)
    ratio = statistics.median(fenced) / statistics.median(plain)
    print(f"{name}: unfenced save {summary(plain)}")
    print(f"{name}: fenced save   {summary(fenced)}  (median ratio {ratio:.2f})")
    print(f"{name}: renewal       {summary(renewals)}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--redis", help="redis://host:port/db to benchmark too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = FileStore(Path(directory), ttl=3600)
        try:
            await bench("file", store, args.writes)
        finally:
            await store.close()
    if args.redis:
        prefix = f"bench-{uuid.uuid4().hex}:"
        redis_store = RedisStore(args.redis, ttl=3600, prefix=prefix)
        try:
            await bench("redis", redis_store, args.writes)
        finally:
            await redis_store.close()
            delete_redis_keys(args.redis, prefix)


if __name__ == "__main__":
    asyncio.run(main())
