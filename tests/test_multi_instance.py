"""Two agent processes, one shared store: each answers for the other's tasks.

Every agent here is started the way users start it: the `comfyui-agent` console script,
in its own session, with its own fake ComfyUI child (own port, own directories), and
`--task-lease 2`. Both point at ONE store; the whole module runs once per store setup:

- `redis`: the Redis of the session (`redis_target` fixture, conftest.py), with a key
  prefix private to this module run (`?prefix=`); its keys are deleted at the end.
- `file`: the file store on one shared temporary directory (the NAS setup).

The pair (A, B) is started once per store setup (module-scoped fixture). The lost-owner
test does not kill A: it starts a third agent (the "doomed" one) on the same store, runs
its task there, SIGKILLs it and lets the shared B take over, so the pair stays usable.
The last test stops A and B with SIGTERM and checks that they exit 0.

"X's ComfyUI ran nothing" is checked as "no new prompt id in X's /history" (not "/history
is {}"), so the tests do not depend on which of them ran before on the shared pair.

Each agent's fake ComfyUI leads its own session (the supervisor puts it there, so signals
to the agent's group do not reach it); killing a whole agent therefore means killing the
agent's group and then each child's group, by PID, as `kill_tree` does.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from tests.agent_harness import trace_prompt
from tests.agent_process import AgentProcess, kill_tree, spawn_agent, stop_gracefully, wait_ready
from tests.store_factories import RedisTarget, delete_redis_keys

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEASE = 2.0
ASYNC = {"X-Fc-Invocation-Type": "Async"}
STORE_SETUPS = ["redis", "file"]


# -- agent processes ---------------------------------------------------------------------


@dataclass
class Cluster:
    """The shared store and the agents on it, plus one HTTP session for the tests."""

    store: StoreSetup
    base: Path
    session: aiohttp.ClientSession
    a: AgentProcess | None = None
    b: AgentProcess | None = None
    started: list[AgentProcess] = field(default_factory=list)

    @property
    def pair(self) -> tuple[AgentProcess, AgentProcess]:
        assert self.a is not None and self.b is not None
        return self.a, self.b

    async def start_agent(self, name: str) -> AgentProcess:
        """Start an agent on the shared store and wait until its /readyz answers 200."""
        flags = ["--task-lease", str(LEASE), "--store", self.store.url]
        instance = f"{self.store.kind}-{name}"
        agent = await spawn_agent(self.base / name, flags, instance=instance)
        self.started.append(agent)
        await wait_ready(self.session, agent)
        return agent


# -- store setups --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSetup:
    """The --store URL both agents get, and (Redis) the key prefix it keeps them under."""

    kind: str
    url: str
    redis: RedisTarget | None = None
    prefix: str = ""

    async def delete_keys(self) -> int:
        """Delete this setup's Redis keys (a no-op for files); return how many there were."""
        if self.redis is None:
            return 0
        return await asyncio.to_thread(delete_redis_keys, self.redis.url, self.prefix)


def store_setup(kind: str, request: pytest.FixtureRequest, base: Path) -> StoreSetup:
    if kind == "file":
        return StoreSetup(kind, f"file://{base / 'shared-tasks'}")
    target: RedisTarget = request.getfixturevalue("redis_target")
    prefix = target.prefix_for(base)  # private to this module run
    separator = "&" if "?" in target.url else "?"
    url = f"{target.url}{separator}prefix={quote(prefix, safe='')}"
    return StoreSetup(kind, url, target, prefix)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=STORE_SETUPS)
async def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"multi-{kind}")
    setup = store_setup(kind, request, base)
    async with aiohttp.ClientSession() as session:
        cluster = Cluster(setup, base, session)
        try:
            a, b = await asyncio.gather(cluster.start_agent("A"), cluster.start_agent("B"))
            cluster.a, cluster.b = a, b
            yield cluster
        finally:
            codes = await asyncio.gather(*(stop_gracefully(x) for x in cluster.started))
            await setup.delete_keys()
    # Agents the last test did not stop (it was deselected or failed early) stop here.
    for agent, code in zip(cluster.started, codes, strict=True):
        if agent in (cluster.a, cluster.b):
            assert code == 0, f"{agent.instance} exit code {code}:\n{agent.log_tail()}"


# -- requests ------------------------------------------------------------------------------


