"""The agent's HTTP and websocket API against the fake ComfyUI as its real child process."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt

pytestmark = pytest.mark.asyncio(loop_scope="module")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    async with running_agent(tmp_path_factory.mktemp("agent")) as running:
        yield running


def distinct(prompt: dict[str, Any], marker: str) -> dict[str, Any]:
    """The prompt with a unique SaveImage prefix, so nothing is cached from earlier tests."""
    result = json.loads(json.dumps(prompt))
    for node in result.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = f"t_{marker}"
        if node["class_type"] == "EmptyImage":
            node["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    return result


async def wait_until_running(agent: AgentUnderTest, task_id: str) -> None:
    """Wait until the agent started task_id (a run is a background task of its own)."""
    async with asyncio.timeout(10):
        while agent.services.runner.get(task_id) is None:
            await asyncio.sleep(0.01)


async def post_run(
    agent: AgentUnderTest, body: Any, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with agent.session.post(
        f"{agent.url}/api/run{query}", data=data, headers=headers or {}
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def test_sync_run_answers_go_progress_map_with_decodable_results(
    agent: AgentUnderTest,
) -> None:
    prompt = distinct(trace_prompt("success"), "sync")
    status, headers, body = await post_run(agent, prompt, {"task-id": "sync-1"})
    assert status == 200, body
    assert headers["X-Task-Id"] == "sync-1"
    assert headers["X-Task-Status"] == "succeeded"
    assert set(body) == {"1", "2", "3"}
    for node_id, node in body.items():
        assert {"max", "value", "start", "last_updated", "images"} <= set(node)
        assert node["value"] == node["max"] == 1, node_id
        assert node["start"] > 0 and node["last_updated"] >= node["start"]
    assert body["1"]["images"] is None and "results" not in body["1"]
    [image] = body["3"]["images"]
    assert image["type"] == "output" and image["filename"].startswith("t_sync_")
    [encoded] = body["3"]["results"]
    png = base64.b64decode(encoded, validate=True)
    assert png.startswith(PNG_MAGIC)
    assert png == (agent.fake_dir / "output" / image["filename"]).read_bytes()


async def test_prompt_wrapper_body_is_accepted(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("success"), "wrapped")
    status, _, body = await post_run(agent, {"prompt": prompt}, query="?results=none")
    assert status == 200, body
    assert body["3"]["images"] and "results" not in body["3"]


async def test_cached_rerun_finishes_and_marks_cached_nodes(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("success"), "cached")
    first_status, _, first = await post_run(agent, prompt)
    assert first_status == 200
    # Fully cached: ComfyUI may finish before a late listener connects (the Go agent hung).
    status, _, body = await asyncio.wait_for(post_run(agent, prompt), timeout=10)
    assert status == 200, body
    assert all(node["cached"] and node["value"] == node["max"] == 1 for node in body.values())
    assert body["3"]["images"] == first["3"]["images"]
    assert body["3"]["results"] == first["3"]["results"]


async def test_eight_concurrent_runs_each_get_their_own_outputs(agent: AgentUnderTest) -> None:
    prompts = [distinct(trace_prompt("progress"), f"conc{i}") for i in range(8)]
    for prompt in prompts:
        prompt["2"]["inputs"]["steps"] = 3
    answers = await asyncio.gather(
        *(post_run(agent, p, {"task-id": f"conc-{i}"}) for i, p in enumerate(prompts))
    )
    for i, (status, headers, body) in enumerate(answers):
        assert status == 200, body
        assert headers["X-Task-Id"] == f"conc-{i}"
        assert body["2"]["value"] == body["2"]["max"] == 3
        [image] = body["9"]["images"]
        assert image["filename"].startswith(f"t_conc{i}_")
        assert base64.b64decode(body["9"]["results"][0]).startswith(PNG_MAGIC)


async def test_status_reads_the_stored_record(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("success"), "status")
    status, _, body = await post_run(agent, prompt, {"task-id": "status-1"})
    assert status == 200
    async with agent.session.get(f"{agent.url}/api/status", params={"id": "status-1"}) as response:
        assert response.status == 200
        assert response.headers["X-Task-Status"] == "succeeded"
        stored = await response.json()
    assert stored == {
        node_id: {k: v for k, v in n.items() if k != "results"} for node_id, n in body.items()
    }
    record = await agent.services.store.load("status-1")
    assert record is not None and record.status.value == "succeeded"
    assert record.prompt_id and record.instance == agent.settings.instance


async def test_unknown_task_is_404_json(agent: AgentUnderTest) -> None:
    async with agent.session.get(
        f"{agent.url}/api/status", params={"id": "no-such-task"}
    ) as response:
        assert response.status == 404
        assert await response.json() == {
            "message": "LoadProgressError",
            "error": "task no-such-task not found",
        }


@pytest.mark.parametrize("task_id", ["../etc/passwd", "a/b", "x" * 300, ".hidden"])
async def test_bad_task_ids_are_refused(agent: AgentUnderTest, task_id: str) -> None:
    async with agent.session.get(f"{agent.url}/api/status", params={"id": task_id}) as response:
        assert response.status == 400
        assert (await response.json())["message"] == "InvalidTaskId"
    status, _, body = await post_run(agent, trace_prompt("success"), {"task-id": task_id})
    assert status == 400 and body["message"] == "InvalidTaskId"


async def test_validation_error_is_400_with_comfyui_node_errors(agent: AgentUnderTest) -> None:
    status, headers, body = await post_run(
        agent, trace_prompt("validation_bad_value"), {"task-id": "invalid-1"}
    )
    assert status == 400
    assert headers["X-Task-Status"] == "failed"
    assert body["message"] == "CallComfyUIPromptError"
    assert body["error"]["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["error"]["node_errors"]["1"]["errors"]
    assert {e["type"] for e in errors} == {"invalid_input_type", "value_smaller_than_min"}
    record = await agent.services.store.load("invalid-1")
    assert record is not None and record.status.value == "failed"
    assert record.error is not None and record.error.type == "prompt_validation"


async def test_execution_error_fails_task_with_node_details(agent: AgentUnderTest) -> None:
    status, headers, body = await post_run(
        agent, trace_prompt("runtime_error_custom"), {"task-id": "exec-err-1"}
    )
    assert status == 500
    assert headers["X-Task-Status"] == "failed"
    assert body["message"] == "ExecutionError"
    error = body["error"]
    assert error["node_id"] == "2" and error["node_type"] == "FailAfter"
    assert error["message"] == "cref FailAfter: deliberate failure after 3 steps"
    assert error["details"]["exception_type"] == "RuntimeError"
    progress = body["progress"]
    assert progress["1"]["value"] == progress["1"]["max"] == 1
    assert (progress["2"]["value"], progress["2"]["max"]) == (3, 4)
    assert progress["9"]["max"] == 0  # never ran


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "empty"),
        (b'{"1": {"inputs": {}}}', "class_type"),
        (b'{"1": {"class_type": "EmptyImage", "inputs": []}}', "inputs"),
        (b'{"1": 5}', "must be an object"),
    ],
)
async def test_bad_bodies_are_400_and_store_nothing(
    agent: AgentUnderTest, raw: bytes, fragment: str
) -> None:
    task_id = f"bad-{uuid.uuid4().hex[:8]}"
    status, headers, body = await post_run(agent, raw, {"task-id": task_id})
    assert status == 400
    assert headers["X-Task-Id"] == task_id
    assert body["message"] == "RequestParamsError"
    assert fragment in body["error"]
    assert await agent.services.store.load(task_id) is None


async def test_body_over_max_body_is_413(agent: AgentUnderTest) -> None:
    big = (
        b'{"1": {"class_type": "EmptyImage", "inputs": {"x": "'
        + b"a" * agent.settings.max_body
        + b'"}}}'
    )
    status, _, body = await post_run(agent, big)
    assert status == 413
    assert body["message"] == "RequestTooLarge"


async def test_wrong_method_on_agent_route_is_405_json(agent: AgentUnderTest) -> None:
    async with agent.session.get(f"{agent.url}/api/run") as response:
        assert response.status == 405
        assert (await response.json())["message"] == "MethodNotAllowed"
        assert response.headers["Allow"] == "POST"
    async with agent.session.put(f"{agent.url}/api/tasks/some-task") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "DELETE, GET, HEAD"


async def test_ws_streams_progress_in_order_then_result(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("progress"), "ws")
    prompt["2"]["inputs"]["steps"] = 5
    messages = []
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?task_id=ws-1")) as ws:
        await ws.send_json(prompt)
        async for message in ws:
            messages.append(json.loads(message.data))
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    assert all(m["task_id"] == "ws-1" for m in messages)
    values = [m["data"]["2"]["value"] for m in messages]
    assert values == sorted(values), "progress went backwards"
    # A watcher gets the newest state, so under load some steps may be skipped; at
    # least the start and some progress are seen, and the result has the end.
    assert len(set(values)) >= 2
    result = messages[-1]["data"]
    assert result["2"]["value"] == result["2"]["max"] == 5
    assert base64.b64decode(result["9"]["results"][0]).startswith(PNG_MAGIC)
    # Consecutive progress messages always differ: status-only changes are not resent.
    progress = [json.dumps(m["data"], sort_keys=True) for m in messages[:-1]]
    assert all(a != b for a, b in itertools.pairwise(progress))


async def test_ws_declines_compression_a_browser_offers(agent: AgentUnderTest) -> None:
    # Previews (JPEG) and results (base64 of PNG) barely deflate; compressing them would
    # cost ComfyUI's cores more than it saves on the wire. Every message still arrives.
    prompt = distinct(trace_prompt("success"), "ws-deflate")
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws"), compress=15) as ws:
        assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        await ws.send_json(prompt)
        messages = [json.loads(message.data) async for message in ws]
    assert messages[-1]["type"] == "result"
    assert base64.b64decode(messages[-1]["data"]["3"]["results"][0]).startswith(PNG_MAGIC)


async def test_ws_error_message_for_execution_error(agent: AgentUnderTest) -> None:
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws")) as ws:
        await ws.send_json(trace_prompt("runtime_error_custom"))
        messages = [json.loads(m.data) async for m in ws]
    last = messages[-1]
    assert last["type"] == "error"
    assert last["data"]["message"] == "ExecutionError"
    assert last["data"]["error"]["node_type"] == "FailAfter"


async def test_ws_garbage_first_message_gets_error_and_close(agent: AgentUnderTest) -> None:
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws")) as ws:
        await ws.send_str("this is not json")
        messages = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
    assert messages == [
        {
            "type": "error",
            "data": {"message": "RequestParamsError", "error": messages[0]["data"]["error"]},
        }
    ]
    assert "not valid JSON" in messages[0]["data"]["error"]


async def test_ws_watch_of_a_finished_task_sends_result(agent: AgentUnderTest) -> None:
    await post_run(agent, distinct(trace_prompt("success"), "watch"), {"task-id": "watch-done"})
    async with agent.session.ws_connect(
        agent.ws_url("/api/run/ws?id=watch-done&results=none")
    ) as ws:
        messages = [json.loads(m.data) async for m in ws]
    assert [m["type"] for m in messages] == ["result"]
    assert messages[0]["data"]["3"]["images"]


async def test_ws_watch_follows_a_running_task(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("progress"), "watchlive")
    prompt["2"]["inputs"]["steps"] = 6
    run = asyncio.create_task(post_run(agent, prompt, {"task-id": "watch-live"}))
    await wait_until_running(agent, "watch-live")
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=watch-live")) as ws:
        messages = [json.loads(m.data) async for m in ws]
    status, _, _ = await run
    assert status == 200
    assert messages[-1]["type"] == "result"
    assert messages[-1]["data"]["2"]["value"] == 6


async def test_ws_watch_unknown_task_sends_404_error(agent: AgentUnderTest) -> None:
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=nobody")) as ws:
        messages = [json.loads(m.data) async for m in ws]
    assert messages == [
        {"type": "error", "data": {"message": "TaskNotFound", "error": "task nobody not found"}}
    ]


async def test_client_leaving_mid_run_does_not_stop_it(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("progress"), "leave")
    prompt["2"]["inputs"]["steps"] = 10
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?task_id=leaver")) as ws:
        await ws.send_json(prompt)
        await ws.receive(timeout=5)
    # The client is gone; the run goes on and its final state is stored.
    for _ in range(200):
        record = await agent.services.store.load("leaver")
        if record is not None and record.status.is_terminal:
            break
        await asyncio.sleep(0.05)
    assert record is not None and record.status.value == "succeeded"
    assert record.progress["2"].value == 10


async def test_same_task_id_while_running_is_409(agent: AgentUnderTest) -> None:
    prompt = distinct(trace_prompt("progress"), "dup")
    prompt["2"]["inputs"]["steps"] = 10
    first = asyncio.create_task(post_run(agent, prompt, {"task-id": "dup-1"}))
    await wait_until_running(agent, "dup-1")
    status, headers, body = await post_run(agent, prompt, {"task-id": "dup-1"})
    assert status == 409 and body["message"] == "TaskAlreadyRunning"
    assert headers["X-Task-Id"] == "dup-1"
    assert (await first)[0] == 200


async def test_proxy_passes_http_through(agent: AgentUnderTest) -> None:
    async with agent.session.get(f"{agent.url}/system_stats") as response:
        assert response.status == 200
        via_agent = await response.json()
    async with agent.session.get(f"{agent.comfyui_url}/system_stats") as response:
        direct = await response.json()
    assert via_agent["system"]["comfyui_version"] == direct["system"]["comfyui_version"]
    async with agent.session.get(f"{agent.url}/") as response:
        assert response.status == 200
        assert "text/html" in response.headers["Content-Type"]
    # A POST through the proxy reaches ComfyUI's own API (its validation answer).
    async with agent.session.post(f"{agent.url}/prompt", json={"nothing": 1}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "no_prompt"


async def test_proxy_passes_websocket_through(agent: AgentUnderTest) -> None:
    async with agent.session.ws_connect(agent.ws_url("/ws?clientId=proxied-client")) as ws:
        first = await ws.receive_json(timeout=5)
    assert first["type"] == "status"
    assert first["data"]["sid"] == "proxied-client"


async def test_health_and_readiness(agent: AgentUnderTest) -> None:
    async with agent.session.get(f"{agent.url}/healthz") as response:
        assert response.status == 200
    async with agent.session.get(f"{agent.url}/readyz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["ready"] is True and body["comfyui"] == "ready"


async def test_store_writes_are_coalesced(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--store-flush-interval", "0.5"]) as agent:
        store = agent.services.store
        writes: list[str] = []
        original = store.save

        async def counting_save(task: Any, *, token: int | None = None) -> None:
            writes.append(task.status.value)
            await original(task, token=token)

        store.save = counting_save  # type: ignore[method-assign]
        prompt = distinct(trace_prompt("progress"), "coalesce")
        prompt["2"]["inputs"]["steps"] = 30  # 30 progress events, 0.02 s apart
        status, _, _ = await post_run(agent, prompt)
        assert status == 200
    # The first record (settled: queued, or running already) + a few flushes + the final,
    # not one per event.
    assert writes[0] in ("queued", "running") and writes[-1] == "succeeded"
    assert writes.count("succeeded") == 1
    assert len(writes) <= 10, writes


async def test_openapi_document_describes_the_agent_routes(agent: AgentUnderTest) -> None:
    async with agent.session.get(f"{agent.url}/api/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    paths = set(document["paths"])
    assert {"/api/run", "/api/status", "/api/tasks", "/api/tasks/{task_id}"} <= paths
    schemas = document["components"]["schemas"]
    assert {"TaskRecord", "Workflow", "Error", "NodeProgressWithResults"} <= set(schemas)
    assert set(schemas["TaskRecord"]["properties"]) >= {"task_id", "status", "progress"}
    # Every documented path answers something other than the pass-through's 404.
    for path in paths:
        concrete = path.replace("{task_id}", "some-task").replace("{app_id}", "some-app")
        async with agent.session.get(f"{agent.url}{concrete}") as response:
            assert response.status != 404 or (await response.json())["message"] != "NotFound"
