"""ComfyUI's real editor and stock clients through the agent (set COMFYUI_DIR; COMFYUI_PYTHON).

The agent starts the real ComfyUI 0.3.64 as its child, the way users start it. Chromium
opens the agent's address: the editor draws its canvas, keeps its /ws open, and a prompt
queued through the agent while the page is open shows progress and its image. ComfyUI's
own `script_examples/websockets_api_example.py` runs against the agent unchanged but for
its server address, model and size. The fake's origin check is held to the real one here.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, Response, WebSocket

from agent.app import create_app
from agent.cli import make_backend
from agent.settings import parse_settings
from tests.browser import open_browser, screenshot_path
from tests.real_comfyui import COMFYUI_DIR, RealAgent, real_agent
from tests.test_fake_origin import ORIGIN_CASES, case_ids, origin_status

CHECKPOINT = "tiny-sd15-random.safetensors"
SCRIPT = Path(COMFYUI_DIR) / "script_examples" / "websockets_api_example.py"
TOKEN = "real-page-token"
WAIT_MS = 90_000

pytestmark = [
    pytest.mark.skipif(
        not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no real ComfyUI checkout to test against"
    ),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(900),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealAgent]:
    tmp = tmp_path_factory.mktemp("real-page")
    # Not a first visit: the editor opens its default graph (the script example's workflow)
    # instead of the template browser.
    settings = tmp / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    async with real_agent(tmp) as agent:
        yield agent


def script_prompt(seed: int) -> dict[str, Any]:
    """The script example's own workflow (the editor's default graph), made small."""
    text = SCRIPT.read_text()
    match = re.search(r'prompt_text = """(.*?)"""', text, re.S)
    assert match, "websockets_api_example.py no longer holds prompt_text"
    prompt: dict[str, Any] = json.loads(match.group(1))
    prompt["4"]["inputs"]["ckpt_name"] = CHECKPOINT
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=3, seed=seed)
    return prompt


# Run in the page: the default graph made small (64x64, 3 steps); returns its checkpoint.
SMALL_GRAPH = """() => {
  const graph = window.app.graph;
  const set = (id, name, value) => {
    graph.getNodeById(id).widgets.find((widget) => widget.name === name).value = value;
  };
  set(5, "width", 64);
  set(5, "height", 64);
  set(3, "steps", 3);
  window.app.canvas.setDirty(true, true);
  return graph.getNodeById(4).widgets[0].value;
}"""


def is_queue_request(response: Response) -> bool:
    """The editor's POST /api/prompt (its Run button)."""
    return response.url.endswith("/api/prompt") and response.request.method == "POST"


def require_checkpoint() -> None:
    if not (Path(COMFYUI_DIR) / "models" / "checkpoints" / CHECKPOINT).exists():
        pytest.skip(f"{CHECKPOINT} is not in models/checkpoints")


