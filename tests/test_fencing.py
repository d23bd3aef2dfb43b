"""A frozen owner that wakes up never races a re-run of its task (claim tokens, fencing).

Two `comfyui-agent` processes (A and B, console script, each with its own fake ComfyUI
child, `--task-lease 2`) share one store: Redis, or a shared directory. A task runs on A;
A's agent and its ComfyUI are frozen with SIGSTOP (what a platform freeze does) past the
lease, so B reports the task `lost`. Then either:

- B runs the task again (taking it over through the fence) and A is resumed (SIGCONT):
  A must stop at once, interrupt its prompt and write nothing; B's run alone writes the
  final state. Every version of the record stored after the take-over is watched (Redis:
  the task's pub/sub channel; files: the record file, polled) to prove A wrote nothing.
- nobody runs it again and A is resumed: A renews its lapsed claim and finishes; B's
  readers see `running` again, and a watcher on B that saw `lost` gets the result
  (--lost-grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.agent_process import (
    AgentProcess,
    children_of,
    kill_tree,
    spawn_agent,
    stop_gracefully,
    wait_ready,
)
from tests.test_multi_instance import LEASE, StoreSetup, new_task_id, slow_prompt, store_setup

LOST_GRACE = 30.0
FLAGS = ["--lost-grace", str(LOST_GRACE)]


@asynccontextmanager
async def two_agents(
    request: pytest.FixtureRequest, base: Path, kind: str
) -> AsyncIterator[tuple[StoreSetup, aiohttp.ClientSession, AgentProcess, AgentProcess]]:
    """A and B on one store (redis or a shared directory); both stopped at the end."""
    setup = store_setup(kind, request, base)
    started: list[AgentProcess] = []
    async with aiohttp.ClientSession() as session:
        try:
            for name in ("A", "B"):
                flags = ["--task-lease", str(LEASE), "--store", setup.url, *FLAGS]
                agent = await spawn_agent(base / name, flags, instance=f"{kind}-{name}")
                started.append(agent)
            for agent in started:
                await wait_ready(session, agent)
            yield setup, session, started[0], started[1]
        finally:
            for agent in started:
                resume(agent)  # a failed test must not leave a stopped process behind
            await asyncio.gather(*(stop_gracefully(agent) for agent in started))
            for agent in started:
                kill_tree(agent)
            await setup.delete_keys()


def frozen_pids(agent: AgentProcess) -> list[int]:
    """The agent and its ComfyUI child: what a platform freezes together."""
    return [agent.process.pid, *(pid for pid, _ in children_of(agent.process.pid))]


def freeze(agent: AgentProcess) -> list[int]:
    pids = frozen_pids(agent)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(agent: AgentProcess) -> None:
    if agent.process.returncode is not None:
        return
    for pid in frozen_pids(agent):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def call(
    session: aiohttp.ClientSession, agent: AgentProcess, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {}
    if isinstance(body, tuple):
        body, headers = body
    async with session.request(method, f"{agent.url}{path}", json=body, headers=headers) as got:
        text = await got.text()
        return got.status, json.loads(text) if text else None


async def until(
    session: aiohttp.ClientSession,
    agent: AgentProcess,
    task_id: str,
    condition: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    """Poll GET /api/tasks/{id} on agent until condition(record) holds."""
    last: Any = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, last = await call(session, agent, "GET", f"/api/tasks/{task_id}")
        if status == 200 and condition(last):
            record: dict[str, Any] = last
            return record
        await asyncio.sleep(0.05)
    pytest.fail(f"task {task_id} on {agent.instance}: condition not met; last: {last}")


async def comfyui_history(session: aiohttp.ClientSession, agent: AgentProcess) -> dict[str, Any]:
    async with session.get(f"{agent.comfyui_url}/history") as got:
        entries: dict[str, Any] = await got.json()
        return entries


async def metric(session: aiohttp.ClientSession, agent: AgentProcess, line_start: str) -> float:
    async with session.get(f"{agent.url}/metrics") as got:
        text = await got.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def running_with_progress(record: dict[str, Any]) -> bool:
    return bool(record["status"] == "running" and record["progress"]["2"]["value"] >= 2)


class StoredVersions:
    """Every version of a task's record stored from now on, seen from outside the agents."""

    def __init__(self, setup: StoreSetup, base: Path, task_id: str) -> None:
        self.setup, self.task_id = setup, task_id
        self.path = base / "shared-tasks" / f"{task_id}.json"
        self.versions: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> StoredVersions:
        follow = self._redis if self.setup.redis is not None else self._files
        self._task = asyncio.create_task(follow())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _redis(self) -> None:
        assert self.setup.redis is not None
        client = aioredis.Redis.from_url(self.setup.redis.url, protocol=2)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(f"{self.setup.prefix}task:{self.task_id}")
            self._subscribed.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self.versions.append(json.loads(message["data"]))
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def _files(self) -> None:
        seen: bytes | None = None
        self._subscribed.set()
        while True:
            with contextlib.suppress(FileNotFoundError):
                data = await asyncio.to_thread(self.path.read_bytes)
                if data != seen:
                    seen = data
                    self.versions.append(json.loads(data))
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_frozen_owner_resumed_after_a_take_over_stops_and_writes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with two_agents(request, tmp_path, kind) as (setup, session, a, b):
        task_id = new_task_id("fenced")
        prompt = slow_prompt(60, 0.1)  # 6 s
        prefix = prompt["9"]["inputs"]["filename_prefix"]
        posted = (prompt, {"task-id": task_id})
        status, created = await call(session, a, "POST", "/api/tasks", posted)
        assert status == 202, created
        on_a = await until(session, b, task_id, running_with_progress, 20)
        prompt_of_a = on_a["prompt_id"]
        freeze(a)
        frozen_at = time.monotonic()
        lost = await until(session, b, task_id, lambda r: r["status"] != "running", LEASE + 10)
        assert lost["status"] == "lost" and lost["instance"] == a.instance, lost

        # Run it again on B: B takes the task over through the fence.
        status, again = await call(session, b, "POST", "/api/tasks", posted)
        assert status == 202 and again["instance"] == b.instance, again
        on_b = await until(
            session, b, task_id, lambda r: r["instance"] == b.instance and r["prompt_id"], 20
        )
        assert on_b["prompt_id"] != prompt_of_a
        async with StoredVersions(setup, tmp_path, task_id) as stored:
            resume(a)
            print(f"\nMEASURED frozen for {time.monotonic() - frozen_at:.2f} s")
            final = await until(session, b, task_id, lambda r: r["status"] == "succeeded", 30)
            # A notices at its first renewal after waking, and interrupts its prompt.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                entry = (await comfyui_history(session, a)).get(prompt_of_a)
                if entry is not None:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # anything A would still write has landed by now
        assert final["instance"] == b.instance and final["prompt_id"] == on_b["prompt_id"]
        assert final["progress"]["2"]["value"] == 60
        # (B's first versions may predate its prompt id: B answered from its live run.)
        writers = {v["instance"] for v in stored.versions}
        prompts = {v["prompt_id"] for v in stored.versions} - {None}
        assert writers == {b.instance} and prompts == {on_b["prompt_id"]}, stored.versions
        assert entry is not None, "A's prompt never ended on A's ComfyUI"
        events = [name for name, _ in entry["status"]["messages"]]
        interrupted = "execution_interrupted" in events and "execution_success" not in events
        assert interrupted, (events, a.log_tail(80))
        # Only B's run produced the task's output file.
        a_out = tmp_path / "A" / "fake" / "output"
        made_by_a = [p.name for p in a_out.glob(f"{prefix}*")]
        made_by_b = list((tmp_path / "B" / "fake" / "output").glob(f"{prefix}*"))
        assert made_by_a == [] and len(made_by_b) == 1, (a_out, made_by_a, made_by_b)
        superseded = 'comfyui_agent_runs_total{outcome="superseded"}'
        assert await metric(session, a, superseded) == 1
        assert "was superseded" in a.log_path.read_text(errors="replace")
        # A answers for the task from the store: B's final state.
        status, seen_on_a = await call(session, a, "GET", f"/api/tasks/{task_id}")
        assert status == 200 and seen_on_a["instance"] == b.instance
        assert seen_on_a["status"] == "succeeded"


