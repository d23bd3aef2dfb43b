"""Benchmark of the hot path, side by side with its references, in one run.

    .venv/bin/python -m tests.benchmarks.bench_hotpath [--comfyui-url URL [--comfyui-output-dir D]]
        [--stores file,memory,redis] [--runs 500] [--concurrency 64] [--duration 8]

Without --comfyui-url it starts the fake ComfyUI on loopback; with it, it attaches to that
ComfyUI (give its --output-directory as --comfyui-output-dir when this machine can read it,
as an agent that starts its own child knows it). For each store it starts an agent process
(`comfyui-agent --comfyui-url ...`, default log level) and measures, alternating with the
references so that a noisy machine slows both alike:

- sequential sync runs of EmptyImage -> ImageInvert -> SaveImage: the agent's POST /api/run
  against a naive direct client (opens a websocket, POSTs /prompt, waits for the end, GETs
  /view: what ComfyUI's script examples do); every answer is checked (status, PNG bytes).
  Each side runs `--block` runs back to back before the other takes over: what a run leaves
  to do in the background (the file store's spare files) then slows that
  side's next run, as it does for a caller who sends the next workflow at once. Alternating
  single runs instead put that work inside the other side's runs: the agent looked up to
  1 ms faster than it is on the file store;
- `--concurrency` runs at once, both ways: runs per second;
- read throughput with wrk (`-t2 -c32`, loopback) of GET /api/status?id= and
  GET /api/tasks/{id} of a finished task against a bare aiohttp handler (bare_server.py)
  returning the same bytes; without wrk, an in-process aiohttp load of the same shape;
- the agent's RSS when idle (ready, before any run) and at the end.

Images are saved as `agent-bench_*` and, when the output directory is given (or the fake's),
deleted before each store and at the end: ComfyUI slows down as its output folder fills.

Prints a table; asserts nothing. A Redis store URL should carry a `?prefix=` of its own:
its keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchmarks.bench_agent import AGENT, delete_prefixed_keys, rss_kib
from tests.fake_comfyui.fixtures import free_port, start_fake_comfyui

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The SaveImage prefix of every image the benchmark makes (and deletes again).
OUTPUT_PREFIX = "agent-bench"
# Runs `agent.cli` from the tree in $BENCH_AGENT_SOURCE, ahead of this checkout's editable
# install (whose import hook would otherwise win over sys.path).
FROM_SOURCE = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, os.environ["BENCH_AGENT_SOURCE"])
from agent.cli import main
main()
"""
STORE_URLS = {
    "file": "file://{tmp}/tasks",
    "memory": "memory://",
    "redis": "redis://127.0.0.1:6379/0?prefix=bench-{run}:",
}


def remove_outputs(directory: Path | None) -> int:
    """Delete the images the benchmark made in ComfyUI's output directory; count them.

    ComfyUI's SaveImage lists its output folder to number each new file, so thousands of
    old benchmark images slow every run down as they pile up.
    """
    if directory is None:
        return 0
    removed = 0
    for path in directory.glob(f"{OUTPUT_PREFIX}_*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def fresh_prompt() -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage with a new colour, so ComfyUI caches nothing."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": 64,
                "height": 64,
                "batch_size": 1,
                "color": secrets.randbelow(1 << 24),
            },
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": OUTPUT_PREFIX},
        },
    }


@dataclass
class ComfyUI:
    """The ComfyUI both paths talk to."""

    url: str
    output_dir: Path | None

    def ws_url(self, client_id: str) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"


@dataclass
class StoreResult:
    """What one store's agent measured, with its references."""

    store: str
    idle_rss_mib: float = 0.0
    end_rss_mib: float = 0.0
    direct_ms: list[float] = field(default_factory=list)
    agent_ms: list[float] = field(default_factory=list)
    direct_ok: int = 0
    agent_ok: int = 0
    direct_rps: float = 0.0
    agent_rps: float = 0.0
    concurrent_ok: str = ""
    reads: dict[str, list[float]] = field(default_factory=dict)
    # The agent's own time per sync run, by phase (its /metrics), mean ms; {} if absent.
    overhead_ms: dict[str, float] = field(default_factory=dict)


