"""Warm-up: one workflow runs after ComfyUI is ready and before /readyz and /initialize
say ready; a failing or slow warm-up does not hold readiness forever."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt


def write_prompt(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps(body))
    return path


def slow_prompt(steps: int) -> dict[str, Any]:
    body = trace_prompt("progress")
    body["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    body["2"]["inputs"]["steps"] = steps
    body["9"]["inputs"]["filename_prefix"] = f"warm_{uuid.uuid4().hex[:6]}"
    return body


async def readyz(agent: AgentUnderTest) -> tuple[int, dict[str, Any]]:
    async with agent.session.get(f"{agent.url}/readyz") as response:
        return response.status, await response.json()


async def wait_ready(agent: AgentUnderTest, timeout: float = 30) -> list[dict[str, Any]]:
    """Poll /readyz until 200; every answer seen, with the time it came."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            status, body = await readyz(agent)
            seen.append({"at": time.time(), "status": status, **body})
            if status == 200:
                return seen
            await asyncio.sleep(0.02)


async def metrics_text(agent: AgentUnderTest) -> str:
    async with agent.session.get(f"{agent.url}/metrics") as response:
        return await response.text()


async def test_warmup_runs_before_readiness_in_order(tmp_path: Path) -> None:
    warmup = write_prompt(tmp_path, slow_prompt(steps=25))
    async with running_agent(tmp_path, flags=["--warmup", str(warmup)], wait_ready=False) as agent:
        initialize = asyncio.create_task(
            agent.session.post(f"{agent.url}/initialize", timeout=None)
        )
        seen = await wait_ready(agent)
        ready_at = seen[-1]["at"]
        async with await initialize as response:
            assert response.status == 200
            initialized_at = time.time()
        warm = agent.services.warmup
        assert warm is not None and warm.task_id is not None
        record = await agent.services.store.load(warm.task_id)
        assert record is not None
        assert record.status.value == "succeeded"
        assert record.finished_at is not None
        # ComfyUI was up and the warm-up running while /readyz still said 503.
        assert any(s["comfyui"] == "ready" and s["status"] == 503 for s in seen)
        assert all(not s["warmed_up"] for s in seen[:-1])
        assert record.finished_at <= ready_at
        assert record.finished_at <= initialized_at
        # The warm-up really ran on ComfyUI.
        async with agent.session.get(f"{agent.comfyui_url}/history") as response:
            assert record.prompt_id in await response.json()
        text = await metrics_text(agent)
        assert 'comfyui_agent_warmup_status{status="succeeded"} 1' in text
        seconds = float(text.split("\ncomfyui_agent_warmup_seconds ")[1].split()[0])
        assert seconds > 0.2  # 25 slow steps


async def test_slow_warmup_gives_way_after_its_timeout(tmp_path: Path) -> None:
    warmup = write_prompt(tmp_path, slow_prompt(steps=2000))
    flags = ["--warmup", str(warmup), "--warmup-timeout", "1"]
    async with running_agent(tmp_path, flags=flags, wait_ready=False) as agent:
        await wait_ready(agent)
        warm = agent.services.warmup
        assert warm is not None and warm.task_id is not None
        record = await agent.services.store.load(warm.task_id)
        assert record is not None and not record.status.is_terminal  # still going on
        assert 'comfyui_agent_warmup_status{status="timeout"} 1' in await metrics_text(agent)
        await agent.services.runner.interrupt(warm.task_id)


async def test_failing_or_unreadable_warmup_does_not_block_readiness(tmp_path: Path) -> None:
    failing = write_prompt(tmp_path, trace_prompt("runtime_error"))
    async with running_agent(
        tmp_path / "a", flags=["--warmup", str(failing)], wait_ready=False
    ) as agent:
        await wait_ready(agent)
        assert 'comfyui_agent_warmup_status{status="failed"} 1' in await metrics_text(agent)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    async with running_agent(
        tmp_path / "b", flags=["--warmup", str(broken)], wait_ready=False
    ) as agent:
        await wait_ready(agent)
        assert 'comfyui_agent_warmup_status{status="failed"} 1' in await metrics_text(agent)


async def test_no_warmup_means_ready_as_soon_as_comfyui_is(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        status, body = await readyz(agent)
        assert status == 200
        assert body["warmed_up"] is True
        assert 'comfyui_agent_warmup_status{status="none"} 1' in await metrics_text(agent)


async def test_warmup_by_app_id_runs_the_app_as_saved(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    app = {"title": "Slow", "prompt": slow_prompt(steps=5), "params": []}
    (apps / "slow.json").write_text(json.dumps(app))
    flags = ["--apps", str(apps), "--warmup", "slow"]
    async with running_agent(tmp_path, flags=flags, wait_ready=False) as agent:
        await wait_ready(agent)
        warm = agent.services.warmup
        assert warm is not None and warm.task_id is not None
        record = await agent.services.store.load(warm.task_id)
        assert record is not None and record.status.value == "succeeded"
        assert record.app == "slow"
        assert record.progress["2"].value == 5
        assert 'comfyui_agent_warmup_status{status="succeeded"} 1' in await metrics_text(agent)


async def test_warmup_naming_neither_a_file_nor_an_app_fails_without_blocking(
    tmp_path: Path,
) -> None:
    flags = ["--warmup", "no-such-app-or-file"]
    async with running_agent(tmp_path, flags=flags, wait_ready=False) as agent:
        await wait_ready(agent)
        assert 'comfyui_agent_warmup_status{status="failed"} 1' in await metrics_text(agent)
