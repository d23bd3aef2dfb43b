"""Stock clients through the agent's pass-through, with the browser's Origin rules.

`websocket-client` sends `Origin: http://<host:port>` by default, as browsers do on every
websocket; ComfyUI (and the fake, which applies its exact check) refuses an Origin that is
not its own loopback Host, so these hold the agent to forwarding what was same-origin for
the client as same-origin for ComfyUI, and to refusing foreign origins itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import websocket

from tests.agent_harness import TRACES_DIR, AgentUnderTest, running_agent, trace_prompt

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "page-token"
FRONT_END = "http://127.0.0.1:9300"  # another origin, listed in --cors-origins
UPLOAD_PNG = (TRACES_DIR / "load_image.upload.png").read_bytes()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    flags = ["--cors-origins", FRONT_END]
    async with running_agent(tmp_path_factory.mktemp("pass"), flags=flags) as running:
        yield running


def host_port(agent: AgentUnderTest) -> str:
    return agent.url.removeprefix("http://")


def stock_ws_messages(url: str, count: int, send: Any = None, **options: Any) -> list[Any]:
    """Open url with websocket-client (its default headers), optionally send, read count."""
    ws = websocket.create_connection(url, timeout=15, **options)
    try:
        if send is not None:
            ws.send(json.dumps(send))
        messages = []
        while len(messages) < count:
            frame = ws.recv()
            if isinstance(frame, str):
                messages.append(json.loads(frame))
        return messages
    finally:
        ws.close()


def stock_ws_refusal(url: str, **options: Any) -> tuple[int, bytes]:
    """Status and body of a handshake websocket-client expected to be refused."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=15, **options)
    return refused.value.status_code, refused.value.resp_body or b""


async def fetch(
    agent: AgentUnderTest, method: str, path: str, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{agent.url}{path}", **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


async def test_websocket_client_with_default_headers_reaches_comfyuis_ws(
    agent: AgentUnderTest,
) -> None:
    url = agent.ws_url("/ws?clientId=stock-client")
    [status] = await asyncio.to_thread(stock_ws_messages, url, 1)
    assert status["type"] == "status" and status["data"]["sid"] == "stock-client"
    # The same under /api/, as ComfyUI serves it.
    [status] = await asyncio.to_thread(stock_ws_messages, agent.ws_url("/api/ws?clientId=b"), 1)
    assert status["data"]["sid"] == "b"


async def test_websocket_client_runs_a_workflow_on_the_agents_ws(agent: AgentUnderTest) -> None:
    def run() -> list[Any]:
        ws = websocket.create_connection(agent.ws_url("/api/run/ws"), timeout=15)
        try:
            ws.send(json.dumps(trace_prompt("success")))
            messages = []
            while not messages or messages[-1]["type"] == "progress":
                messages.append(json.loads(ws.recv()))
            return messages
        finally:
            ws.close()

    messages = await asyncio.to_thread(run)
    assert messages[-1]["type"] == "result", messages[-1]


async def test_same_origin_requests_reach_comfyui(agent: AgentUnderTest) -> None:
    origin = {"Origin": agent.url}
    for path in ("/system_stats", "/api/system_stats", "/assets/index-fake.js", "/"):
        status, _, _ = await fetch(agent, "GET", path, headers=origin)
        assert status == 200, path
    status, _, body = await fetch(
        agent, "POST", "/api/prompt", json={"prompt": trace_prompt("success")}, headers=origin
    )
    assert status == 200 and json.loads(body)["prompt_id"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # FC's domain or a TLS proxy that keeps Host: the scheme is unknown, the name matches.
        ({"Host": "abc.cn-hangzhou.fcapp.run", "Origin": "https://abc.cn-hangzhou.fcapp.run"}, 200),
        # A reverse proxy that rewrote Host and says what the client used.
        (
            {
                "Host": "10.0.0.5:9000",
                "X-Forwarded-Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "https://comfy.example.com",
            },
            200,
        ),
        (
            {
                "Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "http://comfy.example.com",
            },
            403,
        ),
        ({"Host": "comfy.example.com", "Origin": "https://comfy.example.com.evil.example"}, 403),
    ],
)
async def test_behind_a_proxy_the_clients_address_counts(
    agent: AgentUnderTest, headers: dict[str, str], status: int
) -> None:
    got, _, body = await fetch(agent, "GET", "/api/system_stats", headers=headers)
    assert got == status, body
    [first] = (
        await asyncio.to_thread(
            stock_ws_messages,
            agent.ws_url("/ws"),
            1,
            header=[f"{k}: {v}" for k, v in headers.items() if k != "Host"],
            host=headers["Host"],
            suppress_origin=True,
        )
        if status == 200
        else [None]
    )
    assert first is None or first["type"] == "status"


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_foreign_origins_are_refused(agent: AgentUnderTest, origin: str) -> None:
    status, _, body = await fetch(agent, "GET", "/system_stats", headers={"Origin": origin})
    assert status == 403 and json.loads(body)["message"] == "OriginNotAllowed"
    status, _, _ = await fetch(
        agent, "POST", "/prompt", json={"prompt": {}}, headers={"Origin": origin}
    )
    assert status == 403
    status, body = await asyncio.to_thread(stock_ws_refusal, agent.ws_url("/ws"), origin=origin)
    assert status == 403 and json.loads(body)["message"] == "OriginNotAllowed"


