"""Outputs delivered to object storage through the API (fake ComfyUI child, moto S3)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt
from tests.delivery_fixtures import S3_ENV, S3Server, s3_server

__all__ = ["s3_server"]


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)


def prompt(prefix: str | None = None) -> dict[str, Any]:
    body = trace_prompt("success")
    body["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    body["3"]["inputs"]["filename_prefix"] = prefix or f"d_{uuid.uuid4().hex[:6]}"
    return body


async def post(
    agent: AgentUnderTest, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with agent.session.post(
        f"{agent.url}{path}", data=json.dumps(body), headers=headers or {}
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def get_json(agent: AgentUnderTest, path: str) -> Any:
    async with agent.session.get(f"{agent.url}{path}") as response:
        return await response.json()


async def test_sync_run_uploads_to_the_configured_store(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    flags = ["--output-store", s3_server.url(bucket, "runs")]
    async with running_agent(tmp_path, flags=flags) as agent:
        status, _, body = await post(agent, "/api/run", prompt(), {"task-id": "up-1"})
        assert status == 200, body
        node = body["3"]
        [image] = node["images"]
        key = f"runs/up-1/{image['filename']}"
        assert node["urls"] == [f"s3://{bucket}/{key}"]
        assert len(node["results"]) == 1  # base64 still inlined unless asked otherwise
        data, content_type = s3_server.get(bucket, key)
        assert content_type == "image/png"
        assert base64.b64decode(node["results"][0]) == data
        record = await get_json(agent, "/api/tasks/up-1")
        assert record["progress"]["3"]["urls"] == node["urls"]
        assert "urls" not in body["1"]  # nodes without files carry no urls
        metrics = await (await agent.session.get(f"{agent.url}/metrics")).text()
        assert 'comfyui_agent_output_uploads_total{outcome="uploaded"} 1' in metrics


async def test_presigned_urls_replace_base64_and_download(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    # The file is read over ComfyUI's /view here (the output directory given is empty).
    # A caller's store is fenced like image URLs: this one is on loopback.
    flags = ["--comfyui-output-dir", str(tmp_path / "elsewhere"), "--url-fetch-allow", "127.0.0.1"]
    async with running_agent(tmp_path, flags=flags) as agent:
        headers = {"X-Output-Store": s3_server.url(bucket), "task-id": "up-2"}
        status, _, body = await post(agent, "/api/run?presign=900", prompt(), headers)
        assert status == 200, body
        node = body["3"]
        assert "results" not in node
        [url] = node["urls"]
        assert url.startswith(f"{s3_server.endpoint}/{bucket}/out/up-2/")
        assert "X-Amz-Expires=900" in url
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert (await response.read())[:8] == b"\x89PNG\r\n\x1a\n"


async def test_format_converts_inline_and_uploaded_images(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    async with running_agent(tmp_path, flags=["--output-store", s3_server.url(bucket)]) as agent:
        status, _, body = await post(
            agent, "/api/run?format=jpeg&quality=80", prompt("fmt"), {"task-id": "up-3"}
        )
        assert status == 200, body
        node = body["3"]
        [image] = node["images"]
        assert image["filename"].endswith(".png")  # ComfyUI's name, unchanged
        stem = image["filename"].rsplit(".", 1)[0]
        assert node["urls"] == [f"s3://{bucket}/out/up-3/{stem}.jpg"]
        data, content_type = s3_server.get(bucket, f"out/up-3/{stem}.jpg")
        assert content_type == "image/jpeg"
        assert Image.open(io.BytesIO(data)).format == "JPEG"
        inline = base64.b64decode(node["results"][0])
        assert Image.open(io.BytesIO(inline)).format == "JPEG"
        original = agent.fake_dir / "output" / image["filename"]
        assert Image.open(original).format == "PNG"
        status, _, body = await post(agent, "/api/run?format=gif", prompt())
        assert status == 400
        assert "format must be jpeg or webp" in body["error"]


async def test_failed_upload_fails_the_task_naming_the_file(tmp_path: Path) -> None:
    from tests.fake_comfyui.fixtures import free_port

    dead = f"s3://bucket-x/out?endpoint=http://127.0.0.1:{free_port()}"
    async with running_agent(tmp_path, flags=["--output-store", dead]) as agent:
        agent.services.delivery._uploader.sleep = _no_sleep  # type: ignore[union-attr]
        status, _, body = await post(agent, "/api/tasks", prompt("fail"), {"task-id": "f1"})
        assert status == 202
        record = await _wait_terminal(agent, "f1")
        assert record["status"] == "failed"
        error = record["error"]
        assert error["type"] == "output_upload_failed"
        assert error["details"]["file"].startswith("fail_")
        assert error["details"]["file"] in error["message"]
        status, _, body = await post(agent, "/api/run", prompt(), {"task-id": "f2"})
        assert status == 502
        assert body["message"] == "OutputUploadFailed"


async def test_optional_store_lets_the_task_succeed(tmp_path: Path) -> None:
    from tests.fake_comfyui.fixtures import free_port

    dead = f"s3://bucket-x/out?endpoint=http://127.0.0.1:{free_port()}"
    flags = ["--output-store", dead, "--output-store-optional"]
    async with running_agent(tmp_path, flags=flags) as agent:
        agent.services.delivery._uploader.sleep = _no_sleep  # type: ignore[union-attr]
        status, _, body = await post(agent, "/api/run", prompt(), {"task-id": "o1"})
        assert status == 200, body
        assert "urls" not in body["3"]


async def test_request_store_on_a_private_endpoint_is_refused(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        headers = {"X-Output-Store": "s3://bucket-y/p?endpoint=http://10.1.2.3:9000"}
        status, _, body = await post(agent, "/api/run", prompt(), headers)
        assert status == 422
        assert body["message"] == "DeliveryRefused"
        assert "--url-fetch-allow" in body["error"]
        headers = {"X-Output-Store": "s3://bucket-y/p?endpoint=http://no-such-host.invalid:9000"}
        status, _, body = await post(agent, "/api/run", prompt(), headers)
        assert status == 422
        assert "no-such-host.invalid" in body["error"]
        headers = {"X-Output-Store": "s3://bucket-y/p?nope=1"}
        status, _, body = await post(agent, "/api/tasks", prompt(), headers)
        assert status == 422
        assert "unknown output store option" in body["error"]


async def _no_sleep(_: float) -> None:
    return None


async def _wait_terminal(agent: AgentUnderTest, task_id: str) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(30):
        while True:
            record = await get_json(agent, f"/api/tasks/{task_id}")
            if record.get("status") in ("succeeded", "failed", "interrupted"):
                return dict(record)
            await asyncio.sleep(0.05)


async def test_webhook_carries_the_urls(s3_server: S3Server, tmp_path: Path) -> None:
    from tests.delivery_fixtures import WEBHOOK_SECRET, WebhookReceiver

    bucket = s3_server.make_bucket()
    receiver = WebhookReceiver()
    await receiver.start()
    flags = [
        *("--output-store", s3_server.url(bucket)),
        *("--webhook", receiver.url, "--webhook-secret", WEBHOOK_SECRET),
        *("--url-fetch-allow", "127.0.0.1"),
    ]
    try:
        async with running_agent(tmp_path, flags=flags) as agent:
            status, _, _ = await post(agent, "/api/tasks", prompt(), {"task-id": "wu-1"})
            assert status == 202
            [event] = await receiver.wait_events(1)
    finally:
        await receiver.stop()
    node = event["data"]["progress"]["3"]
    assert node["urls"] == [f"s3://{bucket}/out/wu-1/{node['images'][0]['filename']}"]
    assert "results" not in node
