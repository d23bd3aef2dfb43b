"""What one request asks of delivery, read from its headers and query (pure, no I/O).

- `X-Output-Store: s3://BUCKET/PREFIX?...`: upload this task's outputs there (default
  `--output-store`). The agent's credentials are used.
- `?presign=SECONDS`: `urls` are presigned GET URLs valid that long (default
  `--output-store-presign`; 0: `s3://` URIs).
- `X-Webhook-Url: https://...`: POST this task's end there (default `--webhook`).
- `?format=jpeg|webp&quality=N`: convert still image outputs, inline and uploaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.delivery.image_format import FormatError, ImageFormat

OUTPUT_STORE_HEADER = "X-Output-Store"
WEBHOOK_HEADER = "X-Webhook-Url"
# A presigned URL's expiry: S3 SigV4 allows at most seven days.
MAX_PRESIGN = 7 * 24 * 3600


class PlanError(ValueError):
    """A delivery header or query value that cannot be used; the message says why."""


@dataclass(frozen=True)
class DeliveryDefaults:
    """The agent-wide settings a request may override."""

    output_store: str | None = None
    presign: float = 0
    webhook_url: str | None = None


@dataclass(frozen=True)
class DeliveryPlan:
    """Delivery for one task: where outputs go, how they are named, whom to tell."""

    output_store: str | None = None
    presign: float = 0
    webhook_url: str | None = None
    image_format: ImageFormat | None = None

    @property
    def presign_asked(self) -> bool:
        """True when urls are presigned (then they replace base64 in sync answers)."""
        return self.output_store is not None and self.presign > 0


def parse_plan(
    headers: Mapping[str, str], query: Mapping[str, str], defaults: DeliveryDefaults
) -> DeliveryPlan:
    """The plan a request asks for; PlanError for unusable values (nothing is started)."""
    try:
        image_format = ImageFormat.parse(query.get("format"), query.get("quality"))
    except FormatError as exc:
        raise PlanError(str(exc)) from None
    presign = defaults.presign
    raw = query.get("presign")
    if raw is not None:
        try:
            presign = float(raw)
        except ValueError:
            raise PlanError(f"presign must be a number of seconds, not {raw!r}") from None
        if not 0 <= presign <= MAX_PRESIGN:
            raise PlanError(f"presign must be 0-{MAX_PRESIGN} seconds, not {raw}")
    store = headers.get(OUTPUT_STORE_HEADER) or defaults.output_store
    webhook = headers.get(WEBHOOK_HEADER) or defaults.webhook_url
    return DeliveryPlan(
        output_store=store, presign=presign, webhook_url=webhook, image_format=image_format
    )
