"""Prometheus counters of delivery: uploads, webhook attempts, warm-up (appended to /metrics)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.metrics import DURATION_BUCKETS, Histogram


@dataclass
class DeliveryMetrics:
    """Counters kept by the uploader, the webhook sender and the warm-up."""

    # outcome: uploaded | retried | failed
    uploads: Counter[str] = field(default_factory=Counter)
    upload_bytes: int = 0
    upload_seconds: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    # outcome: delivered | retried | failed | skipped (another instance delivered it)
    webhook_attempts: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[str] = field(default_factory=Counter)
    # status: pending | succeeded | failed | timeout | none
    warmup_status: str = "none"
    warmup_seconds: float = 0.0

    def lines(self) -> Iterable[str]:
        """Exposition lines."""
        yield "# HELP comfyui_agent_output_uploads_total Output file uploads, by outcome."
        yield "# TYPE comfyui_agent_output_uploads_total counter"
        for outcome in sorted(self.uploads):
            count = self.uploads[outcome]
            yield f'comfyui_agent_output_uploads_total{{outcome="{outcome}"}} {count}'
        yield "# HELP comfyui_agent_output_upload_bytes_total Bytes of output files uploaded."
        yield "# TYPE comfyui_agent_output_upload_bytes_total counter"
        yield f"comfyui_agent_output_upload_bytes_total {self.upload_bytes}"
        yield "# HELP comfyui_agent_output_upload_seconds Time to upload one task's outputs."
        yield "# TYPE comfyui_agent_output_upload_seconds histogram"
        yield from self.upload_seconds.lines("comfyui_agent_output_upload_seconds")
        yield "# HELP comfyui_agent_webhook_attempts_total Webhook POSTs, by outcome."
        yield "# TYPE comfyui_agent_webhook_attempts_total counter"
        for outcome in sorted(self.webhook_attempts):
            count = self.webhook_attempts[outcome]
            yield f'comfyui_agent_webhook_attempts_total{{outcome="{outcome}"}} {count}'
        yield "# HELP comfyui_agent_webhooks_total Webhook events, by final outcome."
        yield "# TYPE comfyui_agent_webhooks_total counter"
        for outcome in sorted(self.webhooks):
            yield f'comfyui_agent_webhooks_total{{outcome="{outcome}"}} {self.webhooks[outcome]}'
        yield "# HELP comfyui_agent_warmup_seconds Time the warm-up workflow took."
        yield "# TYPE comfyui_agent_warmup_seconds gauge"
        yield f"comfyui_agent_warmup_seconds {self.warmup_seconds:.3f}"
        yield "# HELP comfyui_agent_warmup_status Warm-up state (1 for the current one)."
        yield "# TYPE comfyui_agent_warmup_status gauge"
        yield f'comfyui_agent_warmup_status{{status="{self.warmup_status}"}} 1'