@asynccontextmanager
async def attached_agent(stack: RealAgent, *flags: str) -> AsyncIterator[str]:
    """A second agent, in this process, attached to the same ComfyUI with other flags."""
    argv = ["--comfyui-url", stack.comfyui_url, "--store", "memory://", *flags]
    settings = parse_settings(argv)
    server = TestServer(create_app(settings, await make_backend(settings)), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@dataclass
class EditorWatch:
    """The editor page, what it loaded and what its /ws received."""

    page: Page
    responses: list[tuple[int, str]] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def attach(self) -> None:
        self.page.on("response", lambda r: self.responses.append((r.status, r.url)))
        self.page.on("websocket", self._socket)

    def _socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        ws.on("framereceived", self._frame)
        ws.on("close", lambda closed: self.closed.append(closed.url))

    def _frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.frames.append(json.loads(payload))

    def refused(self) -> list[tuple[int, str]]:
        return [(status, url) for status, url in self.responses if status in (401, 403)]

    def events_for(self, prompt_id: str) -> set[str]:
        return {
            frame["type"]
            for frame in self.frames
            if isinstance(frame.get("data"), dict) and frame["data"].get("prompt_id") == prompt_id
        }


async def open_editor(browser: Browser, url: str, name: str) -> EditorWatch:
    """Open the editor at url; return once its canvas is drawn and its /ws is open."""
    page = await browser.new_page(viewport={"width": 1600, "height": 900})
    watch = EditorWatch(page)
    watch.attach()
    await page.goto(url)
    canvas = await page.wait_for_selector("#graph-canvas", state="visible", timeout=WAIT_MS)
    assert canvas is not None
    box = await canvas.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 300
    await page.wait_for_function("window.app?.graph?._nodes?.length > 0", timeout=WAIT_MS)
    deadline = time.monotonic() + 30
    while not any(frame["type"] == "status" for frame in watch.frames):
        assert time.monotonic() < deadline, "the editor's /ws never received its status"
        await asyncio.sleep(0.2)
    assert any(urlsplit(ws.url).path == "/ws" for ws in watch.sockets), watch.sockets
    # Zoom out so the whole default graph, SaveImage included, is in the screenshots.
    await page.evaluate(
        "window.app.canvas.ds.changeScale(0.7, [0, 0]); window.app.canvas.setDirty(true, true)"
    )
    await asyncio.sleep(0.5)
    await page.screenshot(path=screenshot_path(name))
    assert watch.refused() == [], watch.refused()
    return watch


async def queue(url: str, prompt: dict[str, Any]) -> str:
    """POST /prompt through the agent, without client_id (ComfyUI tells every socket)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/prompt", json={"prompt": prompt}) as response:
            body = await response.json()
            assert response.status == 200, body
            prompt_id: str = body["prompt_id"]
            return prompt_id


@pytest.mark.parametrize(("host", "origin", "status"), ORIGIN_CASES, ids=case_ids())
async def test_the_fakes_origin_cases_hold_for_real_comfyui(
    stack: RealAgent, host: str, origin: str | None, status: int
) -> None:
    async with aiohttp.ClientSession() as session:
        got = await origin_status(session, stack.comfyui_url, stack.comfyui_port, host, origin)
    assert got == status


async def test_the_real_editor_works_through_the_agent(stack: RealAgent) -> None:
    require_checkpoint()
    async with open_browser() as browser:
        watch = await open_editor(browser, f"{stack.url}/", "real_editor_loaded")
        page = watch.page
        # The default graph is the script example's workflow: make it small, press Run.
        assert await page.evaluate(SMALL_GRAPH) == CHECKPOINT
        async with page.expect_response(is_queue_request) as answer:
            await page.get_by_role("button", name=re.compile(r"^\s*Run")).first.click()
        response = await answer.value
        assert response.status == 200, await response.text()
        assert (await response.request.all_headers())["origin"] == stack.url
        prompt_id = (await response.json())["prompt_id"]
        deadline = time.monotonic() + 400  # a loaded 2-core machine is slow
        while not {"progress", "executed"} <= watch.events_for(prompt_id):
            assert time.monotonic() < deadline, watch.events_for(prompt_id)
            await asyncio.sleep(0.2)
        # The editor shows the output on its SaveImage node: it loads it through the agent.
        while not any(status == 200 and "/view?" in url for status, url in watch.responses):
            assert time.monotonic() < deadline, "the editor never loaded the output image"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let it paint
        await page.screenshot(path=screenshot_path("real_editor_after_run"))
        # A prompt queued by another client (no client_id) shows its progress on the page.
        other = await queue(stack.url, script_prompt(seed=int(time.time())))
        while "progress" not in watch.events_for(other):
            assert time.monotonic() < deadline, watch.events_for(other)
            await asyncio.sleep(0.2)
        assert watch.closed == [], "the editor's /ws closed"
        assert watch.refused() == [], watch.refused()


async def test_the_real_editor_with_a_token(stack: RealAgent) -> None:
    async with attached_agent(stack, "--token", TOKEN) as url, open_browser() as browser:
        watch = await open_editor(browser, f"{url}/?token={TOKEN}", "real_editor_token")
        assert watch.closed == []


async def test_the_real_editor_read_only(stack: RealAgent) -> None:
    async with attached_agent(stack, "--proxy", "readonly") as url, open_browser() as browser:
        watch = await open_editor(browser, f"{url}/", "real_editor_readonly")
        status = await watch.page.evaluate(
            """async () => (await fetch("./api/prompt", {method: "POST",
                 headers: {"Content-Type": "application/json"}, body: "{}"})).status"""
        )
        assert status == 405
        # It still watches: a prompt queued elsewhere shows its progress.
        require_checkpoint()
        prompt_id = await queue(stack.url, script_prompt(seed=int(time.time()) + 1))
        deadline = time.monotonic() + 400  # a loaded 2-core machine is slow
        while "progress" not in watch.events_for(prompt_id):
            assert time.monotonic() < deadline, watch.frames[-5:]
            await asyncio.sleep(0.2)
        assert watch.closed == []


async def test_comfyuis_websocket_script_example_through_the_agent(stack: RealAgent) -> None:
    """Run script_examples/websockets_api_example.py against the agent's address."""
    require_checkpoint()
    source = SCRIPT.read_text()
    replacements = {
        'server_address = "127.0.0.1:8188"': f'server_address = "{stack.url[len("http://") :]}"',
        '"v1-5-pruned-emaonly.safetensors"': f'"{CHECKPOINT}"',
        '"steps": 20': '"steps": 2',
        '"height": 512': '"height": 64',
        '"width": 512': '"width": 64',
    }
    for old, new in replacements.items():
        assert source.count(old) == 1, f"the script changed: {old!r}"
        source = source.replace(old, new)
    namespace: dict[str, Any] = {"__name__": "websockets_api_example"}
    code = compile(source, str(SCRIPT), "exec")
    await asyncio.wait_for(asyncio.to_thread(exec, code, namespace), 300)
    images = namespace["images"]
    assert images["9"] and images["9"][0].startswith(b"\x89PNG")
