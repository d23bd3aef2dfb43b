"""ComfyUI's web page through the agent, in a real Chromium, against the fake ComfyUI.

The fake serves a page shaped like ComfyUI's built front end (a module script and a
stylesheet loaded in CORS mode, which open /ws and show progress and output images) and
applies ComfyUI's own origin check, so these fail exactly where the real editor would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page, Request

from tests.agent_harness import TRACES_DIR, AgentUnderTest, running_agent, trace_prompt
from tests.browser import open_browser, screenshot_path
from tests.fake_comfyui.fixtures import free_port

TOKEN = "browser-token"
WAIT_MS = 20_000

QUEUE_FROM_PAGE = """async (prompt) => {
  const response = await fetch("./api/prompt", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt, client_id: document.body.dataset.clientId}),
  });
  return response.status;
}"""


class PageWatch:
    """A page with its requests, console errors and websockets recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.sockets: list[str] = []
        page.on("request", lambda request: self.requests.append(request))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))

    async def origin_sent_with(self, suffix: str) -> str | None:
        """The Origin header the browser sent when loading a URL ending in suffix."""
        for request in self.requests:
            if request.url.endswith(suffix):
                return (await request.all_headers()).get("origin")
        raise AssertionError(f"the page never loaded {suffix}")


async def open_page(agent: AgentUnderTest, page: Page, path: str = "/") -> PageWatch:
    watch = PageWatch(page)
    await page.goto(f"{agent.url}{path}")
    await page.wait_for_function(
        "document.body.dataset.ws === 'open' && document.body.dataset.version === '0.3.64'",
        timeout=WAIT_MS,
    )
    return watch


async def queue_and_watch(watch: PageWatch, name: str) -> None:
    """Queue a prompt from the page; its socket shows progress and the image loads."""
    status = await watch.page.evaluate(QUEUE_FROM_PAGE, trace_prompt("progress"))
    assert status == 200
    await watch.page.wait_for_function(
        "(document.body.dataset.events || '').includes('image-loaded')", timeout=WAIT_MS
    )
    events = (await watch.page.evaluate("document.body.dataset.events")).split()
    assert {"status", "executing", "progress", "executed", "image-loaded"} <= set(events)
    assert await watch.page.evaluate("document.querySelector('#images img').naturalWidth") > 0
    await watch.page.screenshot(path=screenshot_path(name))


