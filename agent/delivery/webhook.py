"""Webhook sender: POST a signed event (Standard Webhooks) to a fenced URL, with retries.

Payload `{"type": "task.succeeded" | "task.failed" | "task.interrupted", "timestamp": ISO
8601, "data": <task record>}`, headers `webhook-id` (the same for every attempt of one
event, so receivers can drop duplicates), `webhook-timestamp`, `webhook-signature`
(`v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, signed with the `standardwebhooks`
package). Without a secret the event is sent unsigned (no `webhook-signature`).

Attempts: a 2xx ends delivery; a 5xx, 408, 429, timeout or connection error is retried
after a back-off (doubling, capped) up to `attempts` in all; anything else (3xx, 4xx,
refused address) ends it as failed. Caller-given URLs are fenced like image URLs: no
private, loopback or metadata addresses unless `--url-fetch-allow` allows them, checked on
the literal URL and on every resolved address (see agent/url_fetch.py); the operator's own
`--webhook` URL is trusted (receivers inside the VPC are common). Redirects are not
followed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from standardwebhooks import Webhook
from yarl import URL

from agent.address_policy import AddressPolicy
from agent.delivery.metrics import DeliveryMetrics
from agent.fenced_http import AddressRefused, FencedSession, FetchRefused, check_url, display_url

log = logging.getLogger("agent.webhook")

RETRY_STATUSES = frozenset({408, 429})


class WebhookUrlRefused(ValueError):
    """A webhook URL that breaks the fetch rules (scheme, credentials, blocked address)."""


class WebhookSender:
    """Signs and POSTs webhook events; one session, fenced by an AddressPolicy."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        secret: str | None,
        metrics: DeliveryMetrics,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        resolver: AbstractResolver | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        trusted_url: str | None = None,
    ) -> None:
        if attempts < 1 or timeout <= 0 or backoff < 0:
            raise ValueError("attempts must be >= 1, timeout > 0 and backoff >= 0")
        self._policy = policy
        self._signer = Webhook(secret) if secret else None
        self._metrics = metrics
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sessions = FencedSession(
            policy, resolver, connect_timeout=timeout, user_agent="comfyui-agent"
        )
        self._sleep = sleep
        self._trusted_url = trusted_url
        self._trusted_session: aiohttp.ClientSession | None = None

    def check(self, url: str) -> str:
        """Return url if it may be used (scheme, no credentials, no blocked IP literal)."""
        if url == self._trusted_url:
            return url
        try:
            check_url(self._policy, url, URL(url))
        except FetchRefused as exc:
            raise WebhookUrlRefused(f"webhook URL refused: {exc.reason}") from None
        except (ValueError, TypeError) as exc:
            raise WebhookUrlRefused(f"webhook URL is not a valid URL ({exc})") from None
        return url

    def signed_headers(self, message_id: str, body: str, now: datetime) -> dict[str, str]:
        """The Standard Webhooks headers for body (signature only with a secret)."""
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "content-type": "application/json",
        }
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(message_id, now, body)
        return headers

    async def send(self, url: str, event_type: str, data: dict[str, Any], task_id: str) -> bool:
        """Deliver one event, retrying as the module docstring says; True once a 2xx came."""
        message_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
        body = json.dumps(payload, separators=(",", ":"))
        extra = {"task_id": task_id, "prompt_id": data.get("prompt_id")}
        shown = display_url(url)
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            outcome, detail = await self._attempt(url, message_id, body)
            last = attempt == self._attempts
            if outcome == "delivered":
                self._metrics.webhook_attempts["delivered"] += 1
                self._metrics.webhooks["delivered"] += 1
                log.info(
                    "task %s: webhook %s delivered to %s (attempt %d)",
                    task_id, event_type, shown, attempt, extra=extra,
                )  # fmt: skip
                return True
            retry = outcome == "retry" and not last
            self._metrics.webhook_attempts["retried" if retry else "failed"] += 1
            log.warning(
                "task %s: webhook %s to %s, attempt %d/%d: %s%s",
                task_id, event_type, shown, attempt, self._attempts, detail,
                "; retrying" if retry else "; giving up", extra=extra,
            )  # fmt: skip
            if not retry:
                break
            # Full jitter keeps many instances from retrying a recovering receiver at once.
            await self._sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._max_backoff)
        self._metrics.webhooks["failed"] += 1
        return False

    async def _attempt(self, url: str, message_id: str, body: str) -> tuple[str, str]:
        """("delivered" | "retry" | "fail", what happened)."""
        trusted = url == self._trusted_url
        if not trusted:
            try:
                check_url(self._policy, url, URL(url))
            except FetchRefused as exc:
                return "fail", exc.reason
        session = self._trusted() if trusted else self._sessions.get()
        headers = self.signed_headers(message_id, body, datetime.now(UTC))
        try:
            async with asyncio.timeout(self._timeout):
                async with session.post(
                    url, data=body.encode(), headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    status = response.status
        except AddressRefused as exc:
            return "fail", f"{exc}"
        except TimeoutError:
            return "retry", f"no answer within {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            return "retry", f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return "delivered", f"HTTP {status}"
        if status >= 500 or status in RETRY_STATUSES:
            return "retry", f"HTTP {status}"
        return "fail", f"HTTP {status}"

    def _trusted(self) -> aiohttp.ClientSession:
        """A plain session for the operator's own URL (no address fence)."""
        if self._trusted_session is None or self._trusted_session.closed:
            self._trusted_session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
                headers={"User-Agent": "comfyui-agent"},
            )
        return self._trusted_session

    async def close(self) -> None:
        """Close the sessions and the resolver made for them."""
        await self._sessions.close()
        if self._trusted_session is not None:
            await self._trusted_session.close()