async def call(
    cluster: Cluster,
    agent: AgentProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    async with cluster.session.request(
        method, f"{agent.url}{path}", data=data, headers=headers or {}
    ) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


async def history(cluster: Cluster, agent: AgentProcess) -> dict[str, Any]:
    """The agent's fake ComfyUI's /history: prompt id -> entry of every prompt it ran."""
    async with cluster.session.get(f"{agent.comfyui_url}/history") as response:
        assert response.status == 200
        entries: dict[str, Any] = await response.json()
        return entries


async def task_record(cluster: Cluster, agent: AgentProcess, task_id: str) -> dict[str, Any]:
    status, _, body = await call(cluster, agent, "GET", f"/api/tasks/{task_id}")
    assert status == 200, body
    record: dict[str, Any] = body
    return record


async def wait_record(
    cluster: Cluster,
    agent: AgentProcess,
    task_id: str,
    until: Any,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll GET /api/tasks/{id} on agent until `until(record)` holds (bounded)."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                status, _, last = await call(cluster, agent, "GET", f"/api/tasks/{task_id}")
                if status == 200 and until(last):
                    record: dict[str, Any] = last
                    return record
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"task {task_id} on {agent.instance}: condition not met; last: {last}")


def running(record: dict[str, Any]) -> bool:
    return record["status"] == "running" and record["prompt_id"] is not None


def terminal(record: dict[str, Any]) -> bool:
    return record["status"] in ("succeeded", "failed", "interrupted", "lost")


def slow_prompt(steps: int, delay: float | None = None) -> dict[str, Any]:
    """The progress trace's workflow: node 2 counts `steps`; a fresh color defeats caching."""
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    if delay is not None:
        prompt["2"]["inputs"]["delay"] = delay
    prompt["9"]["inputs"]["filename_prefix"] = f"multi_{uuid.uuid4().hex[:6]}"
    return prompt


def new_task_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def without_results(progress: dict[str, Any]) -> dict[str, Any]:
    return {
        node: {k: v for k, v in entry.items() if k != "results"} for node, entry in progress.items()
    }


# -- tests ---------------------------------------------------------------------------------


async def test_b_reads_status_and_progress_of_a_task_running_on_a(cluster: Cluster) -> None:
    a, b = cluster.pair
    task_id = new_task_id("status")
    run = asyncio.create_task(
        call(cluster, a, "POST", "/api/run", slow_prompt(40, 0.05), {"task-id": task_id})
    )
    values: list[int] = []
    async with asyncio.timeout(30):
        while not run.done():
            status, headers, progress = await call(cluster, b, "GET", f"/api/status?id={task_id}")
            if status == 200 and headers["X-Task-Status"] == "running":
                values.append(progress["2"]["value"])
            status, _, record = await call(cluster, b, "GET", f"/api/tasks/{task_id}")
            if status == 200 and record["status"] == "running":
                assert record["instance"] == a.instance
            await asyncio.sleep(0.1)
    status, headers, answer = await run
    assert status == 200 and headers["X-Task-Status"] == "succeeded", answer
    assert answer["9"]["results"], "A's sync answer inlines the output file"
    # B saw the task run on A, with node 2 advancing between reads.
    assert len(values) >= 3, values
    assert values == sorted(values), values
    assert values[-1] > values[0], values

    status, headers, progress = await call(cluster, b, "GET", f"/api/status?id={task_id}")
    assert status == 200 and headers["X-Task-Status"] == "succeeded"
    assert progress == without_results(answer)
    record = await task_record(cluster, b, task_id)
    assert record["status"] == "succeeded" and record["instance"] == a.instance
    assert record["progress"] == without_results(answer)
    assert record["prompt_id"] in await history(cluster, a)


async def test_b_streams_progress_of_a_task_running_on_a(cluster: Cluster) -> None:
    a, b = cluster.pair
    task_id = new_task_id("watch")
    status, _, created = await call(
        cluster, a, "POST", "/api/tasks", slow_prompt(40, 0.05), {"task-id": task_id}
    )
    assert status == 202, created
    messages: list[dict[str, Any]] = []
    # A watch from another instance cannot inline A's files (they are on A's ComfyUI):
    # ask for none, as the README documents for leaving files out.
    url = b.ws_url(f"/api/run/ws?id={task_id}&results=none")
    async with asyncio.timeout(30):
        async with cluster.session.ws_connect(url) as ws:
            async for message in ws:
                assert message.type == aiohttp.WSMsgType.TEXT, message
                messages.append(json.loads(message.data))
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}, kinds
    progress = [m["data"] for m in messages[:-1]]
    assert all(m["task_id"] == task_id for m in messages)
    values = [p["2"]["value"] for p in progress]
    assert len(progress) >= 3, values
    assert values == sorted(values), values
    assert values[0] < 40, "the watch started while the task ran"
    assert len(set(values)) >= 2, values

    final_on_a = await task_record(cluster, a, task_id)
    assert final_on_a["status"] == "succeeded" and final_on_a["instance"] == a.instance
    result = messages[-1]["data"]
    assert result == final_on_a["progress"]
    assert all("results" not in node for node in result.values())
    status, _, answer_of_a = await call(cluster, a, "GET", f"/api/status?id={task_id}")
    assert status == 200 and result == answer_of_a