async def test_the_page_loads_opens_ws_and_shows_a_run(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent, open_browser() as browser:
        watch = await open_page(agent, await browser.new_page())
        # Chromium sends Origin with CORS-mode module scripts and stylesheets, and the
        # websocket: exactly what ComfyUI refused when it reached it unchanged.
        assert await watch.origin_sent_with("/assets/index-fake.js") == agent.url
        assert await watch.origin_sent_with("/assets/index-fake.css") == agent.url
        assert len(watch.sockets) == 1
        assert watch.sockets[0].startswith(agent.ws_url("/ws?clientId="))
        await queue_and_watch(watch, "fake_page_through_agent")
        assert watch.errors == []


async def test_the_page_works_with_a_token_after_one_visit(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--token", TOKEN]) as agent:
        async with open_browser() as browser:
            page = await browser.new_page()
            response = await page.goto(f"{agent.url}/")
            assert response is not None and response.status == 401
            watch = await open_page(agent, page, f"/?token={TOKEN}")
            await queue_and_watch(watch, "fake_page_with_token")
            # Reloaded without ?token=: the cookie carries it.
            await page.goto(f"{agent.url}/")
            await page.wait_for_function("document.body.dataset.ws === 'open'", timeout=WAIT_MS)


async def test_readonly_page_loads_and_watches_but_cannot_queue(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--proxy", "readonly"]) as agent:
        async with open_browser() as browser:
            watch = await open_page(agent, await browser.new_page())
            status = await watch.page.evaluate(QUEUE_FROM_PAGE, trace_prompt("progress"))
            assert status == 405
            # A run started through the agent's own API is still watched by the page.
            async with agent.session.post(f"{agent.url}/api/run", json=trace_prompt("success")):
                pass
            await watch.page.wait_for_function(
                "document.body.dataset.busySeen === 'yes'"
                " && document.querySelector('#queue').textContent === '0'",
                timeout=WAIT_MS,
            )
            await watch.page.screenshot(path=screenshot_path("fake_page_readonly"))


# A front end served from another origin, like the seed article's page.
FRONT_END_HTML = """<!doctype html><html><head><meta charset="utf-8">
<script type="module" src="/app.js"></script></head>
<body><pre id="log"></pre></body></html>"""
FRONT_END_JS = """const agent = new URL(location.href).searchParams.get("agent");
const out = {};
async function step(name, run) {
  try { out[name] = await run(); } catch (error) { out[name] = `error: ${error}`; }
}
await step("object_info", async () => (await fetch(`${agent}/object_info`)).status);
await step("upload", async () => {
  const form = new FormData();
  const png = await (await fetch("/tiny.png")).blob();
  form.append("image", png, "front.png");
  form.append("overwrite", "true");
  const response = await fetch(`${agent}/upload/image`, {method: "POST", body: form});
  return `${response.status} ${(await response.json()).name}`;
});
await step("view", async () => (await fetch(`${agent}/view?filename=front.png&type=input`)).status);
await step("prompt", async () => {
  // JSON is not a simple request: the browser sends a preflight first.
  const response = await fetch(`${agent}/api/prompt`, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt: {}}),
  });
  return `${response.status} ${(await response.json()).error.type}`;
});
await step("ws", () => new Promise((resolve) => {
  const ws = new WebSocket(`${agent.replace("http", "ws")}/ws?clientId=front`);
  ws.onmessage = (event) => { resolve(JSON.parse(event.data).type); ws.close(); };
  ws.onerror = () => resolve("error");
}));
document.getElementById("log").textContent = JSON.stringify(out);
document.body.dataset.done = "yes";"""


@pytest.fixture
async def front_end() -> AsyncIterator[tuple[str, str]]:
    """The same front end on two origins: (listed, not listed)."""
    png = TRACES_DIR / "load_image.upload.png"
    files = {
        "/": (FRONT_END_HTML, "text/html"),
        "/app.js": (FRONT_END_JS, "text/javascript"),
    }

    async def serve(request: web.Request) -> web.StreamResponse:
        if request.path == "/tiny.png":
            return web.FileResponse(png)
        text, content_type = files[request.path]
        return web.Response(text=text, content_type=content_type)

    app = web.Application()
    for path in (*files, "/tiny.png"):
        app.router.add_get(path, serve)
    runner = web.AppRunner(app)
    await runner.setup()
    ports = free_port(), free_port()
    for port in ports:  # one app, two origins
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    finally:
        await runner.cleanup()


async def run_front_end(browser: Any, front: str, agent: AgentUnderTest) -> dict[str, Any]:
    page = await browser.new_page()
    await page.goto(f"{front}/?agent={agent.url}")
    await page.wait_for_function("document.body.dataset.done === 'yes'", timeout=WAIT_MS)
    result: dict[str, Any] = json.loads(await page.text_content("#log") or "{}")
    return result


async def test_a_listed_front_end_uses_comfyui_through_the_agent(
    tmp_path: Path, front_end: tuple[str, str]
) -> None:
    listed, other = front_end
    async with running_agent(tmp_path, flags=["--cors-origins", listed]) as agent:
        async with open_browser() as browser:
            allowed = await run_front_end(browser, listed, agent)
            refused = await run_front_end(browser, other, agent)
    assert allowed == {
        "object_info": 200,
        "upload": "200 front.png",
        "view": 200,
        "prompt": "400 prompt_no_outputs",  # ComfyUI's own validation answer
        "ws": "status",
    }
    # The browser cannot read any answer for the other origin, and its socket is refused.
    assert all(str(value).startswith("error") for value in refused.values()), refused
