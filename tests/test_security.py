"""Bearer token, CORS and the proxy modes, against the agent with the fake ComfyUI child."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "s3cret-token"
APP_ORIGIN = "https://app.example.com"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    flags = ["--token", TOKEN, "--cors-origins", APP_ORIGIN]
    async with running_agent(tmp_path_factory.mktemp("secure"), flags=flags) as running:
        yield running


async def call(
    agent: AgentUnderTest, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:  # no cookie jar carried over
        async with session.request(
            method, f"{agent.url}{path}", data=data, headers=headers
        ) as response:
            text = await response.text()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            return response.status, dict(response.headers), payload


PROTECTED = [
    ("POST", "/api/run"),
    ("GET", "/api/status?id=x"),
    ("GET", "/api/tasks/x"),
    ("POST", "/api/tasks"),
    ("DELETE", "/api/tasks/x"),
    ("GET", "/metrics"),
    ("GET", "/system_stats"),  # proxied to ComfyUI
    ("GET", "/"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_without_the_token_everything_but_probes_is_401(
    agent: AgentUnderTest, method: str, path: str
) -> None:
    body = trace_prompt("success") if method == "POST" else None
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, response_headers, payload = await call(agent, method, path, body, **headers)
        assert status == 401, (headers, payload)
        assert payload["message"] == "Unauthorized"
        assert response_headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/initialize")]
)
async def test_probes_and_fc_hooks_need_no_token(
    agent: AgentUnderTest, method: str, path: str
) -> None:
    status, _, _ = await call(agent, method, path)
    assert status == 200


async def test_the_right_token_opens_api_and_proxy(agent: AgentUnderTest) -> None:
    status, _, body = await call(agent, "POST", "/api/run", trace_prompt("success"), **AUTH)
    assert status == 200 and body["3"]["images"]
    status, _, _ = await call(agent, "GET", "/system_stats", Authorization=f"bearer {TOKEN}")
    assert status == 200


async def test_websockets_need_the_token_too(agent: AgentUnderTest) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(agent.ws_url("/api/run/ws"))
        assert refused.value.status == 401
        async with session.ws_connect(agent.ws_url("/api/run/ws"), headers=AUTH) as ws:
            await ws.send_json(trace_prompt("success"))
            messages = [json.loads(m.data) async for m in ws]
    assert messages[-1]["type"] == "result"


async def test_query_token_sets_a_cookie_for_the_web_page(agent: AgentUnderTest) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(f"{agent.url}/?token={TOKEN}") as response:
            assert response.status == 200
            cookie = response.cookies["comfyui_agent_token"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        # The page's own requests and its websocket now carry the cookie.
        async with session.get(f"{agent.url}/system_stats") as response:
            assert response.status == 200
        async with session.ws_connect(agent.ws_url("/ws?clientId=browser")) as ws:
            first = await ws.receive_json(timeout=5)
    assert first["type"] == "status"
    status, _, _ = await call(agent, "GET", "/?token=wrong")
    assert status == 401


async def test_listed_origin_gets_cors_headers(agent: AgentUnderTest) -> None:
    status, headers, _ = await call(agent, "GET", "/api/status?id=nope", Origin=APP_ORIGIN, **AUTH)
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Task-Id" in headers["Access-Control-Expose-Headers"]
    assert "Origin" in headers["Vary"]
    # Even the 401 is readable by the listed page (so it can ask for a login).
    status, headers, _ = await call(agent, "GET", "/api/status?id=x", Origin=APP_ORIGIN)
    assert status == 401 and headers["Access-Control-Allow-Origin"] == APP_ORIGIN


async def test_other_origins_are_refused_and_not_reflected(agent: AgentUnderTest) -> None:
    status, headers, body = await call(
        agent, "GET", "/api/status?id=nope", Origin="https://evil.example", **AUTH
    )
    assert status == 403 and body["message"] == "OriginNotAllowed"
    assert not any(name.lower().startswith("access-control-") for name in headers)


async def test_preflight_needs_no_token_and_checks_the_origin(agent: AgentUnderTest) -> None:
    status, headers, _ = await call(
        agent,
        "OPTIONS",
        "/api/run",
        Origin=APP_ORIGIN,
        **{
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, task-id",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "task-id" in headers["Access-Control-Allow-Headers"]
    status, headers, body = await call(
        agent,
        "OPTIONS",
        "/api/run",
        Origin="https://evil.example",
        **{"Access-Control-Request-Method": "POST"},
    )
    assert status == 403 and body["message"] == "CorsOriginNotAllowed"
    assert "Access-Control-Allow-Origin" not in headers


async def test_wildcard_origin_never_allows_credentials(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--cors-origins", "*"]) as agent:
        status, headers, _ = await call(
            agent, "GET", "/api/status?id=nope", Origin="https://anyone.example"
        )
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers


async def test_without_token_or_cors_nothing_is_added(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        status, headers, _ = await call(agent, "GET", "/api/status?id=nope")
        assert status == 404
        assert not any(name.lower().startswith("access-control-") for name in headers)
        # A foreign page may not use the agent at all (nor, through it, ComfyUI).
        status, headers, body = await call(
            agent, "GET", "/api/status?id=nope", Origin="https://anyone.example"
        )
    assert status == 403 and body["message"] == "OriginNotAllowed"
    assert not any(name.lower().startswith("access-control-") for name in headers)


async def test_readonly_proxy_lets_only_reads_through(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--proxy", "readonly"]) as agent:
        status, _, _ = await call(agent, "GET", "/system_stats")
        assert status == 200
        status, _, body = await call(agent, "POST", "/prompt", {"prompt": {}})
        assert status == 405 and body["message"] == "MethodNotAllowed"
        status, _, body = await call(agent, "POST", "/upload/image", {})
        assert status == 405
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(agent.ws_url("/ws?clientId=ro")) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "status"
        # The agent's own API is not the proxy: it still runs workflows.
        status, _, _ = await call(agent, "POST", "/api/run", trace_prompt("success"))
        assert status == 200


async def test_proxy_none_exposes_nothing_of_comfyui(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--proxy", "none"]) as agent:
        for method, path in (("GET", "/system_stats"), ("GET", "/"), ("POST", "/prompt")):
            status, _, body = await call(agent, method, path, {} if method == "POST" else None)
            assert status == 404 and body["message"] == "NotFound"
        status, _, _ = await call(agent, "POST", "/api/run", trace_prompt("success"))
        assert status == 200
