"""Benchmark of the apps directory and parameter substitution (prints numbers, asserts none).

    python -m tests.benchmarks.bench_apps [--files 500]

Cold load (every file parsed), warm rescan (nothing changed: one stat per file, no
read), rescan after one file changed, and apply_params on the txt2img example; the
reference beside each scan is a bare `os.stat` of every file in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from agent.apps.params import apply_params
from agent.apps.registry import AppRegistry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


def _stat_all(directory: Path) -> float:
    started = time.perf_counter()
    for entry in os.scandir(directory):
        entry.stat()
    return time.perf_counter() - started


async def main(files: int) -> None:
    """Print the measurements."""
    example = json.loads((EXAMPLES / "txt2img.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for index in range(files):
            (directory / f"app{index:04}.json").write_text(json.dumps(example))
        registry = AppRegistry(directory, rescan=0)
        started = time.perf_counter()
        apps = await registry.apps()
        cold = time.perf_counter() - started
        assert len(apps) == files
        started = time.perf_counter()
        await registry.apps()
        warm = time.perf_counter() - started
        reference = _stat_all(directory)
        changed = directory / "app0000.json"
        changed.write_text(json.dumps({**example, "title": "changed"}))
        os.utime(changed, ns=(0, time.time_ns() + 10**9))
        started = time.perf_counter()
        await registry.apps()
        one_changed = time.perf_counter() - started
    app = apps["app0000"]
    values = {"6.text": "a cat", "3.steps": "20", "3.sampler_name": "dpmpp_2m", "3.seed": "42"}
    rounds = 5000
    started = time.perf_counter()
    for _ in range(rounds):
        apply_params(app, values, max_image_bytes=1 << 20)
    per_call = (time.perf_counter() - started) / rounds
    print(f"app files: {files}")
    print(f"cold load:          {cold * 1000:8.1f} ms ({cold / files * 1e6:.0f} us per file)")
    print(f"warm rescan:        {warm * 1000:8.1f} ms (bare stat of all: {reference * 1000:.1f} ms,"
          f" ratio {warm / reference:.1f}x)")  # fmt: skip
    print(f"one file changed:   {one_changed * 1000:8.1f} ms")
    print(f"apply_params:       {per_call * 1e6:8.1f} us per call (4 values, txt2img)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    asyncio.run(main(parser.parse_args().files))