async def test_a_listed_origin_really_works_through_the_pass_through(
    agent: AgentUnderTest, tmp_path: Path
) -> None:
    origin = {"Origin": FRONT_END}
    status, headers, body = await fetch(agent, "GET", "/object_info", headers=origin)
    assert status == 200 and "SaveImage" in json.loads(body)
    assert headers["Access-Control-Allow-Origin"] == FRONT_END
    form = aiohttp.FormData()
    form.add_field("image", UPLOAD_PNG, filename="front.png", content_type="image/png")
    form.add_field("overwrite", "true")
    status, headers, body = await fetch(agent, "POST", "/upload/image", data=form, headers=origin)
    assert status == 200 and json.loads(body)["name"] == "front.png"
    assert headers["Access-Control-Allow-Origin"] == FRONT_END
    status, _, body = await fetch(
        agent, "GET", "/view?filename=front.png&type=input", headers=origin
    )
    assert status == 200 and body == UPLOAD_PNG
    for method in ("POST", "DELETE", "PATCH"):
        status, headers, _ = await fetch(
            agent,
            "OPTIONS",
            "/api/prompt",
            headers={
                **origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == FRONT_END
        assert method in headers["Access-Control-Allow-Methods"]
        assert "content-type" in headers["Access-Control-Allow-Headers"]
    [first] = await asyncio.to_thread(
        stock_ws_messages, agent.ws_url("/ws?clientId=front"), 1, origin=FRONT_END
    )
    assert first["data"]["sid"] == "front"


async def test_comfyuis_own_handshake_refusal_is_passed_on(agent: AgentUnderTest) -> None:
    status, body = await asyncio.to_thread(stock_ws_refusal, agent.ws_url("/no-such-socket"))
    direct_status, direct_body = await asyncio.to_thread(
        stock_ws_refusal, f"ws://127.0.0.1:{agent.comfyui_port}/no-such-socket"
    )
    assert (status, body) == (direct_status, direct_body) == (404, b"404: Not Found")


async def test_websocket_to_a_comfyui_not_running_is_503(tmp_path: Path) -> None:
    async with running_agent(
        tmp_path, fake_args=("--startup-delay", "30"), wait_ready=False
    ) as agent:
        status, body = await asyncio.to_thread(stock_ws_refusal, agent.ws_url("/ws"))
    assert status == 503 and json.loads(body)["message"] == "ComfyUIUnavailable"


async def test_with_a_token_the_page_works_from_its_cookie(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--token", TOKEN]) as agent:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(f"{agent.url}/?token={TOKEN}") as response:
                assert response.status == 200
            origin = {"Origin": agent.url}
            for path in ("/assets/index-fake.js", "/assets/index-fake.css", "/api/system_stats"):
                async with session.get(f"{agent.url}{path}", headers=origin) as response:
                    assert response.status == 200, path
        cookie = f"comfyui_agent_token={TOKEN}"
        [first] = await asyncio.to_thread(
            stock_ws_messages, agent.ws_url("/ws?clientId=page"), 1, cookie=cookie
        )
        assert first["data"]["sid"] == "page"
        status, _ = await asyncio.to_thread(stock_ws_refusal, agent.ws_url("/ws"))
        assert status == 401
        status, _ = await asyncio.to_thread(
            stock_ws_refusal, agent.ws_url("/ws"), cookie=cookie, origin="http://evil.example"
        )
        assert status == 403


async def test_readonly_page_loads_and_watches_but_cannot_queue(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--proxy", "readonly"]) as agent:
        origin = {"Origin": agent.url}
        for path in ("/", "/assets/index-fake.js", "/api/object_info", "/api/queue"):
            status, _, _ = await fetch(agent, "GET", path, headers=origin)
            assert status == 200, path
        [first] = await asyncio.to_thread(stock_ws_messages, agent.ws_url("/ws?clientId=ro"), 1)
        assert first["type"] == "status"
        for path in ("/api/prompt", "/prompt", "/api/interrupt", "/upload/image"):
            status, _, body = await fetch(agent, "POST", path, json={}, headers=origin)
            assert status == 405 and json.loads(body)["message"] == "MethodNotAllowed", path
