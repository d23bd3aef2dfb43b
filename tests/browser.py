"""A real headless Chromium (Debian's `chromium` package) driven by Playwright for Python.

Playwright never downloads a browser here: it is pointed at the system's binary. Without
one, browser tests are skipped with the reason, except under CI (CI=true), where `.ci/run`
installs the package and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

# Flags that keep Chromium off the network and quiet in a sandboxed root container.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
SCREENSHOT_DIR = Path(__file__).resolve().parent / "screenshots"


def chromium_path() -> str | None:
    """The system Chromium binary, or None."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium binary; skip the test without one (fail under CI, which installs it)."""
    path = chromium_path()
    if path is None:
        message = "no chromium on PATH (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    """A headless Chromium for one test; closed at the end."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


def screenshot_path(name: str) -> Path:
    """Where a test saves a screenshot to look at (tests/screenshots/, not committed)."""
    SCREENSHOT_DIR.mkdir(exist_ok=True)
    return SCREENSHOT_DIR / f"{name}.png"
