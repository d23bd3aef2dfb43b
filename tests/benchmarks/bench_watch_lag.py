"""Benchmark: cross-instance watch lag, from a save on one instance to the watch on another.

    .venv/bin/python -m tests.benchmarks.bench_watch_lag [--stores file,redis] [--saves 200]

Two store objects on the same directory / Redis stand for two instances: A saves a record
(each version stamped with the time of its save) at random intervals of 20-120 ms, B watches
the task and notes when each version reaches it. Prints p50/p99/max of that lag per store;
asserts nothing. A run's own record writes add at most the writer's settle time (20 ms) for a
state change, or its flush interval (`--store-flush-interval`, 0.25 s) for progress.
The Redis URL gets a `?prefix=` of its own; its keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from store.base import Store
from store.factory import open_store
from store.records import TaskRecord, TaskStatus
from tests.benchmarks.bench_agent import delete_prefixed_keys

STORE_URLS = {
    "file": "file://{tmp}/tasks",
    "redis": "redis://127.0.0.1:6379/0?prefix=bench-lag-{run}:",
}


async def measure(url: str, saves: int) -> list[float]:
    """Lags in ms of the versions B saw (a version superseded before B looked is skipped)."""
    writer, watcher = open_store(url, ttl=600), open_store(url, ttl=600)
    task_id = f"lag-{uuid.uuid4().hex[:8]}"
    record = TaskRecord(task_id=task_id, status=TaskStatus.RUNNING, instance="a")
    await writer.save(record)
    first = record.updated_at
    lags: list[float] = []

    async def watch(store: Store) -> None:
        async for seen in store.watch(task_id):
            if seen.updated_at > first:
                lags.append((time.time() - seen.updated_at) * 1000)

    watching = asyncio.create_task(watch(watcher))
    await asyncio.sleep(0.3)  # the watch is set up (Redis subscribed, file polled once)
    try:
        for _ in range(saves):
            await asyncio.sleep(random.uniform(0.02, 0.12))
            record.updated_at = time.time()
            await writer.save(record)
        await asyncio.sleep(0.5)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await writer.close()
        await watcher.close()
    return lags


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    print(f"{args.saves} saves 20-120 ms apart; lag from save to the other instance's watch\n")
    print("| store | seen | p50 (ms) | p99 (ms) | max (ms) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            url = STORE_URLS.get(name, name).format(tmp=Path(tmp), run=run)
            try:
                lags = await measure(url, args.saves)
            finally:
                if url.startswith(("redis://", "rediss://")):
                    await delete_prefixed_keys(url)
            print(
                f"| {name} | {len(lags)}/{args.saves} | {statistics.median(lags):.1f}"
                f" | {percentile(lags, 0.99):.1f} | {max(lags):.1f} |"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="file,redis", help="file, redis or store URLs")
    parser.add_argument("--saves", type=int, default=200)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
