"""The apps web page in a real headless Chromium, against the agent with the fake ComfyUI."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.agent_harness import AgentUnderTest, running_agent
from tests.app_fixtures import PNG, write_apps
from tests.browser import open_browser, screenshot_path

TOKEN = "page-test-token"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "apps"


def failing_app() -> dict[str, Any]:
    """EmptyImage -> FailAfter: fails after a few steps, to show an error in words."""
    return {
        "title": "Always fails",
        "prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                         "color": 0}},
            "2": {"class_type": "FailAfter", "inputs": {"image": ["1", 0], "ok_steps": 2},
                  "_meta": {"title": "Fragile step"}},
            "3": {"class_type": "SaveImage",
                  "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
        },
        "params": [{"type": "number", "id": "2", "key": "ok_steps", "title": "Steps first",
                    "min": 0, "max": 5}],
    }  # fmt: skip


class PageProblems:
    """Console errors and failed requests of a page (a CSP violation is a console error)."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.messages.append(message.text)


async def browser_and_agent(
    tmp_path: Path, flags: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Browser, AgentUnderTest]]:
    apps = write_apps(tmp_path / "apps")
    (apps / "fails.json").write_text(json.dumps(failing_app()))
    async with running_agent(tmp_path, ["--apps", str(apps), *flags]) as agent:
        async with open_browser() as browser:
            yield browser, agent


async def run_and_watch(page: Page, midway_screenshot: str = "") -> list[int]:
    """Press Run and collect the overall percentage until a result or an error shows."""
    seen: list[int] = []
    await page.get_by_role("button", name="Run").click()
    finished = page.locator(".results, .error")
    async with asyncio.timeout(30):
        while not await finished.count():
            value = await page.get_attribute("[role=progressbar]", "aria-valuenow")
            if value is not None:
                seen.append(int(value))
                if midway_screenshot and 0 < int(value) < 100:
                    await page.screenshot(path=screenshot_path(midway_screenshot))
                    midway_screenshot = ""
            await asyncio.sleep(0.03)
    value = await page.get_attribute("[role=progressbar]", "aria-valuenow")
    seen.append(int(value or 0))
    return seen


async def test_list_open_app_set_image_and_number_run_see_progress_and_image(
    tmp_path: Path,
) -> None:
    async for browser, agent in browser_and_agent(tmp_path):
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        problems = PageProblems(page)
        response = await page.goto(f"{agent.url}/apps/")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        await expect(page.get_by_role("heading", name="Apps")).to_be_visible()
        await expect(page.locator(".app-card")).to_have_count(3)
        await page.screenshot(path=screenshot_path("apps-list"), full_page=True)

        await page.get_by_role("link", name=re.compile("Slow photo copy")).click()
        await page.wait_for_url(re.compile(r"/apps/photo$"))
        await expect(page.get_by_role("heading", name="Slow photo copy")).to_be_visible()
        # Every input has a label and carries the parameter's name.
        steps = page.get_by_label("Steps", exact=True)
        assert await steps.get_attribute("name") == "2.steps"
        photo = page.get_by_label("Photo", exact=True)
        assert await photo.get_attribute("name") == "1.image"
        image = tmp_path / "input.png"
        image.write_bytes(PNG)
        await photo.set_input_files(str(image))
        await expect(page.locator(".dropzone img")).to_be_visible()
        await steps.fill("12")
        await expect(page.locator("input[type=range]")).to_have_value("12")
        await page.screenshot(path=screenshot_path("apps-form"), full_page=True)

        seen = await run_and_watch(page, "apps-running")
        assert seen[-1] == 100
        assert any(0 < value < 100 for value in seen), seen  # it rose, not jumped
        assert seen == sorted(seen), seen
        result = page.locator(".results img")
        await expect(result).to_be_visible()
        width = int.from_bytes(PNG[16:20], "big")
        assert await result.evaluate("img => img.naturalWidth") == width
        download = page.get_by_role("link", name="Download")
        assert (await download.get_attribute("download") or "").endswith(".png")
        await page.screenshot(path=screenshot_path("apps-result"), full_page=True)

        task_id = (await page.locator(".task-id").inner_text()).removeprefix("Task ")
        record = await agent.services.store.load(task_id)
        assert record is not None and record.app == "photo"
        assert record.params is not None and record.params["2.steps"] == 12
        assert problems.messages == []


