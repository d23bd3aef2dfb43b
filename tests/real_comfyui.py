"""The agent started as users start it, on a real ComfyUI (set COMFYUI_DIR; COMFYUI_PYTHON).

One start-up for every real-ComfyUI test module: the `comfyui-agent` console script with
`--comfyui-dir`, so ComfyUI 0.3.64 is its real child, with its own input/output/temp/user
folders (runs of other checkouts' users do not mix), stopped with SIGTERM at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.agent_harness import wait_agent_ready
from tests.fake_comfyui.fixtures import free_port

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
AGENT = Path(sys.executable).with_name("comfyui-agent")
FOLDERS = ("input", "output", "temp", "user")

requires_comfyui = pytest.mark.skipif(
    not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no real ComfyUI checkout to test against"
)


@dataclass
class RealAgent:
    """A running agent process with a real ComfyUI child."""

    process: asyncio.subprocess.Process
    url: str
    comfyui_port: int
    tmp: Path
    exit_code: int | None = None
    # Node types the ComfyUI offers, when a test asked (/object_info).
    nodes: set[str] = field(default_factory=set)

    @property
    def comfyui_url(self) -> str:
        """The ComfyUI child's own URL."""
        return f"http://127.0.0.1:{self.comfyui_port}"


@asynccontextmanager
async def real_agent(
    tmp: Path, flags: Sequence[str] = (), ready_timeout: float = 240
) -> AsyncIterator[RealAgent]:
    """Start the agent on a real ComfyUI in tmp; SIGTERM it (exit code kept) at the end.

    ComfyUI's folders are tmp/input, tmp/output, tmp/temp, tmp/user: a caller may fill them
    before (e.g. the editor's settings in tmp/user/default).
    """
    for name in FOLDERS:
        (tmp / name).mkdir(exist_ok=True)
    folders = " ".join(f"--{name}-directory {tmp / name}" for name in FOLDERS)
    env = {
        **os.environ,
        "COMFYUI_ARGS": f"--cpu --disable-api-nodes --disable-auto-launch {folders}",
    }
    port, comfyui_port = free_port(), free_port()
    with (tmp / "agent.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(AGENT),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--comfyui-port", str(comfyui_port),
            "--comfyui-dir", COMFYUI_DIR,
            "--comfyui-python", COMFYUI_PYTHON,
            "--store", f"file://{tmp / 'tasks'}",
            *flags,
            stdout=log,
            stderr=log,
            env=env,
        )  # fmt: skip
    agent = RealAgent(process, f"http://127.0.0.1:{port}", comfyui_port, tmp)
    try:
        if not await wait_agent_ready(agent.url, ready_timeout):
            pytest.fail(f"real ComfyUI did not become ready; see {tmp / 'agent.log'}")
        yield agent
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            agent.exit_code = await asyncio.wait_for(process.wait(), 40)
        except TimeoutError:
            process.kill()
            await process.wait()
