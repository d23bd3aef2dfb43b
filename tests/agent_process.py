"""Start the agent the way users do: the `comfyui-agent` console script as its own process.

One spawn function for every test that needs a real agent process (signals, process death,
several instances on one store, contract tests over the network). The agent leads its own
session and gets its own fake ComfyUI child (own port and directories under `base`); the
supervisor puts that child in a session of its own, so `kill_tree` kills both groups, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agent_harness import agent_argv
from tests.fake_comfyui.fixtures import free_port

AGENT_SCRIPT = Path(sys.executable).with_name("comfyui-agent")
FAKE_ARGS = ("--slow-delay", "0.02")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclass
class AgentProcess:
    """One `comfyui-agent` process (leader of its own session) and its fake ComfyUI."""

    process: asyncio.subprocess.Process
    port: int
    comfyui_port: int
    base: Path
    instance: str = ""
    # ComfyUI children seen (the first one first), for tests that kill or watch them.
    child_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The agent's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def comfyui_url(self) -> str:
        """The fake ComfyUI child's own URL."""
        return f"http://127.0.0.1:{self.comfyui_port}"

    def ws_url(self, path: str) -> str:
        """A websocket URL on the agent."""
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def log_path(self) -> Path:
        """The agent's output (its child's lines included)."""
        return self.base / "agent.log"

    @property
    def store_dir(self) -> Path:
        """The file store's directory, unless the flags chose another store."""
        return self.base / "tasks"

    @property
    def child_pid(self) -> int:
        """The ComfyUI child seen first."""
        return self.child_pids[0]

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the agent's output."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stored(self, task_id: str) -> dict[str, Any]:
        """A task record as the file store keeps it."""
        record: dict[str, Any] = json.loads((self.store_dir / f"{task_id}.json").read_text())
        return record


async def spawn_agent(
    base: Path,
    flags: Sequence[str] = (),
    fake_args: Sequence[str] = FAKE_ARGS,
    instance: str = "",
) -> AgentProcess:
    """Start `comfyui-agent` on free loopback ports with a fake ComfyUI child; don't wait."""
    await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
    port, comfyui_port = free_port(), free_port()
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    named = ["--instance", instance] if instance else []
    argv = agent_argv(base, comfyui_port, flags=[*listen, *named, *flags], fake_args=fake_args)
    with (base / "agent.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(AGENT_SCRIPT),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=base,
            start_new_session=True,
        )
    return AgentProcess(process, port, comfyui_port, base, instance)


async def wait_ready(
    session: aiohttp.ClientSession,
    agent: AgentProcess,
    path: str = "/readyz",
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll `path` until 200 (bounded); fail with the agent's log if it never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.process.returncode is not None:
            pytest.fail(f"agent exited with {agent.process.returncode}:\n{agent.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(f"{agent.url}{path}") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    kill_tree(agent)
    pytest.fail(f"agent {path} not 200 after {timeout} s:\n{agent.log_tail()}")


async def stop_gracefully(agent: AgentProcess, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the agent (it stops its child itself) and wait; None if it did not exit."""
    if agent.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            return await agent.process.wait()
    except TimeoutError:
        kill_tree(agent)
        await agent.process.wait()
        return None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parens
    return fields[0], int(fields[1])


def children_of(parent: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat[1] == parent:
                found.append((int(entry), stat[0]))
    return found


def kill_tree(agent: AgentProcess) -> None:
    """SIGKILL the agent's process group, then each child's own group (the fake ComfyUI)."""
    if agent.process.returncode is not None:
        return
    children = [pid for pid, _ in children_of(agent.process.pid)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(agent.process.pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(child) == child:
                os.killpg(child, signal.SIGKILL)
            else:
                os.kill(child, signal.SIGKILL)
