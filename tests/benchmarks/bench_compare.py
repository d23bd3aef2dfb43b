"""Sync runs of several agent source trees side by side, for a before/after of a change.

    git worktree add ../before main
    .venv/bin/python -m tests.benchmarks.bench_compare ../before . [--comfyui-url URL
        [--comfyui-output-dir D]] [--store file|memory|redis|URL] [--runs 1500] [--block 10]

One agent per tree (each on its own store of the same kind, all on one ComfyUI: the fake
unless --comfyui-url), then blocks of `--block` sequential runs in turn: the naive direct
client, then each tree. A change of 0.1-0.3 ms in a sync run is below what two separate
benchmark runs agree on (they differ by up to 0.4 ms here); interleaved like this, with
1500 runs or more per side, it shows. Prints, per tree: p50, p50 minus the direct client's,
the median of paired differences, and the agent's own time per run from its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.benchmarks.bench_agent import delete_prefixed_keys
from tests.benchmarks.bench_hotpath import (
    FROM_SOURCE,
    STORE_URLS,
    ComfyUI,
    agent_run,
    comfyui_under_test,
    direct_run,
    overhead_cell,
    overhead_means,
    overhead_totals,
    process,
    remove_outputs,
    timed,
    wait_http,
)
from tests.fake_comfyui.fixtures import free_port


@dataclass
class Side:
    """One agent tree and what its runs measured."""

    tree: Path
    url: str
    store: str
    ms: list[float] = field(default_factory=list)
    paired: list[float] = field(default_factory=list)
    overhead_ms: dict[str, float] = field(default_factory=dict)


async def compare(
    args: argparse.Namespace, comfy: ComfyUI, tmp: Path
) -> tuple[list[Side], list[float]]:
    """Start one agent per tree and run the blocks: the sides, and the direct runs (ms)."""
    sides: list[Side] = []
    direct_ms: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await wait_http(session, f"{comfy.url}/system_stats")
        for index, tree in enumerate(args.trees):
            port = free_port()
            base = STORE_URLS.get(args.store, args.store)
            store = base.format(tmp=tmp / f"tree-{index}", run=f"{uuid.uuid4().hex[:8]}-{index}")
            argv = [sys.executable, "-c", FROM_SOURCE, "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--comfyui-url", comfy.url, "--store", store]
            if comfy.output_dir is not None:
                argv += ["--comfyui-output-dir", str(comfy.output_dir)]
            env = {**os.environ, "BENCH_AGENT_SOURCE": str(tree.resolve())}
            log = tmp / f"agent-{index}.log"
            await stack.enter_async_context(process(*argv, log=log, env=env))
            side = Side(tree, f"http://127.0.0.1:{port}", store)
            await wait_http(session, f"{side.url}/readyz")
            sides.append(side)
        for _ in range(5):  # warm-up, every side
            await direct_run(session, comfy)
            for side in sides:
                await agent_run(session, side.url)
        totals = [await overhead_totals(session, side.url) for side in sides]
        for done in range(0, args.runs, args.block):
            block = min(args.block, args.runs - done)
            direct = []
            for _ in range(block):
                ms, ok = await timed(lambda: direct_run(session, comfy))
                if not ok:
                    raise RuntimeError("a direct run answered wrong")
                direct.append(ms)
            direct_ms += direct
            for side in sides:
                for place in range(block):
                    ms, ok = await timed(lambda: agent_run(session, side.url))  # noqa: B023
                    if not ok:
                        raise RuntimeError(f"a run of {side.tree} answered wrong")
                    side.ms.append(ms)
                    side.paired.append(ms - direct[place])
            if done % 500 == 0:  # ComfyUI slows down as its output folder fills
                await asyncio.to_thread(remove_outputs, comfy.output_dir)
        for side, before in zip(sides, totals, strict=True):
            side.overhead_ms = overhead_means(before, await overhead_totals(session, side.url))
        for side in sides:
            if side.store.startswith(("redis://", "rediss://")):
                await delete_prefixed_keys(side.store)
    return sides, direct_ms


def report(sides: list[Side], direct_p50: float, args: argparse.Namespace, target: str) -> None:
    """The table of the sides' figures."""
    print(f"\nComfyUI: {target}; store {args.store}; {args.runs} runs per side, blocks of")
    print(f"{args.block}; direct client p50 {direct_p50:.2f} ms.\n")
    print("| tree | p50 (ms) | minus direct p50 | median paired difference | own time (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for side in sides:
        p50 = statistics.median(side.ms)
        own = overhead_cell(side.overhead_ms)
        paired = statistics.median(side.paired)
        print(f"| {side.tree} | {p50:.2f} | {p50 - direct_p50:+.2f} | {paired:+.2f} | {own} |")
    print("\nown time: before its POST /prompt / from the run's end to the answer, mean per run.")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with comfyui_under_test(args.comfyui_url, args.comfyui_output_dir, tmp) as found:
            comfy, target = found
            try:
                await asyncio.to_thread(remove_outputs, comfy.output_dir)
                sides, direct_ms = await compare(args, comfy, tmp)
            finally:
                await asyncio.to_thread(remove_outputs, comfy.output_dir)
    report(sides, statistics.median(direct_ms), args, target)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="agent source trees (checkouts)")
    parser.add_argument("--comfyui-url", help="attach to this ComfyUI instead of the fake")
    parser.add_argument(
        "--comfyui-output-dir", type=Path, help="that ComfyUI's output directory, if readable"
    )
    parser.add_argument("--store", default="file", help="file, memory, redis or a store URL")
    parser.add_argument("--runs", type=int, default=1500, help="sequential runs per side")
    parser.add_argument("--block", type=int, default=10, help="runs of one side in a row")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
