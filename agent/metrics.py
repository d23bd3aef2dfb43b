"""Prometheus metrics of one agent process (text exposition format, no extra dependency)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Histogram:
    """Cumulative-bucket histogram."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        index = bisect.bisect_left(self.buckets, value)
        for i in range(index, len(self.buckets)):
            self.counts[i] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> Iterable[str]:
        """Exposition lines."""
        for bound, count in zip(self.buckets, self.counts, strict=True):
            yield f'{name}_bucket{{le="{bound:g}"}} {count}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {self.total:.6f}"
        yield f"{name}_count {self.count}"


@dataclass
class Metrics:
    """Counters the agent keeps; gauges are read from live objects at scrape time."""

    runs: Counter[str] = field(default_factory=Counter)
    run_duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    store_writes: int = 0
    store_write_seconds: Histogram = field(default_factory=lambda: Histogram(STORE_BUCKETS))
    store_failures: int = 0
    app_problems: int = 0

    def run_finished(self, outcome: str, seconds: float) -> None:
        """Count a finished run."""
        self.runs[outcome] += 1
        self.run_duration.observe(seconds)

    def store_write(self, seconds: float) -> None:
        """Count a successful store write."""
        self.store_writes += 1
        self.store_write_seconds.observe(seconds)

    def store_failure(self) -> None:
        """Count a failed store operation."""
        self.store_failures += 1

    def app_problem(self) -> None:
        """Count an app file (or entry) that could not be loaded."""
        self.app_problems += 1

    def render(
        self,
        *,
        queue_depth: int,
        child_restarts: int,
        comfyui_ready: bool,
        apps_loaded: int = 0,
        apps_broken: int = 0,
    ) -> str:
        """The whole exposition text."""
        out = [
            "# HELP comfyui_agent_runs_total Runs finished on this instance, by outcome.",
            "# TYPE comfyui_agent_runs_total counter",
        ]
        for outcome in sorted(self.runs):
            out.append(f'comfyui_agent_runs_total{{outcome="{outcome}"}} {self.runs[outcome]}')
        out += [
            "# HELP comfyui_agent_run_duration_seconds Time from accepting a run to its end.",
            "# TYPE comfyui_agent_run_duration_seconds histogram",
            *self.run_duration.lines("comfyui_agent_run_duration_seconds"),
            "# HELP comfyui_agent_queue_depth Tasks queued or running on this instance.",
            "# TYPE comfyui_agent_queue_depth gauge",
            f"comfyui_agent_queue_depth {queue_depth}",
            "# HELP comfyui_agent_store_writes_total Task records written to the store.",
            "# TYPE comfyui_agent_store_writes_total counter",
            f"comfyui_agent_store_writes_total {self.store_writes}",
            "# HELP comfyui_agent_store_write_seconds Latency of task record writes.",
            "# TYPE comfyui_agent_store_write_seconds histogram",
            *self.store_write_seconds.lines("comfyui_agent_store_write_seconds"),
            "# HELP comfyui_agent_store_failures_total Store operations that failed.",
            "# TYPE comfyui_agent_store_failures_total counter",
            f"comfyui_agent_store_failures_total {self.store_failures}",
            "# HELP comfyui_agent_child_restarts_total ComfyUI child restarts.",
            "# TYPE comfyui_agent_child_restarts_total counter",
            f"comfyui_agent_child_restarts_total {child_restarts}",
            "# HELP comfyui_agent_comfyui_ready 1 when ComfyUI answers.",
            "# TYPE comfyui_agent_comfyui_ready gauge",
            f"comfyui_agent_comfyui_ready {int(comfyui_ready)}",
            "# HELP comfyui_agent_apps Apps loaded from --apps.",
            "# TYPE comfyui_agent_apps gauge",
            f"comfyui_agent_apps {apps_loaded}",
            "# HELP comfyui_agent_apps_broken App files or entries skipped as broken right now.",
            "# TYPE comfyui_agent_apps_broken gauge",
            f"comfyui_agent_apps_broken {apps_broken}",
            "# HELP comfyui_agent_app_load_errors_total App file problems found (each once).",
            "# TYPE comfyui_agent_app_load_errors_total counter",
            f"comfyui_agent_app_load_errors_total {self.app_problems}",
        ]
        return "\n".join(out) + "\n"
