"""Every documented status, provoked on purpose and checked against /api/openapi.json.

Random generation (tests/test_contract.py) cannot reach a run timeout, a crashed ComfyUI or
a full queue; here each is made to happen on a real agent process (fake ComfyUI child), and
every answer is validated by schemathesis against the document: a documented status, a
body matching that status' schema. The end checks that every documented status of the
task and run operations was seen.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import requests
import schemathesis

from tests.agent_harness import trace_prompt
from tests.agent_process import AgentProcess, spawn_agent, stop_gracefully, wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

MAX_BODY = 4096
RUN_TIMEOUT = 4.0
# Statuses these scenarios must produce (401 belongs to tests/test_security.py; 503 to
# tests/test_failures.py, which stops and starves ComfyUI on purpose).
EXPECTED = {
    "POST /api/run": {200, 400, 409, 413, 422, 429, 500, 502, 504},
    "GET /api/status": {200, 400, 404},
    "POST /api/tasks": {200, 202},
    "GET /api/tasks/{task_id}": {200, 400, 404},
    "DELETE /api/tasks/{task_id}": {202, 404, 409},
}


class Checked:
    """Sends requests and validates every answer against the agent's own document."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.schema = schemathesis.openapi.from_url(f"{agent.url}/api/openapi.json")
        self.seen: dict[str, set[int]] = defaultdict(set)

    async def call(
        self,
        method: str,
        path: str,
        template: str,
        body: Any = None,
        raw: bytes | None = None,
        **headers: str,
    ) -> requests.Response:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = await asyncio.to_thread(
            requests.request,
            method,
            f"{self.agent.url}{path}",
            data=data,
            headers={"Content-Type": "application/json", **headers},
            timeout=60,
        )
        operation = self.schema[template][method]
        documented = operation.definition.raw["responses"]
        assert str(response.status_code) in documented, (method, path, response.text)
        operation.validate_response(response)
        self.seen[f"{method} {template}"].add(response.status_code)
        return response


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentProcess]:
    flags = [
        "--max-queue",
        "2",
        "--run-timeout",
        str(RUN_TIMEOUT),
        "--max-body",
        str(MAX_BODY),
        "--ready-timeout",
        "20",
    ]
    process = await spawn_agent(tmp_path_factory.mktemp("statuses"), flags)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, process)
        yield process
    finally:
        code = await stop_gracefully(process)
        assert code == 0, f"agent exit code {code}:\n{process.log_tail()}"


def slow(steps: int) -> dict[str, Any]:
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    return prompt


def fresh(name: str) -> dict[str, Any]:
    prompt = trace_prompt(name)
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    return prompt


async def wait_terminal(api: Checked, task_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            response = await api.call("GET", f"/api/tasks/{task_id}", "/api/tasks/{task_id}")
            record: dict[str, Any] = response.json()
            if record["status"] in ("succeeded", "failed", "interrupted", "lost"):
                return record
            await asyncio.sleep(0.1)


async def test_every_documented_status_matches_the_document(agent: AgentProcess) -> None:
    api = Checked(agent)
    run, tasks, task = "/api/run", "/api/tasks", "/api/tasks/{task_id}"

    # Runs that end by themselves: success, ComfyUI's validation, a node raising.
    ok = await api.call("POST", run, run, fresh("success"), **{"task-id": "s-ok"})
    assert ok.status_code == 200
    assert (
        await api.call("POST", run, run, trace_prompt("validation_bad_value"))
    ).status_code == 400
    assert (await api.call("POST", run, run, fresh("runtime_error"))).status_code == 500
    # Refused before a task exists: too large, an image input that is not one.
    big = json.dumps({"1": {"class_type": "X", "inputs": {"s": "x" * MAX_BODY}}}).encode()
    assert (await api.call("POST", run, run, raw=big)).status_code == 413
    bad_image = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "%PDF-1.7 not an image"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }
    assert (await api.call("POST", run, run, bad_image)).status_code == 422

    # Status reads.
    assert (await api.call("GET", "/api/status?id=s-ok", "/api/status")).status_code == 200
    assert (await api.call("GET", "/api/status?id=nobody", "/api/status")).status_code == 404
    assert (await api.call("GET", "/api/status?id=-bad", "/api/status")).status_code == 400
    assert (await api.call("GET", "/api/tasks/nobody", task)).status_code == 404
    assert (await api.call("GET", "/api/tasks/-bad", task)).status_code == 400
    assert (await api.call("DELETE", "/api/tasks/nobody", task)).status_code == 404

    # The queue: two long runs fill it; the same id again is 409, a third run 429.
    first = await api.call("POST", tasks, tasks, slow(400), **{"task-id": "q-1"})
    second = await api.call("POST", tasks, tasks, slow(400), **{"task-id": "q-2"})
    assert first.status_code == second.status_code == 202
    assert (await api.call("POST", run, run, slow(5), **{"task-id": "q-1"})).status_code == 409
    assert (await api.call("POST", run, run, slow(5))).status_code == 429
    assert (await api.call("GET", "/api/tasks/q-1", task)).status_code == 200
    assert (await api.call("DELETE", "/api/tasks/q-2", task)).status_code == 202
    assert (await wait_terminal(api, "q-2"))["status"] == "interrupted"
    assert (await api.call("DELETE", "/api/tasks/q-2", task)).status_code == 409
    # q-1 outlives --run-timeout: it ends failed (timeout).
    assert (await wait_terminal(api, "q-1"))["error"]["type"] == "timeout"
    # A succeeded task id posted again is answered from the store.
    assert (
        await api.call("POST", tasks, tasks, fresh("success"), **{"task-id": "s-ok"})
    ).status_code == 200

    # A sync run longer than --run-timeout: 504.
    assert (await api.call("POST", run, run, slow(400))).status_code == 504

    # ComfyUI dies mid-run: 502.
    crashing = asyncio.create_task(api.call("POST", run, run, slow(200), **{"task-id": "crash"}))
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(20):
            while True:
                async with session.get(f"{agent.url}/api/tasks/crash") as response:
                    if response.status == 200 and (await response.json())["status"] == "running":
                        break
                await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientError):  # it exits without answering
            async with session.post(f"{agent.comfyui_url}/fake/crash") as response:
                await response.read()
    assert (await crashing).status_code == 502

    print("\nstatuses seen:", {label: sorted(codes) for label, codes in api.seen.items()})
    for label, codes in EXPECTED.items():
        assert codes <= api.seen[label], (label, codes - api.seen[label])
