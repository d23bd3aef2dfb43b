"""The agent against a real ComfyUI (set COMFYUI_DIR; COMFYUI_PYTHON for its venv).

The agent is started as users start it: the `comfyui-agent` console script with
`--comfyui-dir`, so ComfyUI is its real child. Workflows that need the traces' custom
test nodes (../shared/tools/comfyui_test_nodes in custom_nodes/) or the random-weight
checkpoint (tiny-sd15-random.safetensors) run only when those are installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.agent_harness import trace_prompt
from tests.real_comfyui import COMFYUI_DIR, RealAgent
from tests.real_comfyui import real_agent as start_real_agent

pytestmark = [
    pytest.mark.skipif(
        not COMFYUI_DIR,
        reason="COMFYUI_DIR is not set: no real ComfyUI checkout to test against",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def real_agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealAgent]:
    agent: RealAgent | None = None
    async with start_real_agent(tmp_path_factory.mktemp("real")) as started:
        agent = started
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{agent.url}/object_info") as response:
                agent.nodes = set(await response.json())
        yield agent
    assert agent.exit_code == 0, "the agent did not exit cleanly on SIGTERM"


async def run(agent: RealAgent, prompt: dict[str, Any], **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{agent.url}/api/run", json=prompt, headers=headers) as response:
            return response.status, await response.json()


async def test_model_free_workflow_returns_images_and_results(real_agent: RealAgent) -> None:
    prompt = trace_prompt("success")
    prompt["1"]["inputs"]["color"] = int(time.time()) % 0xFFFFFF  # not cached
    status, body = await run(real_agent, prompt, **{"task-id": "real-success"})
    assert status == 200, body
    assert all(node["value"] == node["max"] == 1 for node in body.values())
    [image] = body["3"]["images"]
    assert image["type"] == "output"
    assert base64.b64decode(body["3"]["results"][0]).startswith(b"\x89PNG")
    # Unchanged again: everything cached, must still answer at once.
    status, body = await asyncio.wait_for(run(real_agent, prompt), 30)
    assert status == 200 and all(node["cached"] for node in body.values())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{real_agent.url}/api/status?id=real-success") as response:
            assert response.status == 200
            assert response.headers["X-Task-Status"] == "succeeded"


async def test_validation_error_passes_comfyui_node_errors(real_agent: RealAgent) -> None:
    status, body = await run(real_agent, trace_prompt("validation_bad_value"))
    assert status == 400
    assert body["message"] == "CallComfyUIPromptError"
    assert "1" in body["error"]["node_errors"]


async def test_runtime_error_fails_with_node_details(real_agent: RealAgent) -> None:
    status, body = await run(real_agent, trace_prompt("runtime_error"))
    assert status == 500
    assert body["error"]["node_type"] == "Canny"


async def test_ws_progress_of_a_stepped_node(real_agent: RealAgent) -> None:
    if "SlowCounter" not in real_agent.nodes:
        pytest.skip("the traces' test nodes are not installed in custom_nodes/")
    prompt = trace_prompt("progress")
    prompt["2"]["inputs"]["steps"] = 4
    prompt["1"]["inputs"]["color"] = int(time.time() * 1000) % 0xFFFFFF
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{real_agent.url}/api/run/ws") as ws:
            await ws.send_json(prompt)
            messages = [json.loads(m.data) async for m in ws]
    values = [m["data"]["2"]["value"] for m in messages if m["type"] == "progress"]
    # Steps 0.2 s apart each show; the last may come only with the result, since a
    # watcher gets the newest state and ComfyUI finishes the prompt right after it.
    assert {1, 2, 3} <= set(values)
    assert values == sorted(values)
    assert messages[-1]["type"] == "result"
    assert messages[-1]["data"]["2"]["value"] == 4


async def test_txt2img_reports_sampler_steps(real_agent: RealAgent) -> None:
    checkpoint = Path(COMFYUI_DIR) / "models" / "checkpoints" / "tiny-sd15-random.safetensors"
    if not checkpoint.exists():
        pytest.skip("tiny-sd15-random.safetensors not built (../shared/tools/make_tiny_sd15.py)")
    prompt = trace_prompt("txt2img")
    prompt["3"]["inputs"]["seed"] = int(time.time())  # a new seed: the sampler runs
    status, body = await run(real_agent, prompt)
    assert status == 200, body
    assert body["3"]["value"] == body["3"]["max"] == 3
    assert base64.b64decode(body["9"]["results"][0]).startswith(b"\x89PNG")
