"""The example apps on a real ComfyUI (COMFYUI_DIR; COMFYUI_PYTHON for its venv).

Runs `examples/apps/` on the random-weight checkpoint `tiny-sd15-random.safetensors`:
through `POST /api/apps/{id}/run` and from the web page in a real Chromium. ComfyUI gets
its own input/output/temp/user folders, so runs of other checkouts' users do not mix.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.app_fixtures import PNG
from tests.browser import open_browser, screenshot_path
from tests.real_comfyui import COMFYUI_DIR, real_agent

CHECKPOINT = Path(COMFYUI_DIR) / "models" / "checkpoints" / "tiny-sd15-random.safetensors"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "apps"

pytestmark = [
    pytest.mark.skipif(
        not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no real ComfyUI checkout to test against"
    ),
    pytest.mark.skipif(
        bool(COMFYUI_DIR) and not CHECKPOINT.exists(),
        reason="tiny-sd15-random.safetensors is not in the checkout's models/checkpoints",
    ),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(300),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    tmp = tmp_path_factory.mktemp("real-apps")
    async with real_agent(tmp, ["--apps", str(EXAMPLES)]) as agent:
        yield agent.url


async def run_app(url: str, app_id: str, params: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/apps/{app_id}/run", json={"params": params}) as answer:
            return answer.status, await answer.json()


def png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def test_examples_are_listed(agent_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{agent_url}/api/apps") as response:
            apps = await response.json()
    assert [app["id"] for app in apps] == ["img2img", "txt2img"]


async def test_txt2img_runs_through_the_api(agent_url: str) -> None:
    params = {"6.text": "a red bicycle", "3.steps": "2", "3.sampler_name": "dpmpp_2m",
              "5.width": "64", "5.height": "64"}  # fmt: skip
    status, body = await run_app(agent_url, "txt2img", params)
    assert status == 200, body
    assert body["3"]["value"] == body["3"]["max"] == 2
    png = base64.b64decode(body["9"]["results"][0])
    assert png.startswith(b"\x89PNG") and png_size(png) == (64, 64)


async def test_img2img_runs_with_an_uploaded_picture(agent_url: str) -> None:
    params = {"10.image": base64.b64encode(PNG).decode(), "3.denoise": "0.5", "3.steps": 2,
              "11.width": "64", "11.height": "64", "3.seed": 7}  # fmt: skip
    status, body = await run_app(agent_url, "img2img", params)
    assert status == 200, body
    assert png_size(base64.b64decode(body["9"]["results"][0])) == (64, 64)


async def test_txt2img_runs_from_the_page(agent_url: str) -> None:
    async with open_browser() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{agent_url}/apps/")
        await page.get_by_role("link", name=re.compile("Text to image")).click()
        await page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
        await page.get_by_label("Steps", exact=True).fill("3")
        await page.get_by_label("Width").select_option("64")
        await page.get_by_label("Height").select_option("64")
        await page.get_by_role("button", name="Run").click()
        result = page.locator(".results img")
        await expect(result).to_be_visible(timeout=120_000)
        assert await result.evaluate("img => img.naturalWidth") == 64
        await expect(page.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
        await page.screenshot(path=screenshot_path("apps-real-txt2img"), full_page=True)
