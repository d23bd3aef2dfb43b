"""Benchmark: rendering a sync answer with its files inline, against plain json.dumps.

    .venv/bin/python -m tests.benchmarks.bench_answer_body [--rounds 30]

For output files of several sizes (random bytes: a PNG does not compress either), renders
the answer of a three-node run whose last node saved them, both ways, alternating in
rounds so that a busy machine slows both alike, all on one thread (as on the event loop):

- the reference: base64 as str, the progress map through json.dumps, then encoded to bytes
  (what web.json_response does);
- the agent: base64 kept as bytes (Base64Text), the answer through dumps_answer.

Prints the median time of each and their ratio. Checks that both give the same bytes;
asserts nothing else.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from agent.answer_json import Base64Text, dumps_answer

SIZES = ((2_000, 1), (400_000, 1), (1_500_000, 1), (1_500_000, 4))


def progress(results: list[Any]) -> dict[str, Any]:
    """A three-node run's answer, the last node's files inline."""
    done = {"max": 1, "value": 1, "start": 1764450000000}
    images = [
        {"filename": f"out_{n:05d}_.png", "subfolder": "", "type": "output"}
        for n in range(len(results))
    ]
    return {"1": dict(done), "2": dict(done), "3": {**done, "images": images, "results": results}}


def reference(files: list[bytes]) -> bytes:
    """base64 str, json.dumps, encode: the answer as web.json_response renders it."""
    return json.dumps(progress([base64.b64encode(data).decode("ascii") for data in files])).encode()


def agent(files: list[bytes]) -> bytes:
    """Base64Text and dumps_answer: the answer as the agent renders it."""
    return dumps_answer(progress([Base64Text.encode(data) for data in files]))


def timed(render: Callable[[list[bytes]], bytes], files: list[bytes]) -> float:
    """Seconds one render takes."""
    started = time.perf_counter()
    render(files)
    return time.perf_counter() - started


def main() -> None:
    """Parse the arguments, measure each size, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"{'files':>16} {'json.dumps ms':>14} {'agent ms':>9} {'agent / ref':>12}")
    for size, count in SIZES:
        files = [os.urandom(size) for _ in range(count)]
        if reference(files) != agent(files):
            raise SystemExit(f"the two renderings differ for {count} x {size} bytes")
        ref_times, agent_times = [], []
        for _ in range(args.rounds):
            ref_times.append(timed(reference, files))
            agent_times.append(timed(agent, files))
        ref_ms = statistics.median(ref_times) * 1000
        agent_ms = statistics.median(agent_times) * 1000
        label = f"{count} x {size / 1000:g} kB"
        print(f"{label:>16} {ref_ms:14.2f} {agent_ms:9.2f} {agent_ms / ref_ms:11.2f}x")


if __name__ == "__main__":
    main()
