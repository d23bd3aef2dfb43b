"""Benchmark: how fast `comfyui-agent run` starts, against the server's start-up imports.

    .venv/bin/python -m tests.benchmarks.bench_client_start [--repeat 10]

Measures, side by side in the same run, the wall time of `comfyui-agent run --help`
(argument parsing of the client, all it loads) and of `comfyui-agent --help` (the server's
settings), plus a bare interpreter and the import of the client's modules used for a run,
and the ratio client / server. Median of --repeat runs each. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("comfyui-agent")
CLIENT_IMPORTS = "import agent.client.command, agent.client.follow, agent.client.live_view"
SERVER_IMPORTS = "import agent.server"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "comfyui-agent run --help": [str(SCRIPT), "run", "--help"],
        "import client (run path)": [sys.executable, "-c", CLIENT_IMPORTS],
        "comfyui-agent --help (server)": [str(SCRIPT), "--help"],
        "import agent.server": [sys.executable, "-c", SERVER_IMPORTS],
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # interleaved, so load changes hit every case alike
        for name, argv in cases.items():
            samples[name].append(timed(argv))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"{name:32s} {value * 1000:8.0f} ms  (median of {args.repeat})")
    client = medians["comfyui-agent run --help"]
    server = medians["comfyui-agent --help (server)"]
    print(f"{'client / server start':32s} {client / server:8.2f}")


if __name__ == "__main__":
    main()
