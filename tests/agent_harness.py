"""Run the agent in-process (aiohttp test server) with the fake ComfyUI as its real child."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from agent.app import create_app
from agent.cli import make_backend
from agent.services import SERVICES, Services
from agent.settings import AgentSettings, parse_settings
from tests.fake_comfyui.fixtures import MAIN_SCRIPT, free_port

TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "comfyui-traces"


def trace_prompt(name: str) -> dict[str, Any]:
    """The API-format prompt a trace recorded."""
    import json

    prompt: dict[str, Any] = json.loads((TRACES_DIR / f"{name}.prompt.json").read_text())
    return prompt


@dataclass
class AgentUnderTest:
    """A running agent: its URL, its services and a client session pointed at it."""

    url: str
    settings: AgentSettings
    services: Services
    session: aiohttp.ClientSession
    comfyui_port: int
    fake_dir: Path

    @property
    def comfyui_url(self) -> str:
        """The fake ComfyUI child's own URL."""
        return f"http://127.0.0.1:{self.comfyui_port}"

    def ws_url(self, path: str) -> str:
        """A websocket URL on the agent."""
        return "ws" + self.url[len("http") :] + path


def agent_argv(
    tmp_path: Path,
    comfyui_port: int,
    flags: Sequence[str] = (),
    fake_args: Sequence[str] = ("--slow-delay", "0.02"),
) -> list[str]:
    """Command line of an agent whose child is the fake ComfyUI."""
    fake_dir = tmp_path / "fake"
    return [
        "--comfyui-port",
        str(comfyui_port),
        "--store",
        f"file://{tmp_path / 'tasks'}",
        "--shutdown-grace",
        "2",
        *flags,
        "--",
        sys.executable,
        str(MAIN_SCRIPT),
        "--listen",
        "127.0.0.1",
        "--port",
        str(comfyui_port),
        "--output-directory",
        str(fake_dir / "output"),
        "--input-directory",
        str(fake_dir / "input"),
        "--temp-directory",
        str(fake_dir / "temp"),
        *fake_args,
    ]


@asynccontextmanager
async def running_agent(
    tmp_path: Path,
    flags: Sequence[str] = (),
    fake_args: Sequence[str] = ("--slow-delay", "0.02"),
    wait_ready: bool = True,
) -> AsyncIterator[AgentUnderTest]:
    """Start agent + fake child; stop both (by the agent's own shutdown) at the end."""
    comfyui_port = free_port()
    settings = parse_settings(agent_argv(tmp_path, comfyui_port, flags, fake_args))
    backend = await make_backend(settings)
    app = create_app(settings, backend)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        services = app[SERVICES]
        if wait_ready:
            assert await backend.wait_ready(30), "fake ComfyUI did not become ready"
            assert await services.events.wait_connected(10), "no websocket to fake ComfyUI"
        yield AgentUnderTest(
            url=str(server.make_url("")).rstrip("/"),
            settings=settings,
            services=services,
            session=session,
            comfyui_port=comfyui_port,
            fake_dir=tmp_path / "fake",
        )
    finally:
        await session.close()
        await server.close()


async def wait_agent_ready(url: str, timeout: float = 120) -> bool:
    """Poll an agent process's /readyz until it answers 200; False after timeout seconds."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    return False