async def test_phone_width_runs_and_nothing_overflows(tmp_path: Path) -> None:
    async for browser, agent in browser_and_agent(tmp_path):
        page = await browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
        )
        problems = PageProblems(page)
        await page.goto(f"{agent.url}/apps/")
        await page.screenshot(path=screenshot_path("apps-list-390"), full_page=True)
        await page.get_by_role("link", name=re.compile("Inverted colour")).click()
        await expect(page.get_by_label("Width", exact=True)).to_be_visible()
        await page.get_by_label("Width", exact=True).fill("128")
        await page.get_by_label("Height").select_option("32")
        await page.get_by_label("File name").fill("phone")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.screenshot(path=screenshot_path("apps-form-390"), full_page=True)
        seen = await run_and_watch(page)
        assert seen[-1] == 100
        result = page.locator(".results img")
        await expect(result).to_be_visible()
        assert await result.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [128, 32]
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await page.screenshot(path=screenshot_path("apps-result-390"), full_page=True)
        assert problems.messages == []


async def test_errors_are_shown_in_words_with_the_node(tmp_path: Path) -> None:
    async for browser, agent in browser_and_agent(tmp_path):
        page = await browser.new_page(viewport={"width": 1100, "height": 800})
        await page.goto(f"{agent.url}/apps/fails")
        seen = await run_and_watch(page)
        assert seen[-1] < 100
        error = page.get_by_role("alert")
        await expect(error).to_contain_text("A step of the workflow failed")
        await expect(error).to_contain_text("Fragile step (#2)")
        await expect(error).to_contain_text("deliberate failure after 2 steps")
        await page.screenshot(path=screenshot_path("apps-error"), full_page=True)
        await page.goto(f"{agent.url}/apps/nope")
        await expect(page.get_by_role("alert")).to_contain_text("No such app")


async def test_token_cookie_from_query_lets_the_page_run(tmp_path: Path) -> None:
    async for browser, agent in browser_and_agent(tmp_path, ("--token", TOKEN, "--proxy", "none")):
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        page = await context.new_page()
        problems = PageProblems(page)
        response = await page.goto(f"{agent.url}/apps/")
        assert response is not None and response.status == 401
        await page.goto(f"{agent.url}/apps/?token={TOKEN}")
        await page.get_by_role("link", name=re.compile("Inverted colour")).click()
        await page.wait_for_url(re.compile(r"/apps/invert$"))
        assert "token" not in page.url
        await page.get_by_label("Width", exact=True).fill("24")
        seen = await run_and_watch(page)
        assert seen[-1] == 100
        await expect(page.locator(".results img")).to_be_visible()
        problems.messages = [m for m in problems.messages if "401" not in m]
        assert problems.messages == []


def test_page_files_ship_inside_the_package() -> None:
    from importlib import resources

    root = resources.files("agent.web")
    for name in ("apps.html", "apps.js", "apps.css"):
        assert root.joinpath(name).is_file()
    html = root.joinpath("apps.html").read_text()
    assert "<script>" not in html and "style=" not in html  # nothing inline: strict CSP
    assert not re.search(r"https?://", html + root.joinpath("apps.js").read_text())


pytestmark = pytest.mark.timeout(120)


async def test_sampler_previews_show_while_it_runs(tmp_path: Path) -> None:
    fake_args = ("--slow-delay", "0.02", "--preview-method", "latent2rgb")
    async with running_agent(tmp_path, ["--apps", str(EXAMPLES)], fake_args=fake_args) as agent:
        async with open_browser() as browser:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems = PageProblems(page)
            await page.goto(f"{agent.url}/apps/txt2img")
            await page.get_by_label("Steps", exact=True).fill("50")
            await page.get_by_role("button", name="Run").click()
            preview = page.locator(".preview img")
            await expect(preview).to_be_visible(timeout=20_000)
            assert await preview.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
            await page.screenshot(path=screenshot_path("apps-preview"))
            await expect(page.locator(".results img")).to_be_visible(timeout=20_000)
            await expect(preview).to_have_count(0)  # the preview gives way to the result
            assert problems.messages == []
