"""Task API, async invocation semantics, leases and store outages (fake ComfyUI child)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from store.base import StoreError
from store.records import TaskRecord, TaskStatus
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt

pytestmark = pytest.mark.asyncio(loop_scope="module")

ASYNC = {"X-Fc-Invocation-Type": "Async"}
LOST_GRACE = 1.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    flags = ["--task-lease", "1.5", "--lost-grace", str(LOST_GRACE)]
    async with running_agent(tmp_path_factory.mktemp("tasks"), flags=flags) as running:
        yield running


def slow_prompt(steps: int, marker: str | None = None) -> dict[str, Any]:
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    prompt["9"]["inputs"]["filename_prefix"] = marker or f"t_{uuid.uuid4().hex[:6]}"
    return prompt


async def request(
    agent: AgentUnderTest, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    async with agent.session.request(
        method, f"{agent.url}{path}", data=data, headers=headers
    ) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


async def prompts_run_by_comfyui(agent: AgentUnderTest) -> int:
    async with agent.session.get(f"{agent.comfyui_url}/history") as response:
        return len(await response.json())


async def wait_status(agent: AgentUnderTest, task_id: str, wanted: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            status, _, body = await request(agent, "GET", f"/api/tasks/{task_id}")
            if status == 200 and body["status"] in wanted:
                return body
            await asyncio.sleep(0.05)


async def test_post_task_answers_202_and_runs_in_background(agent: AgentUnderTest) -> None:
    status, headers, body = await request(
        agent, "POST", "/api/tasks", slow_prompt(5), **{"task-id": "bg-1"}
    )
    assert status == 202
    assert headers["Location"] == "/api/tasks/bg-1"
    assert body["task_id"] == "bg-1" and body["status"] in ("queued", "running")
    assert set(body["progress"]) == {"1", "2", "9"}
    final = await wait_status(agent, "bg-1", {"succeeded"})
    assert final["prompt_id"] and final["instance"] == agent.settings.instance
    assert final["started_at"] <= final["finished_at"]
    assert final["outputs"]["9"]["images"][0]["filename"].startswith("t_")
    assert final["lease_expires_at"] is None and final["error"] is None
    # Posting the same id again does not run it again.
    before = await prompts_run_by_comfyui(agent)
    status, _, again = await request(
        agent, "POST", "/api/tasks", slow_prompt(5), **{"task-id": "bg-1"}
    )
    assert status == 200 and again["status"] == "succeeded"
    assert await prompts_run_by_comfyui(agent) == before


async def test_get_unknown_task_is_404_and_bad_id_400(agent: AgentUnderTest) -> None:
    status, _, body = await request(agent, "GET", "/api/tasks/nobody-here")
    assert status == 404 and body["message"] == "TaskNotFound"
    status, _, body = await request(agent, "GET", "/api/tasks/.hidden")
    assert status == 400 and body["message"] == "InvalidTaskId"


async def test_delete_interrupts_a_running_task(agent: AgentUnderTest) -> None:
    await request(agent, "POST", "/api/tasks", slow_prompt(200), **{"task-id": "del-1"})
    async with asyncio.timeout(10):
        while (await wait_status(agent, "del-1", {"running"}))["progress"]["2"]["value"] < 2:
            await asyncio.sleep(0.02)
    status, _, body = await request(agent, "DELETE", "/api/tasks/del-1")
    assert status == 202
    final = await wait_status(agent, "del-1", {"interrupted"})
    assert final["error"]["type"] == "interrupted"
    assert 0 < final["progress"]["2"]["value"] < 200
    status, _, body = await request(agent, "DELETE", "/api/tasks/del-1")
    assert status == 409 and body["message"] == "TaskFinished"
    status, _, _ = await request(agent, "DELETE", "/api/tasks/never-was")
    assert status == 404


async def test_delete_of_a_queued_task_ends_it_without_running(agent: AgentUnderTest) -> None:
    await request(agent, "POST", "/api/tasks", slow_prompt(100), **{"task-id": "q-busy"})
    await request(agent, "POST", "/api/tasks", slow_prompt(3), **{"task-id": "q-wait"})
    status, _, _ = await request(agent, "DELETE", "/api/tasks/q-wait")
    assert status == 202
    final = await wait_status(agent, "q-wait", {"interrupted"})
    assert final["started_at"] is None
    await request(agent, "DELETE", "/api/tasks/q-busy")
    await wait_status(agent, "q-busy", {"interrupted"})


async def test_delete_of_a_task_owned_elsewhere_goes_through_the_store(
    agent: AgentUnderTest,
) -> None:
    store = agent.services.store
    now = time.time()
    await store.save(
        TaskRecord(
            task_id="remote-1",
            status=TaskStatus.RUNNING,
            instance="other-instance",
            lease_expires_at=now + 60,
        )
    )
    assert not await store.cancel_requested("remote-1")
    status, _, body = await request(agent, "DELETE", "/api/tasks/remote-1")
    assert status == 202 and body["status"] == "running"
    assert await store.cancel_requested("remote-1")


async def test_async_redelivery_of_a_succeeded_task_runs_nothing(agent: AgentUnderTest) -> None:
    prompt = slow_prompt(3)
    headers = {**ASYNC, "task-id": "async-ok"}
    status, h, first = await request(agent, "POST", "/api/run", prompt, **headers)
    assert status == 200 and h["X-Task-Status"] == "succeeded"
    assert "results" not in first["9"]  # async answers carry no inline files
    before = await prompts_run_by_comfyui(agent)
    status, h, again = await request(agent, "POST", "/api/run", prompt, **headers)
    assert status == 200 and h["X-Task-Status"] == "succeeded"
    assert again == first
    assert await prompts_run_by_comfyui(agent) == before


async def test_fc_async_task_id_header_names_the_task(agent: AgentUnderTest) -> None:
    headers = {**ASYNC, "X-Fc-Async-Task-Id": "fc-named-1"}
    status, h, _ = await request(agent, "POST", "/api/run", slow_prompt(2), **headers)
    assert status == 200 and h["X-Task-Id"] == "fc-named-1"
    headers = {**ASYNC, "x-fc-stateful-async-invocation-id": "fc-named-2"}
    status, h, _ = await request(agent, "POST", "/api/run", slow_prompt(2), **headers)
    assert status == 200 and h["X-Task-Id"] == "fc-named-2"


async def test_async_redelivery_while_running_waits_for_the_same_run(
    agent: AgentUnderTest,
) -> None:
    prompt = slow_prompt(40)
    headers = {**ASYNC, "task-id": "async-twice"}
    before = await prompts_run_by_comfyui(agent)
    first, second = await asyncio.gather(
        request(agent, "POST", "/api/run", prompt, **headers),
        request(agent, "POST", "/api/run", prompt, **headers),
    )
    assert first[0] == second[0] == 200
    assert first[2] == second[2]
    assert await prompts_run_by_comfyui(agent) == before + 1


async def test_async_execution_error_is_final_not_5xx(agent: AgentUnderTest) -> None:
    headers = {**ASYNC, "task-id": "async-fail"}
    status, h, body = await request(
        agent, "POST", "/api/run", trace_prompt("runtime_error_custom"), **headers
    )
    assert status < 500, "FC would retry a workflow that fails the same way every time"
    assert h["X-Task-Status"] == "failed"
    assert "x-fc-status" not in {k.lower() for k in h}, "FC would retry it"
    assert body["message"] == "ExecutionError" and body["error"]["node_type"] == "FailAfter"
    # A failed task delivered again is run again.
    before = await prompts_run_by_comfyui(agent)
    await request(agent, "POST", "/api/run", trace_prompt("runtime_error_custom"), **headers)
    assert await prompts_run_by_comfyui(agent) == before + 1


async def test_sync_run_of_a_task_running_elsewhere_is_409(agent: AgentUnderTest) -> None:
    store = agent.services.store
    token = await store.claim("held-elsewhere", "other-instance", 30)
    assert token is not None
    status, _, body = await request(
        agent, "POST", "/api/run", slow_prompt(2), **{"task-id": "held-elsewhere"}
    )
    assert status == 409 and "another instance" in body["error"]
    await store.release("held-elsewhere", token)


async def test_task_whose_owner_stopped_renewing_reads_lost(agent: AgentUnderTest) -> None:
    store = agent.services.store
    await store.save(
        TaskRecord(
            task_id="orphan-1",
            status=TaskStatus.RUNNING,
            instance="dead-instance",
            lease_expires_at=time.time() - 1,
        )
    )
    status, _, body = await request(agent, "GET", "/api/tasks/orphan-1")
    assert status == 200 and body["status"] == "lost"
    status, headers, _ = await request(agent, "GET", "/api/status?id=orphan-1")
    assert status == 200 and headers["X-Task-Status"] == "lost"
    # A watcher waits --lost-grace for the owner to come back, then gives up.
    started = time.monotonic()
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=orphan-1")) as ws:
        messages = [json.loads(m.data) async for m in ws]
    assert messages[-1]["type"] == "error"
    assert messages[-1]["data"]["message"] == "TaskLost"
    assert time.monotonic() - started >= LOST_GRACE
    # Lost is not final: DELETE asks its owner, should it come back, to stop it.
    status, _, body = await request(agent, "DELETE", "/api/tasks/orphan-1")
    assert status == 202 and body["status"] == "lost"
    assert await store.cancel_requested("orphan-1")
    # FC delivering it again runs it here (a new claim: the request was for the old run).
    status, h, _ = await request(
        agent, "POST", "/api/run", slow_prompt(2), **{**ASYNC, "task-id": "orphan-1"}
    )
    assert status == 200 and h["X-Task-Status"] == "succeeded"


async def test_watch_turns_lost_when_the_owner_goes_silent(agent: AgentUnderTest) -> None:
    store = agent.services.store
    await store.save(
        TaskRecord(
            task_id="fading-1",
            status=TaskStatus.RUNNING,
            instance="dying-instance",
            lease_expires_at=time.time() + 0.8,
        )
    )
    started = time.monotonic()
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=fading-1")) as ws:
        messages = [json.loads(m.data) async for m in ws]
    assert messages[-1]["data"]["message"] == "TaskLost"
    assert LOST_GRACE <= time.monotonic() - started < 5 + LOST_GRACE


async def test_watch_of_a_lost_task_goes_on_when_its_owner_comes_back(
    agent: AgentUnderTest,
) -> None:
    store = agent.services.store
    frozen = TaskRecord(
        task_id="frozen-1",
        status=TaskStatus.RUNNING,
        instance="frozen-instance",
        lease_expires_at=time.time() - 0.1,
    )
    await store.save(frozen)

    async def owner_resumes() -> None:
        await asyncio.sleep(LOST_GRACE / 2)  # within the grace: the watch is still on
        now = time.time()
        back = frozen.model_copy(update={"lease_expires_at": now + 30, "updated_at": now})
        await store.save(back)
        done = back.model_copy(update={"status": TaskStatus.SUCCEEDED, "finished_at": now})
        await store.save(done.model_copy(update={"lease_expires_at": None}))

    resume = asyncio.create_task(owner_resumes())
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=frozen-1&results=none")) as ws:
        messages = [json.loads(m.data) async for m in ws]
    await resume
    assert messages[-1]["type"] == "result", messages


async def test_lease_is_renewed_while_a_long_node_runs(agent: AgentUnderTest) -> None:
    # One 3 s node with no progress events: only the lease heartbeat keeps it alive.
    prompt = slow_prompt(1)
    prompt["2"]["inputs"]["delay"] = 3.0
    await request(agent, "POST", "/api/tasks", prompt, **{"task-id": "long-node"})
    await wait_status(agent, "long-node", {"running"})
    for _ in range(6):
        record = await agent.services.store.load("long-node")
        assert record is not None
        assert record.effective_status(time.time()) is not TaskStatus.LOST
        if record.status.is_terminal:
            break
        await asyncio.sleep(0.5)
    final = await wait_status(agent, "long-node", {"succeeded"})
    assert final["status"] == "succeeded"


async def test_metrics_count_runs_and_store_writes(agent: AgentUnderTest) -> None:
    async with agent.session.get(f"{agent.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'comfyui_agent_runs_total{outcome="succeeded"}' in text
    writes = next(
        line for line in text.splitlines() if line.startswith("comfyui_agent_store_writes_total")
    )
    assert float(writes.split()[1]) > 0
    assert "comfyui_agent_comfyui_ready 1" in text


class FlakyStore:
    """Wraps a real store; save() fails while `down` is set (a store outage)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        if self.down:
            self.refused += 1
            raise StoreError("store unreachable (test outage)")
        await self.inner.save(task, token=token)


