"""Benchmark: agent start-up time and memory, per-run overhead over ComfyUI, event throughput.

    .venv/bin/python -m tests.benchmarks.bench_agent [--runs 50] [--concurrency 16] [--store URL]

With a Redis store, give a `?prefix=` of its own: its keys are deleted at the end.

Runs against the fake ComfyUI on loopback, so the numbers are the agent's own cost: the
time the same workflow takes through the agent minus the time it takes talking to ComfyUI
directly (POST /prompt, wait on its websocket, GET /view), as a client of ComfyUI would.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from agent.progress import ProgressTracker
from comfyui.events import parse_event
from tests.agent_harness import trace_prompt
from tests.fake_comfyui.fixtures import FakeComfyUI, free_port, start_fake_comfyui
from tests.trace_tools import TRACES_DIR

AGENT = Path(sys.executable).with_name("comfyui-agent")


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def fresh_prompt() -> dict[str, Any]:
    prompt = trace_prompt("success")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["3"]["inputs"]["filename_prefix"] = "bench"
    return prompt


async def direct_run(session: aiohttp.ClientSession, fake: FakeComfyUI) -> None:
    """One run the way a plain ComfyUI client does it: ws, POST /prompt, wait, GET /view."""
    client_id = str(uuid.uuid4())
    async with session.ws_connect(fake.ws_url(client_id)) as ws:
        async with session.post(
            f"{fake.url}/prompt", json={"prompt": fresh_prompt(), "client_id": client_id}
        ) as response:
            prompt_id = (await response.json())["prompt_id"]
        images = []
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            body = data.get("data", {})
            if body.get("prompt_id") != prompt_id:
                continue
            if data["type"] == "executed":
                images += body["output"].get("images", [])
            if data["type"] == "executing" and body.get("node") is None:
                break
    for image in images:
        async with session.get(f"{fake.url}/view", params=image) as response:
            await response.read()


async def agent_run(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(f"{url}/api/run", json=fresh_prompt()) as response:
        assert response.status == 200, await response.text()
        await response.read()


async def timed(coro_factory: Any, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await coro_factory()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def describe(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    return f"median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms"


def translation_throughput() -> float:
    """Events per second through parse_event + ProgressTracker (the txt2img trace, replayed)."""
    lines = (TRACES_DIR / "txt2img.ws.jsonl").read_text().splitlines()
    messages = [json.loads(line)["msg"] for line in lines if '"msg"' in line]
    prompt_id = next(m["data"]["prompt_id"] for m in messages if m["type"] == "execution_start")
    nodes = list(trace_prompt("txt2img"))
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        tracker = ProgressTracker(nodes, prompt_id)
        for message in messages:
            tracker.apply(parse_event(message), 1.0)
        rounds += 1
    return rounds * len(messages) / (time.perf_counter() - start)


async def delete_prefixed_keys(url: str) -> None:
    """Remove what the run left in Redis (every key under the URL's prefix)."""
    import redis.asyncio as redis

    base, _, query = url.partition("?")
    prefix = dict(part.split("=", 1) for part in query.split("&") if "=" in part).get("prefix")
    if not prefix:
        return  # the default prefix is shared with real deployments: leave it alone
    client = redis.from_url(base)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


async def main(runs: int, concurrency: int, store: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fake = await start_fake_comfyui(Path(tmp), "--slow-delay", "0.0")
        port = free_port()
        started = time.perf_counter()
        agent = await asyncio.create_subprocess_exec(
            str(AGENT), "--host", "127.0.0.1", "--port", str(port),
            "--comfyui-url", fake.url, "--store", store.format(tmp=tmp), "--log-level", "WARNING",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                while True:
                    try:
                        async with session.get(f"{url}/healthz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.005)
                healthy = time.perf_counter() - started
                while True:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.005)
                rss_start = rss_kib(agent.pid)
                for _ in range(5):  # warm-up
                    await direct_run(session, fake)
                    await agent_run(session, url)
                direct = await timed(lambda: direct_run(session, fake), runs)
                through = await timed(lambda: agent_run(session, url), runs)
                start = time.perf_counter()
                await asyncio.gather(*(agent_run(session, url) for _ in range(concurrency)))
                burst = time.perf_counter() - start
                rss_end = rss_kib(agent.pid)
        finally:
            agent.terminate()
            await agent.wait()
            await fake.stop()
            if store.startswith(("redis://", "rediss://")):
                await delete_prefixed_keys(store)
    print(f"agent start to /healthz 200     {healthy * 1000:7.1f} ms")
    print(f"agent RSS after start           {rss_start[0] / 1024:7.1f} MiB")
    print(
        f"agent RSS after {runs * 2 + 10 + concurrency:3d} runs        "
        f"{rss_end[0] / 1024:7.1f} MiB (peak {rss_end[1] / 1024:.1f})"
    )
    print(f"direct to ComfyUI, {runs} runs     {describe(direct)}")
    print(f"through the agent, {runs} runs     {describe(through)}")
    overhead = statistics.median(through) - statistics.median(direct)
    print(f"agent overhead per run (median) {overhead:7.2f} ms")
    print(f"{concurrency} concurrent runs            {burst * 1000:7.1f} ms in all")
    print(f"store                           {store}")
    print(f"event translation               {translation_throughput():9.0f} events/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--store", default="file://{tmp}/tasks", help="store URL ({tmp}: temp dir)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency, args.store))
