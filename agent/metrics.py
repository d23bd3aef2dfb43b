"""Prometheus metrics of one agent process, kept in a registry of its own (prometheus-client).

Each `Metrics` owns its `CollectorRegistry` (never the library's global one), so two agents
in one process (the tests) count apart, and nothing lives at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.run_handle import ComfyUITime

DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Nodes range from a few ms (a primitive) to many minutes (a video sampler).
NODE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# The agent's own part of a sync run: fractions of a millisecond when all is well.
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _LiveValues(Collector):
    """Values read from live objects (runner, backend) at scrape time, not counted here."""

    def __init__(self) -> None:
        self.queue_depth = 0
        self.child_restarts = 0
        self.comfyui_ready = False
        self.apps_loaded = 0
        self.apps_broken = 0

    def collect(self) -> Iterable[Metric]:
        """The scrape-time families."""
        yield GaugeMetricFamily(
            "comfyui_agent_queue_depth",
            "Tasks queued or running on this instance.",
            value=self.queue_depth,
        )
        yield CounterMetricFamily(
            "comfyui_agent_child_restarts",
            "ComfyUI child restarts.",
            value=self.child_restarts,
        )
        yield GaugeMetricFamily(
            "comfyui_agent_comfyui_ready",
            "1 when ComfyUI answers.",
            value=int(self.comfyui_ready),
        )
        yield GaugeMetricFamily(
            "comfyui_agent_apps", "Apps loaded from --apps.", value=self.apps_loaded
        )
        yield GaugeMetricFamily(
            "comfyui_agent_apps_broken",
            "App files or entries skipped as broken right now.",
            value=self.apps_broken,
        )


class Metrics:
    """The agent's counters and histograms; gauges of live objects are set at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # CPU seconds, resident memory, open fds, start time; Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._live = _LiveValues()
        self.registry.register(self._live)
        reg = self.registry
        self.runs = Counter(
            "comfyui_agent_runs",
            "Runs finished on this instance, by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.run_duration = Histogram(
            "comfyui_agent_run_duration_seconds",
            "Time from accepting a run to its end.",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.store_writes = Counter(
            "comfyui_agent_store_writes", "Task records written to the store.", registry=reg
        )
        self.store_write_seconds = Histogram(
            "comfyui_agent_store_write_seconds",
            "Latency of task record writes.",
            buckets=STORE_BUCKETS,
            registry=reg,
        )
        self.store_failures = Counter(
            "comfyui_agent_store_failures", "Store operations that failed.", registry=reg
        )
        self.node_seconds = Histogram(
            "comfyui_agent_node_execution_seconds",
            "Time ComfyUI spent executing one node, by node type (class_type).",
            ["node_type"],
            buckets=NODE_BUCKETS,
            registry=reg,
        )
        self.queue_wait_seconds = Histogram(
            "comfyui_agent_queue_wait_seconds",
            "Time from accepting a run to ComfyUI starting to execute it.",
            buckets=QUEUE_BUCKETS,
            registry=reg,
        )
        self.sync_overhead_seconds = Histogram(
            "comfyui_agent_sync_overhead_seconds",
            "Time a sync run spends outside ComfyUI, by phase: from the request to its"
            " POST /prompt (before_submit: the agent's preparation, input uploads, any wait"
            " for ComfyUI to be ready), from the run's end to the answer sent (after_end).",
            ["phase"],
            buckets=OVERHEAD_BUCKETS,
            registry=reg,
        )
        self.websocket_watchers = Gauge(
            "comfyui_agent_websocket_watchers",
            "Client websockets open on /api/run/ws, by mode (run: sent a workflow; watch: ?id=).",
            ["mode"],
            registry=reg,
        )
        self.output_reads = Counter(
            "comfyui_agent_output_reads",
            "Output files read from ComfyUI's output directory, by way: from the kernel's"
            " caches on the event loop (cache), or on a thread (thread).",
            ["way"],
            registry=reg,
        )
        self.app_load_errors = Counter(
            "comfyui_agent_app_load_errors",
            "App file problems found (each once).",
            registry=reg,
        )
        for mode in ("run", "watch"):  # both series exist from the first scrape
            self.websocket_watchers.labels(mode=mode)
        for phase in ("before_submit", "after_end"):
            self.sync_overhead_seconds.labels(phase=phase)
        for way in ("cache", "thread"):
            self.output_reads.labels(way=way)

    def run_finished(self, outcome: str, seconds: float) -> None:
        """Count a finished run."""
        self.runs.labels(outcome=outcome).inc()
        self.run_duration.observe(seconds)

    def store_write(self, seconds: float) -> None:
        """Count a successful store write."""
        self.store_writes.inc()
        self.store_write_seconds.observe(seconds)

    def store_failure(self) -> None:
        """Count a failed store operation."""
        self.store_failures.inc()

    def node_executed(self, node_type: str, seconds: float) -> None:
        """Record how long ComfyUI executed one node of this type."""
        self.node_seconds.labels(node_type=node_type).observe(seconds)

    def sync_answered(self, received: float, comfyui: ComfyUITime, sent: float) -> None:
        """Record the agent's own time in a sync run answered at `sent` (perf_counter)."""
        if comfyui.posted_at is None or comfyui.ended_at is None:
            return  # it never reached ComfyUI: nothing to split
        observe = self.sync_overhead_seconds.labels
        observe(phase="before_submit").observe(max(comfyui.posted_at - received, 0.0))
        observe(phase="after_end").observe(max(sent - comfyui.ended_at, 0.0))

    def run_started(self, queued_seconds: float) -> None:
        """Record how long a run waited before ComfyUI started executing it."""
        self.queue_wait_seconds.observe(queued_seconds)

    @contextmanager
    def websocket_watcher(self, mode: str) -> Iterator[None]:
        """Count a client websocket as open for the duration of the block."""
        gauge = self.websocket_watchers.labels(mode=mode)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def output_read(self, way: str) -> None:
        """Count an output file read from the output directory ("cache" or "thread")."""
        self.output_reads.labels(way=way).inc()

    def app_problem(self) -> None:
        """Count an app file (or entry) that could not be loaded."""
        self.app_load_errors.inc()

    def render(
        self,
        *,
        queue_depth: int,
        child_restarts: int,
        comfyui_ready: bool,
        apps_loaded: int = 0,
        apps_broken: int = 0,
    ) -> str:
        """The whole exposition text (Prometheus text format 0.0.4)."""
        live = self._live
        live.apps_loaded = apps_loaded
        live.apps_broken = apps_broken
        live.queue_depth = queue_depth
        live.child_restarts = child_restarts
        live.comfyui_ready = comfyui_ready
        return generate_latest(self.registry).decode()
