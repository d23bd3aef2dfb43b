"""Prometheus metrics of delivery: uploads, webhook attempts, warm-up (on the agent's registry)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent.metrics import DURATION_BUCKETS

WARMUP_STATES = ("none", "pending", "succeeded", "failed", "timeout")


class DeliveryMetrics(Collector):
    """Counters kept by the uploader, the webhook sender and the warm-up.

    The counters are plain dicts (tests and callers read them directly); the collector
    turns them into metric families at scrape time.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # outcome: uploaded | retried | failed
        self.uploads: Counter[str] = Counter()
        self.upload_bytes = 0
        self.upload_seconds = Histogram(
            "comfyui_agent_output_upload_seconds",
            "Time to upload one task's outputs.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # outcome: delivered | retried | failed
        self.webhook_attempts: Counter[str] = Counter()
        # outcome: delivered | failed | skipped (another instance delivered it)
        self.webhooks: Counter[str] = Counter()
        self.warmup_status = "none"
        self.warmup_seconds = 0.0
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """The scrape-time families."""
        uploads = CounterMetricFamily(
            "comfyui_agent_output_uploads", "Output file uploads, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(self.uploads.items()):
            uploads.add_metric([outcome], count)
        yield uploads
        yield CounterMetricFamily(
            "comfyui_agent_output_upload_bytes",
            "Bytes of output files uploaded.",
            value=self.upload_bytes,
        )
        attempts = CounterMetricFamily(
            "comfyui_agent_webhook_attempts", "Webhook POSTs, by outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(self.webhook_attempts.items()):
            attempts.add_metric([outcome], count)
        yield attempts
        events = CounterMetricFamily(
            "comfyui_agent_webhooks", "Webhook events, by final outcome.", labels=["outcome"]
        )
        for outcome, count in sorted(self.webhooks.items()):
            events.add_metric([outcome], count)
        yield events
        yield GaugeMetricFamily(
            "comfyui_agent_warmup_seconds",
            "Time the warm-up workflow took.",
            value=self.warmup_seconds,
        )
        status = GaugeMetricFamily(
            "comfyui_agent_warmup_status",
            "Warm-up state (1 for the current one).",
            labels=["status"],
        )
        for state in WARMUP_STATES:
            status.add_metric([state], int(state == self.warmup_status))
        yield status