@pytest.mark.parametrize("kind", ["redis", "file"])
async def test_frozen_owner_nobody_took_over_renews_and_finishes(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with two_agents(request, tmp_path, kind) as (_, session, a, b):
        task_id = new_task_id("thawed")
        status, created = await call(
            session, a, "POST", "/api/tasks", (slow_prompt(40, 0.1), {"task-id": task_id})
        )
        assert status == 202, created
        await until(session, b, task_id, lambda r: r["status"] == "running", 20)
        watch_url = f"ws://127.0.0.1:{b.port}/api/run/ws?id={task_id}&results=none"

        async def watch() -> list[dict[str, Any]]:
            async with session.ws_connect(watch_url) as ws:
                return [json.loads(m.data) async for m in ws]

        watching = asyncio.create_task(watch())
        freeze(a)
        lost = await until(session, b, task_id, lambda r: r["status"] != "running", LEASE + 10)
        assert lost["status"] == "lost", lost
        await asyncio.sleep(1.0)
        assert not watching.done(), "a watcher gives a lost task --lost-grace seconds"
        resume(a)
        back = await until(session, b, task_id, lambda r: r["status"] != "lost", 10)
        assert back["status"] in ("running", "succeeded") and back["instance"] == a.instance
        final = await until(session, b, task_id, lambda r: r["status"] == "succeeded", 30)
        assert final["instance"] == a.instance and final["progress"]["2"]["value"] == 40
        messages = await asyncio.wait_for(watching, 10)
        assert messages[-1]["type"] == "result", messages[-1]
        assert await metric(session, a, 'comfyui_agent_runs_total{outcome="superseded"}') == 0