async def test_store_outage_mid_run_does_not_lose_the_final_state(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        flaky = FlakyStore(agent.services.store)
        agent.services.runner._store = flaky  # the runner's store only; reads stay real
        agent.services.runner.finals.store = flaky  # and its retries of final records
        prompt = slow_prompt(30)
        run = asyncio.create_task(
            request(agent, "POST", "/api/run", prompt, **{"task-id": "outage"})
        )
        await wait_status(agent, "outage", {"running"})
        flaky.down = True
        status, headers, _ = await run
        assert status == 200 and headers["X-Task-Status"] == "succeeded"
        assert flaky.refused > 0
        # Not in the store yet, but this instance still answers for it.
        stored = await flaky.inner.load("outage")
        assert stored is not None and not stored.status.is_terminal
        status, headers, _ = await request(agent, "GET", "/api/status?id=outage")
        assert headers["X-Task-Status"] == "succeeded"
        flaky.down = False
        async with asyncio.timeout(10):
            while (record := await flaky.inner.load("outage")).status is not TaskStatus.SUCCEEDED:
                await asyncio.sleep(0.1)
        assert record.progress["2"].value == 30
        # The retrier forgets the record once its save has returned (the file is visible a
        # moment before that).
        async with asyncio.timeout(10):
            while agent.services.runner.unsaved:
                await asyncio.sleep(0.05)


class ClaimOutage(FlakyStore):
    """Claims fail after `delay` s (a store that went down), everything else works."""

    def __init__(self, inner: Any, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        await asyncio.sleep(self.delay)
        raise StoreError("store unreachable (test outage)")


@pytest.mark.parametrize("named", [False, True])
async def test_a_sync_run_that_cannot_be_claimed_answers_503_and_runs_nothing(
    tmp_path: Path, named: bool
) -> None:
    async with running_agent(tmp_path) as agent:
        store = agent.services.store
        # A made-up task id is claimed while its prompt is posted: the claim fails after it.
        agent.services.runner._store = ClaimOutage(store, delay=0.3)
        marker = f"unclaimed_{uuid.uuid4().hex[:6]}"
        headers = {"task-id": "unclaimed-named"} if named else {}
        before = await prompts_run_by_comfyui(agent)
        status, answer_headers, body = await request(
            agent, "POST", "/api/run", slow_prompt(40, marker), **headers
        )
        assert status == 503 and body["message"] == "StoreError", body
        task_id = answer_headers["X-Task-Id"]
        assert await store.load(task_id) is None
        # The prompt, posted or not, does not run to its end (40 steps take 0.8 s).
        await asyncio.sleep(1.2)
        assert not list((agent.fake_dir / "output").glob(f"{marker}*"))
        if named:
            assert await prompts_run_by_comfyui(agent) == before  # refused before posting
        assert not agent.services.runner.active


async def test_fc_initialize_and_pre_stop_hooks(agent: AgentUnderTest) -> None:
    status, _, body = await request(agent, "POST", "/initialize")
    assert status == 200 and body == {"ready": True}
    await request(agent, "POST", "/api/tasks", slow_prompt(30), **{"task-id": "drained"})
    await wait_status(agent, "drained", {"running"})
    status, _, body = await request(agent, "GET", "/pre-stop")
    assert status == 200 and body == {"unfinished_tasks": 0, "unsaved_records": 0}
    record = await agent.services.store.load("drained")
    assert record is not None and record.status is TaskStatus.SUCCEEDED
    # A pre-stop drains; it does not stop the agent (FC may call it before a freeze).
    status, _, _ = await request(agent, "POST", "/api/run", slow_prompt(2))
    assert status == 200


async def test_comfyui_not_ready_is_retryable_only_under_async(tmp_path: Path) -> None:
    async with running_agent(
        tmp_path,
        flags=["--ready-timeout", "0.3"],
        fake_args=["--startup-delay", "30"],
        wait_ready=False,
    ) as agent:
        status, _, body = await request(agent, "POST", "/initialize")
        assert status == 503 and body["ready"] is False
        status, headers, body = await request(
            agent, "POST", "/api/run", slow_prompt(2), **{"task-id": "early-sync"}
        )
        assert status == 503 and body["message"] == "ComfyUIUnavailable"
        assert headers["Retry-After"] and "x-fc-status" not in {k.lower() for k in headers}
        status, headers, body = await request(
            agent, "POST", "/api/run", slow_prompt(2), **{**ASYNC, "task-id": "early-async"}
        )
        assert status == 503 and body["message"] == "ComfyUIUnavailable"
        assert headers["x-fc-status"] == "404", "FC must deliver it again later"


async def test_claim_holds_through_a_long_stream_of_progress(agent: AgentUnderTest) -> None:
    # 150 steps 0.02 s apart: progress never stops for longer than the 1.5 s lease.
    await request(agent, "POST", "/api/tasks", slow_prompt(150), **{"task-id": "busy-claim"})
    await wait_status(agent, "busy-claim", {"running"})
    store = agent.services.store
    for _ in range(5):
        await asyncio.sleep(0.5)
        record = await store.load("busy-claim")
        if record is not None and record.status.is_terminal:
            break
        assert not await store.claim("busy-claim", "intruder", 30), "the claim lapsed"
    await wait_status(agent, "busy-claim", {"succeeded"})
