"""Benchmark: POST /prompt through comfyui.kept_alive against aiohttp's client.

    .venv/bin/python -m tests.benchmarks.bench_prompt_post [--rounds 20] [--per-round 100]

A server in a child process answers POST /prompt as ComfyUI does (aiohttp, a small JSON
body with Content-Length). In this process, on one event loop, alternating in rounds so
that a busy machine slows both alike, the benchmark workflow's prompt is posted:

- as the reference: ComfyUIClient's way before (aiohttp.ClientSession.request, json=,
  a total timeout, the answer's text parsed as JSON);
- as the agent: KeptAlivePoster.post and the same parsing.

Prints the median CPU time of this process's thread per request (what the agent's event
loop spends) and the wall time per request, and their ratios. Checks that both get the
same answers; asserts nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from comfyui.kept_alive import KeptAlivePoster
from tests.benchmarks.bench_hotpath import fresh_prompt, wait_http
from tests.fake_comfyui.fixtures import free_port

ANSWER = {"prompt_id": "0f4c6c5e-1111-2222-3333-444455556666", "number": 3, "node_errors": {}}


def serve(port: int) -> None:
    """The child: answer POST /prompt like ComfyUI, GET / for readiness."""

    async def prompt(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/prompt", prompt)
    app.router.add_get("/", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def measure(rounds: int, per_round: int, url: str) -> dict[str, list[tuple[float, float]]]:
    """Per side, per round: (CPU µs, wall µs) per request."""
    body = {"prompt": fresh_prompt(), "client_id": "bench", "prompt_id": "p"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession() as session:
        await wait_http(session, f"{url}/")
        poster = KeptAlivePoster(url)

        async def reference() -> Any:
            async with session.request("POST", f"{url}/prompt", json=body, timeout=timeout) as r:
                return json.loads(await r.text(errors="replace"))

        async def agent() -> Any:
            _, data = await poster.post("/prompt", json.dumps(body).encode(), timeout=30)
            return json.loads(data.decode())

        sides: dict[str, Callable[[], Awaitable[Any]]] = {"aiohttp": reference, "agent": agent}
        for run in sides.values():  # warm up, and check both get the same answer
            answers = [await run() for _ in range(50)]
            if any(answer != ANSWER for answer in answers):
                raise RuntimeError(f"unexpected answer: {answers[0]!r}")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, run in sides.items():
                cpu, wall = time.thread_time(), time.perf_counter()
                for _ in range(per_round):
                    await run()
                results[name].append(
                    (
                        (time.thread_time() - cpu) / per_round * 1e6,
                        (time.perf_counter() - wall) / per_round * 1e6,
                    )
                )
        await poster.close()
    return results


def report(results: dict[str, list[tuple[float, float]]], rounds: int, per_round: int) -> None:
    """The table: medians over rounds, and the agent's ratio to aiohttp's client."""
    cpu = {name: statistics.median(c for c, _ in rows) for name, rows in results.items()}
    wall = {name: statistics.median(w for _, w in rows) for name, rows in results.items()}
    print(f"\nPOST /prompt, {rounds} rounds of {per_round} requests per side, alternating.\n")
    print("| way | CPU per request (µs) | wall per request (µs) |")
    print("| --- | --- | --- |")
    for name in results:
        print(f"| {name} | {cpu[name]:.0f} | {wall[name]:.0f} |")
    print(
        f"| ratio agent / aiohttp | {cpu['agent'] / cpu['aiohttp']:.2f}x"
        f" | {wall['agent'] / wall['aiohttp']:.2f}x |"
    )


def main() -> None:
    """Start the server child, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.bench_prompt_post", "--serve", str(port)]
    )
    try:
        results = asyncio.run(measure(args.rounds, args.per_round, f"http://127.0.0.1:{port}"))
    finally:
        child.terminate()
        child.wait(10)
    report(results, args.rounds, args.per_round)


if __name__ == "__main__":
    main()
