"""Benchmark: the file store's sweep of a large directory, against a bare scan of it.

    .venv/bin/python -m tests.benchmarks.bench_sweep [--tasks 100000] [--rounds 3]

Fills a temp directory with `--tasks` task files and as many claims, as a NAS directory
with a week's TTL holds them (every file written within the TTL, so nothing is read or
deleted: the sweep's everyday case). Then, each in a fresh process and alternating in
rounds so both see the same machine load:

- the reference: os.scandir of both directories and one os.stat per file, the least any
  sweep must do;
- DirectorySweeper.sweep, as the store's background sweeper runs it.

Prints the median time of each, their ratio, and how much each process's RSS grew over the
pass (measured after it, with everything the agent's server imports loaded before it).
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from store.file_claims import CLAIM_SUFFIX
from store.file_sweep import SUFFIX, DirectorySweeper
from tests.benchmarks.bench_agent import rss_kib

WEEK = 7 * 24 * 3600.0


def fill(directory: Path, tasks: int) -> None:
    """tasks task files in directory/tasks and a claim each in directory/claims."""
    (directory / "tasks").mkdir()
    (directory / "claims").mkdir()
    for n in range(tasks):
        task_id = f"task-{n:08d}-{os.urandom(6).hex()}"
        (directory / "tasks" / (task_id + SUFFIX)).write_bytes(b"{}")
        (directory / "claims" / (task_id + CLAIM_SUFFIX)).write_bytes(b"{}")


def bare_scan(directory: Path) -> None:
    """The reference: list both directories and stat every file."""
    for sub in ("tasks", "claims"):
        with os.scandir(directory / sub) as scan:
            names = [entry.name for entry in scan]
        for name in names:
            os.stat(os.path.join(directory, sub, name))


def rss_mib() -> float:
    """This process's resident set, MiB."""
    return rss_kib(os.getpid())[0] / 1024


def child(kind: str, directory: Path) -> None:
    """One measured pass in this process; prints {"seconds", "rss_growth_mib"}."""
    import agent.server  # noqa: F401  (what an agent process has loaded)

    sweeper = DirectorySweeper(
        directory / "tasks", directory / "claims", ttl=WEEK, temp_max_age=60.0
    )
    before = rss_mib()
    started = time.perf_counter()
    if kind == "sweep":
        sweeper.sweep(time.time())
    else:
        bare_scan(directory)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_growth_mib": rss_mib() - before}))


def measure(kind: str, directory: Path) -> dict[str, float]:
    """Run one pass of kind in a fresh process."""
    answer = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_sweep", "--child", kind, str(directory)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(answer.stdout)
    return result


def main() -> None:
    """Parse the arguments, fill the directory, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as temp:
        directory = Path(temp)
        print(f"filling {args.tasks} tasks and {args.tasks} claims ...", flush=True)
        fill(directory, args.tasks)
        results: dict[str, list[dict[str, float]]] = {"scan": [], "sweep": []}
        for _ in range(args.rounds):
            for kind in results:
                results[kind].append(measure(kind, directory))
    files = 2 * args.tasks
    medians = {
        kind: (
            statistics.median(r["seconds"] for r in runs),
            statistics.median(r["rss_growth_mib"] for r in runs),
        )
        for kind, runs in results.items()
    }
    print(f"{'pass over ' + str(files) + ' files':32} {'median s':>9} {'RSS growth MiB':>15}")
    labels = {"scan": "bare scan + stat (reference)", "sweep": "DirectorySweeper.sweep"}
    for kind, label in labels.items():
        seconds, growth = medians[kind]
        print(f"{label:32} {seconds:9.2f} {growth:15.1f}")
    print(f"sweep / reference: {medians['sweep'][0] / medians['scan'][0]:.2f}x")


if __name__ == "__main__":
    main()
