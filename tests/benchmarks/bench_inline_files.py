"""Benchmark: files inline in JSON, both ways, against the standard library's way.

    .venv/bin/python -m tests.benchmarks.bench_inline_files [--rounds 30]

For files of several sizes (random bytes: a PNG does not compress either), alternating in
rounds so that a busy machine slows both alike, all on one thread (as on the event loop):

- answers: the answer of a three-node run whose last node saved the files, rendered
  - as the reference: base64 as str (base64.b64encode), the progress map through
    json.dumps, then encoded to bytes (what web.json_response does);
  - as the agent: Base64Text (pybase64) and dumps_answer;
- inputs: one inline image (base64 text) decoded
  - as the reference: base64.b64decode(validate=True);
  - as the agent: agent.inputs' decoding of inline images.

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
from functools import partial
from typing import Any

from agent.answer_json import Base64Text, dumps_answer
from agent.inputs import b64decode_strict

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


def timed(work: Callable[[], bytes]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def compare(
    label: str,
    reference: Callable[[], bytes],
    agent: Callable[[], bytes],
    rounds: int,
) -> None:
    """Check both give the same bytes, time them alternately, print a row."""
    if reference() != agent():
        raise SystemExit(f"{label}: the two ways give different bytes")
    ref_times, agent_times = [], []
    for _ in range(rounds):
        ref_times.append(timed(reference))
        agent_times.append(timed(agent))
    ref_ms = statistics.median(ref_times) * 1000
    agent_ms = statistics.median(agent_times) * 1000
    print(f"{label:>24} {ref_ms:14.2f} {agent_ms:9.2f} {agent_ms / ref_ms:11.2f}x")


def main() -> None:
    """Parse the arguments, measure each size, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"{'':>24} {'reference ms':>14} {'agent ms':>9} {'agent / ref':>12}")
    for size, count in SIZES:
        files = [os.urandom(size) for _ in range(count)]
        label = f"answer, {count} x {size / 1000:g} kB"
        compare(label, partial(reference, files), partial(agent, files), args.rounds)
    for size, _ in SIZES[:3]:
        text = base64.b64encode(os.urandom(size)).decode("ascii")
        compare(
            f"input, {size / 1000:g} kB",
            partial(base64.b64decode, text, validate=True),
            partial(b64decode_strict, text),
            args.rounds,
        )


if __name__ == "__main__":
    main()