async def direct_run(session: aiohttp.ClientSession, comfy: ComfyUI) -> bool:
    """One run as a plain ComfyUI client does it: ws, POST /prompt, wait, GET /view."""
    client_id = str(uuid.uuid4())
    async with session.ws_connect(comfy.ws_url(client_id)) as ws:
        body = {"prompt": fresh_prompt(), "client_id": client_id}
        async with session.post(f"{comfy.url}/prompt", json=body) as response:
            prompt_id = (await response.json())["prompt_id"]
        images: list[dict[str, str]] = []
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            event = data.get("data", {})
            if event.get("prompt_id") != prompt_id:
                continue
            if data["type"] == "executed":
                images += event["output"].get("images", [])
            if data["type"] == "executing" and event.get("node") is None:
                break
            if data["type"] == "execution_error":
                return False
    ok = bool(images)
    for image in images:
        async with session.get(f"{comfy.url}/view", params=image) as response:
            ok = ok and response.status == 200 and (await response.read()).startswith(PNG_SIGNATURE)
    return ok


async def agent_run(session: aiohttp.ClientSession, url: str) -> bool:
    """One sync run through the agent; True when the answer is right (200, PNG in results)."""
    async with session.post(f"{url}/api/run", json=fresh_prompt()) as response:
        if response.status != 200 or response.headers.get("X-Task-Status") != "succeeded":
            return False
        body = await response.json()
    results = body.get("3", {}).get("results") or []
    return len(results) == 1 and base64.b64decode(results[0]).startswith(PNG_SIGNATURE)


async def timed(run: Callable[[], Awaitable[bool]]) -> tuple[float, bool]:
    start = time.perf_counter()
    ok = await run()
    return (time.perf_counter() - start) * 1000, ok


async def burst(run: Callable[[], Awaitable[bool]], count: int) -> tuple[float, int]:
    """Runs per second with `count` at once, and how many were right."""
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(run() for _ in range(count)))
    return count / (time.perf_counter() - start), sum(outcomes)


async def wrk(url: str, duration: float, connections: int) -> float:
    """Requests per second wrk measures on url (2 threads)."""
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    text = out.decode()
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match is None or "Non-2xx" in text:
        raise RuntimeError(f"wrk on {url} failed:\n{text}")
    return float(match.group(1))


async def client_load(url: str, duration: float, connections: int) -> float:
    """Requests per second of an in-process aiohttp load (when wrk is not installed)."""
    done = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - start)


OVERHEAD_PHASES = ("before_submit", "after_end")
OVERHEAD = re.compile(
    r'^comfyui_agent_sync_overhead_seconds_(sum|count)\{phase="(\w+)"\} (\S+)$', re.MULTILINE
)


