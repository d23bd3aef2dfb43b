"""Signed webhooks at the end of tasks: a loopback receiver verifies every signature with
the `standardwebhooks` package and counts attempts and deliveries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from agent.address_policy import AddressPolicy
from agent.delivery.metrics import DeliveryMetrics
from agent.delivery.webhook import WebhookSender, WebhookUrlRefused
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt
from tests.delivery_fixtures import WEBHOOK_SECRET, WebhookReceiver
from tests.store_factories import RedisTarget, delete_redis_keys

ASYNC = {"X-Fc-Invocation-Type": "Async"}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.stop()


def hook_flags(receiver: WebhookReceiver, *extra: str) -> list[str]:
    return [
        "--webhook",
        receiver.url,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--url-fetch-allow",
        "127.0.0.1",
        *extra,
    ]


def prompt(steps: int = 0) -> dict[str, Any]:
    if steps:
        body = trace_prompt("progress")
        body["2"]["inputs"]["steps"] = steps
        body["9"]["inputs"]["filename_prefix"] = f"w_{uuid.uuid4().hex[:6]}"
    else:
        body = trace_prompt("success")
        body["3"]["inputs"]["filename_prefix"] = f"w_{uuid.uuid4().hex[:6]}"
    body["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    return body


async def post(
    agent: AgentUnderTest, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with agent.session.post(
        f"{agent.url}{path}", data=json.dumps(body), headers=headers or {}
    ) as response:
        return response.status, await response.json()


async def metrics_text(agent: AgentUnderTest) -> str:
    async with agent.session.get(f"{agent.url}/metrics") as response:
        return await response.text()


async def test_succeeded_task_is_delivered_once_after_retries(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.statuses = [500, 503]  # two server errors, then 204
    async with running_agent(tmp_path, flags=hook_flags(receiver)) as agent:
        status, body = await post(agent, "/api/run", prompt(), {"task-id": "wh-1"})
        assert status == 200
        [event] = await receiver.wait_events(1)
        assert event["type"] == "task.succeeded"
        data = event["data"]
        assert data["task_id"] == "wh-1"
        assert data["status"] == "succeeded"
        assert data["progress"]["3"]["images"] == body["3"]["images"]
        assert "results" not in json.dumps(data)  # never base64
        assert len(receiver.attempts) == 3
        assert receiver.bad_signatures == 0
        text = await metrics_text(agent)
        assert 'comfyui_agent_webhook_attempts_total{outcome="retried"} 2' in text
        assert 'comfyui_agent_webhook_attempts_total{outcome="delivered"} 1' in text
        assert 'comfyui_agent_webhooks_total{outcome="delivered"} 1' in text
        await asyncio.sleep(0.3)
        assert len(receiver.events) == 1


async def test_failed_and_interrupted_tasks_and_per_request_url(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    flags = ["--webhook-secret", WEBHOOK_SECRET, "--url-fetch-allow", "127.0.0.1"]
    async with running_agent(tmp_path, flags=flags) as agent:
        headers = {"X-Webhook-Url": receiver.url, "task-id": "wh-bad"}
        status, _ = await post(agent, "/api/run", trace_prompt("runtime_error"), headers)
        assert status == 500
        headers = {"X-Webhook-Url": receiver.url, "task-id": "wh-int"}
        status, _ = await post(agent, "/api/tasks", prompt(steps=200), headers)
        assert status == 202
        await asyncio.sleep(0.5)
        async with agent.session.delete(f"{agent.url}/api/tasks/wh-int") as response:
            assert response.status == 202
        events = await receiver.wait_events(2)
        by_task = {e["data"]["task_id"]: e["type"] for e in events}
        assert by_task["wh-int"] == "task.interrupted"
        assert by_task["wh-bad"] == "task.failed"
        # No webhook asked: none sent.
        status, _ = await post(agent, "/api/run", prompt(), {"task-id": "wh-none"})
        assert status == 200
        await asyncio.sleep(0.3)
        assert len(receiver.events) == 2


async def test_webhook_urls_are_fenced(receiver: WebhookReceiver, tmp_path: Path) -> None:
    trusted = WebhookReceiver()
    await trusted.start()
    try:
        # The operator's own --webhook may be on a private address; callers' URLs may not.
        flags = ["--webhook", trusted.url, "--webhook-secret", WEBHOOK_SECRET]
        async with running_agent(tmp_path, flags=flags) as agent:
            for url in (receiver.url, "http://169.254.169.254/x", "ftp://example.com/", "nope"):
                status, body = await post(agent, "/api/run", prompt(), {"X-Webhook-Url": url})
                assert status == 422, url
                assert body["message"] == "DeliveryRefused"
            assert receiver.attempts == []
            status, _ = await post(agent, "/api/run", prompt(), {"task-id": "wh-op"})
            assert status == 200
            [event] = await trusted.wait_events(1)
            assert event["data"]["task_id"] == "wh-op"
    finally:
        await trusted.stop()


async def test_client_errors_are_not_retried(receiver: WebhookReceiver) -> None:
    receiver.statuses = [400]
    metrics = DeliveryMetrics()
    sender = WebhookSender(
        AddressPolicy(["127.0.0.1"]), secret=WEBHOOK_SECRET, metrics=metrics, backoff=0
    )
    try:
        assert not await sender.send(receiver.url, "task.failed", {"task_id": "x"}, "x")
    finally:
        await sender.close()
    assert len(receiver.attempts) == 1
    assert metrics.webhook_attempts == {"failed": 1}
    with pytest.raises(WebhookUrlRefused):
        sender.check("http://user:pw@example.com/")


async def test_delivery_follows_the_answer_and_survives_it(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.statuses = [503]
    flags = hook_flags(receiver)
    async with running_agent(tmp_path, flags=flags) as agent:
        # Sync: answered first; the webhook (retried after ~1 s) arrives later.
        status, _ = await post(agent, "/api/run", prompt(), {"task-id": "wh-s"})
        assert status == 200
        assert receiver.events == []
        await receiver.wait_events(1)
        # FC async: the answer waits for the webhook (the instance may be frozen after).
        receiver.statuses = [503]
        status, _ = await post(agent, "/api/run", prompt(), {"task-id": "wh-a", **ASYNC})
        assert status == 200
        assert [e["data"]["task_id"] for e in receiver.events] == ["wh-s", "wh-a"]


async def test_one_delivery_across_two_instances_sharing_redis(
    receiver: WebhookReceiver, tmp_path: Path, redis_target: RedisTarget
) -> None:
    prefix = redis_target.prefix_for(tmp_path)
    separator = "&" if "?" in redis_target.url else "?"
    store = f"{redis_target.url}{separator}prefix={quote(prefix, safe='')}"
    common = [*hook_flags(receiver), "--task-lease", "2"]
    try:
        async with (
            running_agent(tmp_path / "a2", flags=[*common, "--instance", "A", "--store", store])
            as a,
            running_agent(tmp_path / "b2", flags=[*common, "--instance", "B", "--store", store])
            as b,
        ):  # fmt: skip
            body = prompt(steps=20)
            headers = {"task-id": "wh-shared", **ASYNC}
            # FC delivers the same request twice, to two instances, at once.
            answers = await asyncio.gather(
                post(a, "/api/run", body, headers), post(b, "/api/run", body, headers)
            )
            assert [status for status, _ in answers] == [200, 200]
            await receiver.wait_events(1)
            # And once more after it succeeded: answered from the store, nothing sent.
            status, _ = await post(b, "/api/run", body, headers)
            assert status == 200
            # An instance that finished the same task again (a lost lease taken over)
            # finds the marker set and stays silent.
            other = b if a.services.runner.finished_runs else a
            record = await other.services.store.load("wh-shared")
            assert record is not None
            delivery = other.services.delivery
            assert delivery is not None
            await delivery._deliver(receiver.url, "task.succeeded", record)
            await asyncio.sleep(0.3)
            assert len(receiver.events) == 1
            assert receiver.events[0]["data"]["task_id"] == "wh-shared"
            assert delivery.metrics.webhooks["skipped"] == 1
    finally:
        await asyncio.to_thread(delete_redis_keys, redis_target.url, prefix)
