"""Reads of finished tasks: answered from kept bytes, identical to a fresh render, never stale."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from agent.answer_cache import AnswerCache
from store.records import TaskRecord, TaskStatus
from tests.agent_harness import AgentUnderTest, running_agent

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    async with running_agent(
        tmp_path_factory.mktemp("reads"), fake_args=("--slow-delay", "0")
    ) as a:
        yield a


def prompt(fail: bool = False) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": 8,
                "height": 8,
                "batch_size": 1,
                "color": secrets.randbelow(1 << 24),
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r"}},
    }
    if fail:
        nodes["1"]["inputs"]["width"] = -5  # ComfyUI refuses it: a failed task
    return nodes


async def get(agent: AgentUnderTest, path: str) -> tuple[int, dict[str, str], bytes]:
    async with agent.session.get(agent.url + path) as response:
        return response.status, dict(response.headers), await response.read()


async def test_kept_answers_match_the_stored_record(agent: AgentUnderTest) -> None:
    task_id = f"read-{secrets.token_hex(4)}"
    async with agent.session.post(
        f"{agent.url}/api/run", json=prompt(), headers={"task-id": task_id}
    ) as response:
        assert response.status == 200
    stored = await agent.services.store.load(task_id)
    assert stored is not None and stored.status is TaskStatus.SUCCEEDED
    for path, expected in (
        (f"/api/status?id={task_id}", stored.progress_map()),
        (f"/api/tasks/{task_id}", stored.model_dump(mode="json")),
    ):
        first = await get(agent, path)
        second = await get(agent, path)
        assert first[0] == second[0] == 200
        assert first[2] == second[2] == json.dumps(expected).encode()
        for headers in (first[1], second[1]):
            assert headers["Content-Type"] == "application/json; charset=utf-8"
            assert headers["X-Task-Id"] == task_id
            assert headers["X-Task-Status"] == "succeeded"
    assert (await get(agent, f"/api/tasks/{task_id}"))[1]["Location"] == f"/api/tasks/{task_id}"
    cache = agent.services.answers
    assert isinstance(cache, AnswerCache) and len(cache) >= 1


async def test_a_task_run_again_here_is_never_answered_from_the_old_run(
    agent: AgentUnderTest,
) -> None:
    task_id = f"again-{secrets.token_hex(4)}"
    async with agent.session.post(
        f"{agent.url}/api/run", json=prompt(fail=True), headers={"task-id": task_id}
    ) as response:
        assert response.headers["X-Task-Status"] == "failed"
    assert (await get(agent, f"/api/status?id={task_id}"))[1]["X-Task-Status"] == "failed"
    # Run the same id again at once (well inside the cache's fresh window).
    async with agent.session.post(
        f"{agent.url}/api/run", json=prompt(), headers={"task-id": task_id}
    ) as response:
        assert response.headers["X-Task-Status"] == "succeeded"
    status, headers, body = await get(agent, f"/api/tasks/{task_id}")
    assert status == 200 and headers["X-Task-Status"] == "succeeded"
    assert TaskRecord.model_validate_json(body).status is TaskStatus.SUCCEEDED


async def test_unknown_task_is_still_404(agent: AgentUnderTest) -> None:
    assert (await get(agent, "/api/status?id=never-ran"))[0] == 404
    assert (await get(agent, "/api/tasks/never-ran"))[0] == 404