async def overhead_totals(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    """The agent's sync overhead histograms: (phase, sum|count) -> value ({} if it has none)."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return {(phase, kind): float(value) for kind, phase, value in OVERHEAD.findall(text)}


def overhead_means(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    """Mean ms per run of each phase between two scrapes."""
    means = {}
    for phase in OVERHEAD_PHASES:
        count = after.get((phase, "count"), 0) - before.get((phase, "count"), 0)
        if count > 0:
            spent = after[(phase, "sum")] - before.get((phase, "sum"), 0)
            means[phase] = spent / count * 1000
    return means


def overhead_cell(means: dict[str, float]) -> str:
    """Both phases' means as "before / after" (ms), or "-" when the agent reports none."""
    if len(means) != len(OVERHEAD_PHASES):
        return "-"
    return " / ".join(f"{means[phase]:.2f}" for phase in OVERHEAD_PHASES)


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


@contextlib.asynccontextmanager
async def process(
    *argv: str, log: Path, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess (output to log) that is terminated, by its PID, on exit."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out, env=env)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def measure_store(
    args: argparse.Namespace,
    comfy: ComfyUI,
    store_name: str,
    store: str,
    tmp: Path,
    session: aiohttp.ClientSession,
) -> StoreResult:
    result = StoreResult(store=store_name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent_cmd = [str(AGENT)]
    env = None
    if args.agent_source is not None:
        # Another checkout's agent (e.g. the main branch, for before/after figures).
        agent_cmd = [sys.executable, "-c", FROM_SOURCE]
        env = {**os.environ, "BENCH_AGENT_SOURCE": str(args.agent_source.resolve())}
    argv = [*agent_cmd, "--host", "127.0.0.1", "--port", str(port), "--comfyui-url", comfy.url]
    argv += ["--store", store]
    if comfy.output_dir is not None:
        argv += ["--comfyui-output-dir", str(comfy.output_dir)]
    argv += args.agent_arg
    async with process(*argv, log=tmp / f"agent-{port}.log", env=env) as agent:
        await wait_http(session, f"{url}/readyz")
        await asyncio.sleep(1.0)
        result.idle_rss_mib = rss_kib(agent.pid)[0] / 1024
        for _ in range(5):  # warm-up, both ways
            await direct_run(session, comfy)
            await agent_run(session, url)
        # In alternating blocks, so load on the machine hits both alike, and each side's
        # background work lands in its own runs (see the module docstring).
        totals = await overhead_totals(session, url)
        for done in range(0, args.runs, args.block):
            block = min(args.block, args.runs - done)
            for _ in range(block):
                ms, ok = await timed(lambda: direct_run(session, comfy))
                result.direct_ms.append(ms)
                result.direct_ok += ok
            for _ in range(block):
                ms, ok = await timed(lambda: agent_run(session, url))
                result.agent_ms.append(ms)
                result.agent_ok += ok
        result.overhead_ms = overhead_means(totals, await overhead_totals(session, url))
        direct_oks, agent_oks = [], []
        for _ in range(args.bursts):
            rps, right = await burst(lambda: direct_run(session, comfy), args.concurrency)
            result.direct_rps = max(result.direct_rps, rps)
            direct_oks.append(right)
            rps, right = await burst(lambda: agent_run(session, url), args.concurrency)
            result.agent_rps = max(result.agent_rps, rps)
            agent_oks.append(right)
        total = args.concurrency * args.bursts
        result.concurrent_ok = f"{sum(direct_oks)}/{total}, {sum(agent_oks)}/{total}"
        result.reads = await measure_reads(args, session, url, tmp)
        result.end_rss_mib = rss_kib(agent.pid)[0] / 1024
    return result


async def measure_reads(
    args: argparse.Namespace, session: aiohttp.ClientSession, url: str, tmp: Path
) -> dict[str, list[float]]:
    """Req/s of the two read routes and of the bare handler with their bytes, per round."""
    task_id = f"bench-{uuid.uuid4().hex[:12]}"
    async with session.post(
        f"{url}/api/run?results=none", json=fresh_prompt(), headers={"task-id": task_id}
    ) as response:
        assert response.status == 200, await response.text()
    targets = {"status": f"{url}/api/status?id={task_id}", "task": f"{url}/api/tasks/{task_id}"}
    bodies = []
    for name, target in targets.items():
        async with session.get(target) as response:
            assert response.status == 200, await response.text()
            body = tmp / f"{name}.json"
            body.write_bytes(await response.read())
            bodies.append(body)
    port = free_port()
    bare_argv = [sys.executable, "-m", "tests.benchmarks.bare_server", "--port", str(port)]
    for body in bodies:
        bare_argv += ["--body", str(body)]
    if args.bare_uvloop:
        bare_argv.append("--uvloop")
    load = wrk if shutil.which("wrk") else client_load
    rps: dict[str, list[float]] = {"bare status": [], "bare task": [], "status": [], "task": []}
    async with process(*bare_argv, log=tmp / "bare.log"):
        bare = f"http://127.0.0.1:{port}"
        await wait_http(session, f"{bare}/0")
        for _ in range(args.rounds):  # short rounds, each agent load right after its bare one
            for name, target in (
                ("bare status", f"{bare}/0"),
                ("status", targets["status"]),
                ("bare task", f"{bare}/1"),
                ("task", targets["task"]),
            ):
                rps[name].append(await load(target, args.duration, args.connections))
    return rps


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def read_ratio(result: StoreResult, route: str) -> float:
    """Median over rounds of (agent req/s / bare req/s of the same round)."""
    pairs = zip(result.reads[route], result.reads["bare " + route], strict=True)
    return statistics.median(agent / bare for agent, bare in pairs)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(len(ordered) * 0.95) - 1)]