async def test_delete_on_b_interrupts_a_task_running_on_a(cluster: Cluster) -> None:
    a, b = cluster.pair
    task_id = new_task_id("interrupt")
    steps = 300  # 15 s at 0.05 s a step
    status, _, created = await call(
        cluster, a, "POST", "/api/tasks", slow_prompt(steps, 0.05), {"task-id": task_id}
    )
    assert status == 202, created
    seen = await wait_record(cluster, b, task_id, running)
    assert seen["instance"] == a.instance
    asked = time.monotonic()
    status, headers, body = await call(cluster, b, "DELETE", f"/api/tasks/{task_id}")
    assert status == 202, body
    assert headers["X-Task-Id"] == task_id and body["status"] in ("queued", "running")

    final = await wait_record(cluster, b, task_id, terminal, timeout=10)
    took = time.monotonic() - asked
    assert final["status"] == "interrupted", final
    assert final["error"]["type"] == "interrupted"
    assert took < 8, f"interrupt through the store took {took:.1f} s"
    assert 0 < final["progress"]["2"]["value"] < steps
    assert (await task_record(cluster, a, task_id))["status"] == "interrupted"
    # A's ComfyUI really interrupted the prompt.
    prompt_id = final["prompt_id"]
    assert prompt_id == seen["prompt_id"]
    entry = (await history(cluster, a))[prompt_id]
    events = [name for name, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, events


async def test_async_redelivery_to_b_of_a_task_done_on_a_runs_nothing(cluster: Cluster) -> None:
    a, b = cluster.pair
    task_id = new_task_id("redeliver")
    prompt = slow_prompt(3)
    headers = {**ASYNC, "task-id": task_id}
    ran_on_b = set(await history(cluster, b))
    status, h, first = await call(cluster, a, "POST", "/api/run", prompt, headers)
    assert status == 200 and h["X-Task-Status"] == "succeeded", first
    assert all("results" not in node for node in first.values())

    status, h, again = await call(cluster, b, "POST", "/api/run", prompt, headers)
    assert status == 200 and h["X-Task-Status"] == "succeeded", again
    assert h["X-Task-Id"] == task_id
    assert again == first
    assert set(await history(cluster, b)) == ran_on_b, "B's ComfyUI ran nothing"
    record = await task_record(cluster, b, task_id)
    assert record["instance"] == a.instance
    assert record["prompt_id"] in await history(cluster, a)


async def test_async_redelivery_to_b_while_a_runs_waits_for_a(cluster: Cluster) -> None:
    a, b = cluster.pair
    task_id = new_task_id("inflight")
    prompt = slow_prompt(60, 0.05)  # 3 s
    headers = {**ASYNC, "task-id": task_id}
    ran_on_a, ran_on_b = set(await history(cluster, a)), set(await history(cluster, b))
    first = asyncio.create_task(call(cluster, a, "POST", "/api/run", prompt, headers))
    await wait_record(cluster, b, task_id, running)
    assert not first.done()
    status, h, second = await call(cluster, b, "POST", "/api/run", prompt, headers)
    assert status == 200 and h["X-Task-Status"] == "succeeded", second
    status, h, first_body = await first
    assert status == 200 and h["X-Task-Status"] == "succeeded", first_body
    assert second == first_body
    assert second["2"]["value"] == 60

    assert set(await history(cluster, b)) == ran_on_b, "B's ComfyUI ran nothing"
    record = await task_record(cluster, b, task_id)
    assert record["instance"] == a.instance
    assert set(await history(cluster, a)) - ran_on_a == {record["prompt_id"]}


async def test_same_task_id_sent_to_both_at_once_runs_once(cluster: Cluster) -> None:
    a, b = cluster.pair
    for _ in range(3):
        task_id = new_task_id("race")
        prompt = slow_prompt(10, 0.05)
        ran_on_a, ran_on_b = set(await history(cluster, a)), set(await history(cluster, b))
        answers = await asyncio.gather(
            call(cluster, a, "POST", "/api/run", prompt, {"task-id": task_id}),
            call(cluster, b, "POST", "/api/run", prompt, {"task-id": task_id}),
        )
        assert sorted(status for status, _, _ in answers) == [200, 409], answers
        winner = next(x for x in answers if x[0] == 200)
        loser = next(x for x in answers if x[0] == 409)
        assert winner[1]["X-Task-Status"] == "succeeded"
        assert loser[2]["message"] == "TaskAlreadyRunning", loser
        assert loser[1]["X-Task-Id"] == task_id
        new_on_a = set(await history(cluster, a)) - ran_on_a
        new_on_b = set(await history(cluster, b)) - ran_on_b
        assert len(new_on_a) + len(new_on_b) == 1, (new_on_a, new_on_b)
        runner = a if new_on_a else b
        record = await task_record(cluster, b, task_id)
        assert record["status"] == "succeeded" and record["instance"] == runner.instance


async def test_a_task_that_ended_on_a_runs_again_on_b_at_once(cluster: Cluster) -> None:
    # The final record ends A's claim (not a release after A's answer, which B could
    # otherwise beat): a caller re-running the task id elsewhere right away is not refused.
    a, b = cluster.pair
    for _ in range(5):
        task_id = new_task_id("again")
        prompt = slow_prompt(3, 0.02)
        ran_on_b = set(await history(cluster, b))
        status, h, first = await call(cluster, a, "POST", "/api/run", prompt, {"task-id": task_id})
        assert status == 200 and h["X-Task-Status"] == "succeeded", first
        status, h, again = await call(cluster, b, "POST", "/api/run", prompt, {"task-id": task_id})
        assert status == 200 and h["X-Task-Status"] == "succeeded", again
        record = await task_record(cluster, a, task_id)
        assert record["instance"] == b.instance
        assert set(await history(cluster, b)) - ran_on_b == {record["prompt_id"]}


async def test_task_of_a_killed_instance_turns_lost_and_b_runs_it_again(cluster: Cluster) -> None:
    _, b = cluster.pair
    doomed = await cluster.start_agent("doomed")
    task_id = new_task_id("lost")
    prompt = slow_prompt(12, 0.25)  # 3 s
    try:
        status, _, created = await call(
            cluster, doomed, "POST", "/api/tasks", prompt, {"task-id": task_id}
        )
        assert status == 202, created
        await wait_record(cluster, b, task_id, running)
        kill_tree(doomed)  # the whole container dies: agent and its ComfyUI
        await doomed.process.wait()
        killed = time.monotonic()
        lost = await wait_record(
            cluster, b, task_id, lambda r: r["status"] != "running", timeout=LEASE + 8
        )
        assert lost["status"] == "lost", lost
        assert lost["instance"] == doomed.instance
        assert time.monotonic() - killed < LEASE + 8

        ran_on_b = set(await history(cluster, b))
        headers = {**ASYNC, "task-id": task_id}
        status, h, answer = await call(cluster, b, "POST", "/api/run", prompt, headers)
        assert status == 200 and h["X-Task-Status"] == "succeeded", answer
        assert answer["2"]["value"] == 12
        record = await task_record(cluster, b, task_id)
        assert record["status"] == "succeeded" and record["instance"] == b.instance
        assert set(await history(cluster, b)) - ran_on_b == {record["prompt_id"]}
    finally:
        kill_tree(doomed)
        await doomed.process.wait()


async def test_both_agents_stop_gracefully_on_sigterm(cluster: Cluster) -> None:
    a, b = cluster.pair
    codes = await asyncio.gather(stop_gracefully(a), stop_gracefully(b))
    assert list(codes) == [0, 0], f"A:\n{a.log_tail()}\nB:\n{b.log_tail()}"
    if cluster.store.redis is not None:
        # The agents kept their records under this module run's prefix.
        assert await cluster.store.delete_keys() > 0
