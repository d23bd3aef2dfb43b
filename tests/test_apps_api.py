"""The app routes against the fake ComfyUI: list, describe, run, tasks, websocket."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.inputs import content_name
from tests.agent_harness import AgentUnderTest, running_agent
from tests.app_fixtures import PNG, invert_app, write_apps

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    tmp = tmp_path_factory.mktemp("apps-agent")
    write_apps(tmp / "apps")
    async with running_agent(tmp, ["--apps", str(tmp / "apps")]) as running:
        yield running


def apps_dir(agent: AgentUnderTest) -> Path:
    directory = agent.settings.apps
    assert directory is not None
    return directory


async def post(
    agent: AgentUnderTest, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
    async with agent.session.post(f"{agent.url}{path}", data=data, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


async def get(agent: AgentUnderTest, path: str) -> tuple[int, Any]:
    async with agent.session.get(f"{agent.url}{path}") as response:
        return response.status, await response.json()


def fresh_prefix() -> dict[str, Any]:
    # A new prefix each run: nothing comes from ComfyUI's cache.
    return {"3.filename_prefix": f"t_{uuid.uuid4().hex[:8]}"}


async def test_list_is_a_superset_of_the_seed_prompt_list(agent: AgentUnderTest) -> None:
    status, apps = await get(agent, "/api/apps")
    assert status == 200
    assert [a["id"] for a in apps] == ["invert", "photo"]
    invert = apps[0]
    source = invert_app()
    assert invert["title"] == source["title"]
    assert invert["description"] == source["description"]
    assert invert["prompt"] == source["prompt"]
    assert [p["type"] for p in invert["params"]] == ["number", "select", "group"]
    width = invert["params"][0]
    assert {k: width[k] for k in ("id", "key", "title", "min", "max", "step")} == {
        "id": "1", "key": "width", "title": "Width", "min": 8, "max": 256, "step": 8
    }  # fmt: skip
    assert width["name"] == "1.width" and width["default"] == 64
    assert invert["params"][1]["options"] == ["32", "64", "128"]
    photo = apps[1]
    assert [p["name"] for p in photo["params"]] == ["2.steps", "1.image"]  # _meta.edit last


async def test_one_app_and_unknown_app(agent: AgentUnderTest) -> None:
    status, app = await get(agent, "/api/apps/invert")
    assert status == 200 and app["id"] == "invert"
    status, body = await get(agent, "/api/apps/nope")
    assert status == 404
    assert body == {"message": "AppNotFound", "error": "app nope not found"}
    status, _, body = await post(agent, "/api/apps/nope/run", {"params": {}})
    assert status == 404 and body["message"] == "AppNotFound"


async def test_run_sets_params_and_answers_like_api_run(agent: AgentUnderTest) -> None:
    params = {"1.width": "16", "1.height": "32", **fresh_prefix()}
    status, headers, body = await post(
        agent, "/api/apps/invert/run", {"params": params}, {"task-id": "app-run-1"}
    )
    assert status == 200, body
    assert headers["X-Task-Id"] == "app-run-1"
    assert headers["X-Task-Status"] == "succeeded"
    assert set(body) == {"1", "2", "3"}
    assert body["3"]["images"][0]["filename"].startswith(params["3.filename_prefix"])
    png = base64.b64decode(body["3"]["results"][0])
    assert png.startswith(b"\x89PNG") and png[16:24] == (16).to_bytes(4, "big") + (32).to_bytes(
        4, "big"
    )
    status, record = await get(agent, "/api/tasks/app-run-1")
    assert record["app"] == "invert"
    assert record["params"] == {"1.width": 16, "1.height": 32, **fresh_keys(params)}


def fresh_keys(params: dict[str, Any]) -> dict[str, Any]:
    return {"3.filename_prefix": params["3.filename_prefix"]}


async def test_no_body_runs_the_app_as_saved(agent: AgentUnderTest) -> None:
    status, _, body = await post(agent, "/api/apps/invert/run?results=none")
    assert status == 200, body
    assert "results" not in body["3"]
    assert body["3"]["images"]


async def test_param_errors_are_422_and_nothing_runs(agent: AgentUnderTest) -> None:
    status, headers, body = await post(
        agent,
        "/api/apps/invert/run",
        {"params": {"1.width": "12", "1.batch_size": 2, "2.image": "x"}},
        {"task-id": "app-bad-params"},
    )
    assert status == 422
    assert headers["X-Task-Id"] == "app-bad-params"
    assert body["message"] == "ParamError"
    error = body["error"]
    assert error["param"] == "1.width"
    assert "not a multiple of the step 8" in error["message"]
    assert [e["param"] for e in error["details"]["errors"]] == [
        "1.width",
        "1.batch_size",
        "2.image",
    ]
    status, _ = await get(agent, "/api/tasks/app-bad-params")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[1]", "must be a JSON object"),
        (b'{"params": [1]}', "params must be an object"),
        (b'{"params": {}, "prompt": {}}', "unknown body field(s) prompt"),
        (b'{"app": "photo", "params": {}}', "names app 'photo'"),
        (b"{not json", "not valid JSON"),
    ],
)
async def test_bad_bodies_are_400(agent: AgentUnderTest, body: bytes, reason: str) -> None:
    status, _, answer = await post(agent, "/api/apps/invert/run", body)
    assert status == 400
    assert answer["message"] == "RequestParamsError"
    assert reason in answer["error"]


async def test_inline_image_is_uploaded_and_recorded_by_name(agent: AgentUnderTest) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    status, _, body = await post(
        agent,
        "/api/apps/photo/run",
        {"params": {"1.image": image, "2.steps": 3}},
        {"task-id": "app-photo-1"},
    )
    assert status == 200, body
    assert body["2"]["max"] == 3 and body["2"]["value"] == 3
    name = content_name(PNG, "png")
    assert (agent.fake_dir / "input" / name).read_bytes() == PNG
    _, record = await get(agent, "/api/tasks/app-photo-1")
    assert record["params"] == {"1.image": name, "2.steps": 3}


async def test_image_urls_are_fenced_like_loadimage_inputs(agent: AgentUnderTest) -> None:
    status, _, body = await post(
        agent,
        "/api/apps/photo/run",
        {"params": {"1.image": "http://127.0.0.1:9/cat.png"}},
    )
    assert status == 422
    assert body["message"] == "InputError"
    assert body["error"]["node_id"] == "1"
    assert "127.0.0.1" in body["error"]["message"]


async def test_tasks_route_starts_in_background(agent: AgentUnderTest) -> None:
    status, headers, record = await post(
        agent,
        "/api/apps/photo/tasks",
        {"params": {"1.image": base64.b64encode(PNG).decode(), "2.steps": "4"}},
        {"task-id": "app-task-1"},
    )
    assert status == 202
    assert headers["Location"] == "/api/tasks/app-task-1"
    assert record["app"] == "photo"
    assert record["params"] == {"1.image": content_name(PNG, "png"), "2.steps": 4}
    async with asyncio.timeout(20):
        while record["status"] not in ("succeeded", "failed"):
            await asyncio.sleep(0.1)
            _, record = await get(agent, "/api/tasks/app-task-1")
    assert record["status"] == "succeeded", record["error"]
    status, _, again = await post(agent, "/api/apps/photo/tasks", None, {"task-id": "app-task-1"})
    assert status == 200 and again["status"] == "succeeded"  # not run again


async def test_fc_async_redelivery_is_not_run_again(agent: AgentUnderTest) -> None:
    headers = {"X-Fc-Invocation-Type": "Async", "task-id": "app-async-1"}
    body = {"params": fresh_prefix()}
    status, _, first = await post(agent, "/api/apps/invert/run", body, headers)
    assert status == 200 and "results" not in first["3"]
    runs = agent.services.runner.finished_runs
    status, answer_headers, second = await post(agent, "/api/apps/invert/run", body, headers)
    assert status == 200
    assert answer_headers["X-Task-Status"] == "succeeded"
    assert second == first
    assert agent.services.runner.finished_runs == runs


async def test_websocket_first_message_runs_an_app(agent: AgentUnderTest) -> None:
    url = agent.ws_url("/api/run/ws?task_id=app-ws-1")
    async with agent.session.ws_connect(url) as ws:
        await ws.send_json({"app": "photo", "params": {"1.image": base64.b64encode(PNG).decode()}})
        messages = [json.loads(m.data) async for m in ws]
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "result", messages[-1]
    assert "progress" in kinds
    assert base64.b64decode(messages[-1]["data"]["3"]["results"][0]).startswith(b"\x89PNG")
    _, record = await get(agent, "/api/tasks/app-ws-1")
    assert record["app"] == "photo"


@pytest.mark.parametrize(
    ("message", "status", "name"),
    [
        ({"app": "nope"}, 404, "AppNotFound"),
        ({"app": "photo", "params": {"2.steps": 99}}, 422, "ParamError"),
        ({"app": "photo", "params": "x"}, 400, "RequestParamsError"),
    ],
)
async def test_websocket_app_errors(
    agent: AgentUnderTest, message: dict[str, Any], status: int, name: str
) -> None:
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws")) as ws:
        await ws.send_json(message)
        messages = [json.loads(m.data) async for m in ws]
    assert messages == [{"type": "error", "data": messages[0]["data"]}]
    assert messages[0]["data"]["message"] == name


async def test_app_files_are_reread_and_broken_ones_counted(agent: AgentUnderTest) -> None:
    directory = apps_dir(agent)
    (directory / "added.json").write_text(json.dumps(invert_app()))
    (directory / "broken.json").write_text("{")
    try:
        async with asyncio.timeout(10):
            while True:
                _, apps = await get(agent, "/api/apps")
                if "added" in [a["id"] for a in apps]:
                    break
                await asyncio.sleep(0.2)
        async with agent.session.get(f"{agent.url}/metrics") as response:
            text = await response.text()
        assert "comfyui_agent_apps 3" in text
        assert "comfyui_agent_apps_broken 1" in text
        assert "comfyui_agent_app_load_errors_total 1" in text
    finally:
        (directory / "added.json").unlink()
        (directory / "broken.json").unlink()


async def test_openapi_documents_the_app_routes(agent: AgentUnderTest) -> None:
    _, document = await get(agent, "/api/openapi.json")
    for path in ("/api/apps", "/api/apps/{app_id}", "/api/apps/{app_id}/run"):
        assert path in document["paths"]
    assert "post" in document["paths"]["/api/apps/{app_id}/tasks"]
    assert document["components"]["schemas"]["Panel"]["properties"]["type"]["enum"] == [
        "image",
        "select",
        "number",
        "string",
        "group",
    ]


async def test_other_methods_on_app_routes_are_405(agent: AgentUnderTest) -> None:
    async with agent.session.delete(f"{agent.url}/api/apps/invert") as response:
        assert response.status == 405


async def test_page_files_are_served_with_csp_and_etag(agent: AgentUnderTest) -> None:
    for path, status in (("/apps/", 200), ("/apps/invert", 200), ("/apps/anything", 404)):
        async with agent.session.get(f"{agent.url}{path}") as response:
            assert response.status == status
            assert response.content_type == "text/html"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    async with agent.session.get(f"{agent.url}/apps/static/apps.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        etag = response.headers["ETag"]
    headers = {"If-None-Match": etag}
    async with agent.session.get(f"{agent.url}/apps/static/apps.js", headers=headers) as response:
        assert response.status == 304
    for missing in ("/apps/static/nope.js", "/apps/static/apps.html"):
        async with agent.session.get(f"{agent.url}{missing}") as response:
            assert response.status == 404
    async with agent.session.get(f"{agent.url}/apps?token=x", allow_redirects=False) as response:
        assert response.status == 308
        assert response.headers["Location"] == "/apps/?token=x"