def report(results: list[StoreResult], args: argparse.Namespace, target: str) -> None:
    runs = f"{args.runs} sequential runs in blocks of {args.block}"
    print(f"\nComfyUI: {target}; {runs}, {args.concurrency} concurrent")
    print(f"(best of {args.bursts}); reads: wrk -t2 -c{args.connections} -d{args.duration:g}s,")
    print(f"{args.rounds} rounds, each right after the bare one; medians of req/s and ratios.\n")
    print("| figure | " + " | ".join(f"agent, {r.store}" for r in results) + " | reference |")
    print("| --- | " + " | ".join("---" for _ in results) + " | --- |")

    def row(name: str, cells: list[str], reference: str = "") -> None:
        print(f"| {name} | " + " | ".join(cells) + f" | {reference} |")

    first = results[0]
    row(
        "correct sequential answers",
        [f"{r.agent_ok}/{args.runs}" for r in results],
        f"direct client {first.direct_ok}/{args.runs}",
    )
    row(
        "sync run p50 / p95 (ms)",
        [f"{p50(r.agent_ms):.2f} / {p95(r.agent_ms):.2f}" for r in results],
        "through the agent",
    )
    row(
        "direct client p50 / p95 (ms), same run",
        [f"{p50(r.direct_ms):.2f} / {p95(r.direct_ms):.2f}" for r in results],
        "the naive direct client",
    )
    row(
        "added over the direct client, p50 (ms)",
        [f"**{p50(r.agent_ms) - p50(r.direct_ms):+.2f}**" for r in results],
        "0 (target <= -0.5)",
    )
    row(
        "median of paired differences (ms)",
        [
            f"{p50([a - d for a, d in zip(r.agent_ms, r.direct_ms, strict=True)]):+.2f}"
            for r in results
        ],
        "each agent run minus the direct run at the same place of the block before",
    )
    row(
        "agent's own time per run, mean (ms)",
        [overhead_cell(r.overhead_ms) for r in results],
        "request to its POST /prompt / the run's end to the answer sent (the agent's /metrics)",
    )
    row(
        f"{args.concurrency} concurrent runs: runs/s (ratio)",
        [
            f"{r.agent_rps:.1f} vs {r.direct_rps:.1f} (**{r.agent_rps / r.direct_rps:.2f}x**)"
            for r in results
        ],
        "agent vs direct client (target >= 0.95x)",
    )
    row(
        "concurrent answers right (direct, agent)",
        [r.concurrent_ok for r in results],
    )
    for route, name in (("status", "GET /api/status?id="), ("task", "GET /api/tasks/{id}")):
        row(
            f"{name} req/s (ratio to bare)",
            [
                f"{p50(r.reads[route]):,.0f} vs {p50(r.reads['bare ' + route]):,.0f}"
                f" (**{read_ratio(r, route):.2f}x**)"
                for r in results
            ],
            "agent vs bare aiohttp, same bytes (target >= 0.75x)",
        )
    row("idle RSS (MiB)", [f"{r.idle_rss_mib:.1f}" for r in results], "target <= 45")
    row("RSS at the end (MiB)", [f"{r.end_rss_mib:.1f}" for r in results])


@contextlib.asynccontextmanager
async def comfyui_under_test(
    url: str | None, output_dir: Path | None, tmp: Path
) -> AsyncIterator[tuple[ComfyUI, str]]:
    """The ComfyUI at url (output_dir: its output folder), else a fake one started in tmp;
    with how the report names it. The fake is stopped on exit."""
    if url:
        yield ComfyUI(url.rstrip("/"), output_dir), f"ComfyUI at {url.rstrip('/')}"
        return
    fake = await start_fake_comfyui(tmp, "--slow-delay", "0.0")
    try:
        yield ComfyUI(fake.url, fake.output_dir), "the fake ComfyUI (tests/fake_comfyui)"
    finally:
        await fake.stop()


async def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    names = args.stores.split(",")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stores = [STORE_URLS.get(n, n).format(tmp=tmp, run=run) for n in names]
        async with comfyui_under_test(args.comfyui_url, args.comfyui_output_dir, tmp) as found:
            comfy, target = found
            results = await measure_stores(args, comfy, names, stores, tmp)
    report(results, args, target)


async def measure_stores(
    args: argparse.Namespace, comfy: ComfyUI, names: list[str], stores: list[str], tmp: Path
) -> list[StoreResult]:
    """Each store's agent measured in turn, on one ComfyUI."""
    outputs = comfy.output_dir
    if args.no_output_dir:
        comfy.output_dir = None
    results = []
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_http(session, f"{comfy.url}/system_stats")
            for name, store in zip(names, stores, strict=True):
                # Each store starts on the same ComfyUI output folder (see remove_outputs).
                await asyncio.to_thread(remove_outputs, outputs)
                try:
                    result = await measure_store(args, comfy, name, store, tmp, session)
                    results.append(result)
                finally:
                    if store.startswith(("redis://", "rediss://")):
                        await delete_prefixed_keys(store)
    finally:
        await asyncio.to_thread(remove_outputs, outputs)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui-url", help="attach to this ComfyUI instead of the fake")
    parser.add_argument(
        "--comfyui-output-dir", type=Path, help="that ComfyUI's output directory, if readable"
    )
    parser.add_argument(
        "--no-output-dir", action="store_true", help="do not tell the agent the output directory"
    )
    parser.add_argument(
        "--stores", default="file", help="comma-separated: file, memory, redis or store URLs"
    )
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument(
        "--block", type=int, default=10, help="sequential runs of one side before the other's"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per read load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="read loads per target")
    parser.add_argument("--bare-uvloop", action="store_true", help="bare handler on uvloop")
    parser.add_argument(
        "--agent-arg", action="append", default=[], help="extra agent argument (repeatable)"
    )
    parser.add_argument(
        "--agent-source",
        type=Path,
        help="run the agent from this source tree (python -m agent.cli) instead of this one",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
