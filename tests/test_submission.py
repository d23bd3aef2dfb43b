"""Prompts that provably never reached ComfyUI are posted again once it is ready.

The rule (agent/submission.py) is tested on its own with fakes, then end to end: the
fake ComfyUI child (a real process) is killed while the agent's POST /prompt is on its way,
and the task still succeeds on the restarted child.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.submission import never_reached, submit_prompt
from comfyui.client import ComfyUIUnavailable, NotConnected, PromptAccepted
from store.records import TaskStatus
from tests.agent_harness import running_agent, trace_prompt


class FakeBackend:
    """A child whose pid changes (dies, restarts) when the test says so."""

    def __init__(self, pid: int | None = 100) -> None:
        self.pid = pid
        self.ready = asyncio.Event()
        self.ready.set()
        self.waits = 0

    async def wait_ready(self, timeout: float) -> bool:
        self.waits += 1
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True


def disconnected() -> ComfyUIUnavailable:
    try:
        raise aiohttp.ServerDisconnectedError()
    except aiohttp.ServerDisconnectedError as cause:
        error = ComfyUIUnavailable("POST /prompt failed: ServerDisconnectedError")
        error.__cause__ = cause
        return error


async def test_a_refused_connection_never_reached() -> None:
    backend = FakeBackend()
    assert await never_reached(NotConnected("refused"), backend, backend.pid, settle=0.05)


async def test_an_answer_from_comfyui_reached_it() -> None:
    backend = FakeBackend()
    answered = ComfyUIUnavailable("POST /prompt answered HTTP 500")
    backend.pid = None  # even if the child died right after answering
    assert not await never_reached(answered, backend, 100, settle=0.05)


async def test_a_reset_while_the_same_child_lives_may_have_reached_it() -> None:
    backend = FakeBackend()
    started = time.monotonic()
    assert not await never_reached(disconnected(), backend, backend.pid, settle=0.1)
    assert time.monotonic() - started >= 0.1  # it gave the child a moment to be seen dead


async def test_a_reset_by_a_dying_child_never_reached_a_live_one() -> None:
    backend = FakeBackend()

    async def child_dies() -> None:
        await asyncio.sleep(0.05)  # the exit is noticed a little after the reset
        backend.pid = None

    dying = asyncio.create_task(child_dies())
    assert await never_reached(disconnected(), backend, 100, settle=1.0)
    await dying


async def test_an_attached_comfyui_is_never_assumed_dead() -> None:
    backend = FakeBackend(pid=None)
    assert not await never_reached(disconnected(), backend, None, settle=0.05)


class FakeClient:
    """Fails the first POSTs as told, then accepts."""

    def __init__(self, failures: list[ComfyUIUnavailable], backend: FakeBackend) -> None:
        self.failures = failures
        self.backend = backend
        self.posted: list[str] = []

    async def submit(self, prompt: Any, *, prompt_id: str, client_id: str) -> PromptAccepted:
        self.posted.append(prompt_id)
        if self.failures:
            error = self.failures.pop(0)
            if not isinstance(error, NotConnected):
                self.backend.pid = None  # the child died with the connection
                self.backend.ready.clear()
                asyncio.get_running_loop().call_later(0.05, self._restart)
            return_error: ComfyUIUnavailable = error
            raise return_error
        return PromptAccepted(prompt_id=prompt_id)

    def _restart(self) -> None:
        self.backend.pid = 200
        self.backend.ready.set()


class FakeEvents:
    client_id = "agent"

    async def wait_connected(self, timeout: float) -> bool:
        return True


async def test_submit_posts_again_under_the_same_prompt_id_after_a_restart() -> None:
    backend = FakeBackend()
    client = FakeClient([disconnected(), NotConnected("refused")], backend)
    again = await submit_prompt(
        client,  # type: ignore[arg-type]
        backend,
        FakeEvents(),  # type: ignore[arg-type]
        {},
        "p-1",
        ready_timeout=5,
        connect_timeout=1,
    )
    assert again == 2 and client.posted == ["p-1", "p-1", "p-1"]


async def test_submit_gives_up_when_comfyui_is_not_back_in_time() -> None:
    backend = FakeBackend()
    backend.ready.clear()
    client = FakeClient([NotConnected("refused")], backend)
    with pytest.raises(NotConnected):
        await submit_prompt(
            client,  # type: ignore[arg-type]
            backend,
            FakeEvents(),  # type: ignore[arg-type]
            {},
            "p-1",
            ready_timeout=0.1,
            connect_timeout=1,
        )
    assert client.posted == ["p-1"]


async def test_submit_stops_waiting_when_told() -> None:
    backend = FakeBackend()
    backend.ready.clear()
    client = FakeClient([NotConnected("refused")], backend)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    with pytest.raises(NotConnected):
        await submit_prompt(
            client,  # type: ignore[arg-type]
            backend,
            FakeEvents(),  # type: ignore[arg-type]
            {},
            "p-1",
            ready_timeout=30,
            connect_timeout=1,
            stop=stop,
        )
    assert time.monotonic() - started < 5


async def test_child_killed_during_submission_the_task_still_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_agent(tmp_path, flags=["--ready-timeout", "20"]) as agent:
        backend, runner = agent.services.backend, agent.services.runner
        old_pid = backend.pid
        assert old_pid is not None
        # Hold every answer of the child: the agent's POST /prompt arrives and waits there.
        async with agent.session.post(f"{agent.comfyui_url}/fake/stall?seconds=30") as answer:
            assert answer.status == 200
        prompt = trace_prompt("progress")
        prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
        prompt["2"]["inputs"]["steps"] = 3
        async with agent.session.post(
            f"{agent.url}/api/tasks", json=prompt, headers={"task-id": "mid-submit"}
        ) as answer:
            assert answer.status == 202, await answer.text()
        handle = runner.get("mid-submit")
        assert handle is not None
        await asyncio.sleep(0.5)  # well past preparation: the POST waits in the child
        assert not handle.submitted and handle.record.prompt_id is None
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.wait_for(handle.done.wait(), 30)
        record = await agent.services.store.load("mid-submit")
        assert record is not None and record.status is TaskStatus.SUCCEEDED, record
        assert record.progress["2"].value == 3
        assert backend.restarts == 1 and backend.pid not in (None, old_pid)
        # Run on the new child, under the prompt id chosen before the crash.
        async with agent.session.get(f"{agent.comfyui_url}/history/{record.prompt_id}") as got:
            assert record.prompt_id in await got.json()
        assert any("never reached ComfyUI" in r.getMessage() for r in caplog.records)
