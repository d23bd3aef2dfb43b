"""Failure behaviour: the ComfyUI child dying, hanging, crash-looping or dropping its
websocket; run timeouts, client disconnects, backpressure, idle websocket clients; and the
agent process itself stopped by SIGTERM or killed by SIGKILL.

Every test starts its own agent (in-process with the fake ComfyUI as its real child, or the
`comfyui-agent` console script as a real process), because each one breaks something.
Time bounds are upper limits for polling, never sleeps; the numbers measured on the way
(kill -> failed answer -> readiness -> next success, hang detection) are printed, so
`pytest -s tests/test_failures.py` shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from agent.app import create_app
from agent.cli import make_backend
from agent.services import SERVICES
from agent.settings import parse_settings
from store.factory import open_store
from store.records import TaskRecord, TaskStatus
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt
from tests.agent_process import (
    FAKE_ARGS,
    AgentProcess,
    children_of,
    proc_stat,
    spawn_agent,
    wait_ready,
)
from tests.fake_comfyui.fixtures import MAIN_SCRIPT, free_port

T = TypeVar("T")
Response = tuple[int, dict[str, str], Any]

# -- small helpers -----------------------------------------------------------------------


def slow_prompt(steps: int) -> dict[str, Any]:
    """EmptyImage -> SlowCounter(steps x 0.02 s) -> SaveImage, distinct so nothing is cached."""
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    prompt["9"]["inputs"]["filename_prefix"] = f"f_{uuid.uuid4().hex[:8]}"
    return prompt


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request: status, headers, decoded JSON body (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    async with session.request(method, url, data=data, headers=headers or {}) as response:
        text = await response.text()
        return response.status, dict(response.headers), json.loads(text) if text else None


async def post_run(agent: AgentUnderTest, prompt: dict[str, Any], task_id: str) -> Response:
    """POST /api/run with a task id."""
    return await call(agent.session, "POST", f"{agent.url}/api/run", prompt, {"task-id": task_id})


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, interval: float = 0.01
) -> float | None:
    """Poll `predicate` until true; the seconds that took, or None after `timeout` s."""
    start = time.monotonic()
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(interval)


async def finished_at(coro: Coroutine[Any, Any, T]) -> tuple[T, float]:
    """The coroutine's result and the monotonic time it came."""
    result = await coro
    return result, time.monotonic()


async def status_of(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def wait_progress(agent: AgentUnderTest, task_id: str, at_least: int = 2) -> None:
    """Wait until node 2 of a live run on this agent made some progress."""

    def progressed() -> bool:
        handle = agent.services.runner.get(task_id)
        return handle is not None and handle.record.progress["2"].value >= at_least

    assert await eventually(progressed, 10), f"task {task_id} made no progress"


def measure(what: str, **seconds: float) -> None:
    shown = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
    print(f"\nMEASURED {what}: {shown}")


# -- processes ---------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def zombie_children() -> set[int]:
    """Children of this test process that exited and were not reaped."""
    return {pid for pid, state in children_of(os.getpid()) if state == "Z"}


def runs(pid: int, script: Path) -> bool:
    """The process runs `script` (its command line names it)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(script) in command


def is_fake_comfyui(pid: int) -> bool:
    return runs(pid, MAIN_SCRIPT)


@asynccontextmanager
async def agent_process(
    tmp_path: Path,
    flags: Sequence[str],
    fake_args: Sequence[str] = FAKE_ARGS,
    wait_for: str = "/readyz",
) -> AsyncIterator[AgentProcess]:
    """Start the console script (own session), wait until `wait_for` answers 200; at the
    end kill whatever is left (the agent, and an orphaned ComfyUI child), by PID."""
    agent = await spawn_agent(tmp_path, flags, fake_args)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, agent, wait_for)
        pids = children_of(agent.process.pid)
        agent.child_pids.extend(pid for pid, _ in pids if is_fake_comfyui(pid))
        assert len(agent.child_pids) == 1, pids
        yield agent
    finally:
        if agent.process.returncode is None:
            agent.process.kill()
            await agent.process.wait()
        for pid in agent.child_pids:  # an orphaned ComfyUI child, if the agent left one
            if alive(pid) and is_fake_comfyui(pid):
                os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def agent_with_command(
    tmp_path: Path, command: Sequence[str], flags: Sequence[str] = ()
) -> AsyncIterator[AgentUnderTest]:
    """An in-process agent whose child is `command` (built like the harness does)."""
    comfyui_port = free_port()
    settings = parse_settings(
        [
            "--comfyui-port",
            str(comfyui_port),
            "--store",
            f"file://{tmp_path / 'tasks'}",
            "--shutdown-grace",
            "1",
            *flags,
            "--",
            *command,
        ]
    )
    backend = await make_backend(settings)
    app = create_app(settings, backend)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        yield AgentUnderTest(
            url=str(server.make_url("")).rstrip("/"),
            settings=settings,
            services=app[SERVICES],
            session=session,
            comfyui_port=comfyui_port,
            fake_dir=tmp_path,
        )
    finally:
        await session.close()
        await server.close()


# -- 1. the child dies mid-run -----------------------------------------------------------


async def end_child(agent: AgentUnderTest, how: str) -> int:
    """Make the child die; return the exit code the supervisor should see."""
    pid = agent.services.backend.pid
    assert pid is not None
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        return -signal.SIGKILL
    if how == "sigterm":
        os.kill(pid, signal.SIGTERM)
        return -signal.SIGTERM
    assert how == "fake-crash"
    with contextlib.suppress(aiohttp.ClientError):  # it exits without answering
        await call(agent.session, "POST", f"{agent.comfyui_url}/fake/crash")
    return 137


@pytest.mark.parametrize("how", ["sigkill", "fake-crash", "sigterm"])
async def test_child_death_mid_run_fails_the_run_then_the_child_comes_back(
    tmp_path: Path, how: str
) -> None:
    async with running_agent(tmp_path) as agent:
        backend = agent.services.backend
        old_pid = backend.pid
        victim = asyncio.create_task(finished_at(post_run(agent, slow_prompt(200), "victim")))
        await wait_progress(agent, "victim")
        # A second run, already in ComfyUI's queue behind the first, is lost with it.
        behind = asyncio.create_task(post_run(agent, slow_prompt(5), "behind"))

        def submitted() -> bool:
            handle = agent.services.runner.get("behind")
            return handle is not None and handle.submitted

        assert await eventually(submitted, 5) is not None

        killed = time.monotonic()
        expected_code = await end_child(agent, how)
        back = asyncio.create_task(
            eventually(lambda: backend.ready and backend.pid not in (None, old_pid), 15)
        )
        # Readiness drops at once, while the agent itself stays healthy.
        readyz: list[int] = []

        async def unready() -> bool:
            readyz.append(await status_of(agent.session, f"{agent.url}/readyz"))
            return readyz[-1] == 503

        assert await eventually(unready, 1.0) is not None, readyz
        assert await status_of(agent.session, f"{agent.url}/healthz") == 200

        (status, headers, body), answered = await asyncio.wait_for(victim, 3)
        assert status == 502, body
        assert body["message"] == "ComfyUICrashed"
        assert headers["X-Task-Status"] == "failed" and headers["X-Task-Id"] == "victim"
        assert body["error"]["type"] == "comfyui_crashed"
        record = await agent.services.store.load("victim")
        assert record is not None and record.status is TaskStatus.FAILED
        assert record.error is not None and record.error.type == "comfyui_crashed"
        assert record.error.details == {"exit_code": expected_code}
        assert 0 < record.progress["2"].value < 200
        status, headers, body = await asyncio.wait_for(behind, 3)
        assert status == 502 and body["error"]["type"] == "comfyui_crashed", body
        assert headers["X-Task-Status"] == "failed"

        # The next run, sent while the child restarts, waits for it and succeeds.
        (status, headers, body), succeeded = await asyncio.wait_for(
            finished_at(post_run(agent, slow_prompt(3), "after")), 15
        )
        assert status == 200, body
        assert headers["X-Task-Status"] == "succeeded" and body["2"]["value"] == 3
        ready_after = await back
        assert ready_after is not None, "the child did not come back"
        assert backend.restarts == 1 and backend.pid not in (None, old_pid)
        measure(
            f"child {how}",
            failed_answer=answered - killed,
            ready_again=ready_after,
            next_success=succeeded - killed,
            success_after_ready=succeeded - killed - ready_after,
        )
        assert answered - killed < 3.0


async def test_run_sent_at_readiness_after_a_restart_does_not_wait_for_the_websocket(
    tmp_path: Path,
) -> None:
    """Once /readyz is 200 again, a run must not idle on the event stream's reconnect back-off.

    A child that boots for a few seconds (as ComfyUI does) lets that back-off grow to its
    cap, so the websocket comes back up to 2 s after the child is ready.
    """
    fake_args = ["--slow-delay", "0.02", "--startup-delay", "2.8"]
    async with running_agent(tmp_path, fake_args=fake_args) as agent:
        backend, events = agent.services.backend, agent.services.events
        old_pid = backend.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        ready_after = await eventually(
            lambda: backend.ready and backend.pid not in (None, old_pid), 15
        )
        assert ready_after is not None
        ready_at = time.monotonic()
        connected_at = asyncio.create_task(finished_at(eventually(lambda: events.connected, 5)))
        status, _, body = await post_run(agent, slow_prompt(2), "right-after-ready")
        elapsed = time.monotonic() - ready_at
        _, connected = await connected_at
        measure(
            "run sent at readiness",
            ready_again=ready_after,
            websocket_after_ready=connected - ready_at,
            two_step_run=elapsed,
        )
        assert status == 200, body
        assert elapsed < 0.5, f"a 2-step run sent at readiness took {elapsed:.2f} s"


# -- 2. requests that arrive while the child restarts ------------------------------------


async def test_requests_during_a_restart_wait_for_readiness_and_succeed(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--ready-timeout", "15"]) as agent:
        backend = agent.services.backend
        old_pid = backend.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        assert await eventually(lambda: not backend.ready, 1.0) is not None
        sent = time.monotonic()
        runs = [
            asyncio.create_task(post_run(agent, slow_prompt(3), f"waiting-{i}")) for i in range(3)
        ]
        runner = agent.services.runner
        arrived = await eventually(lambda: all(runner.get(f"waiting-{i}") for i in range(3)), 1)
        assert arrived is not None
        assert not backend.ready, "the requests must reach the agent before readiness returns"
        answers = await asyncio.wait_for(asyncio.gather(*runs), 15)
        for status, headers, body in answers:
            assert status == 200, body
            assert headers["X-Task-Status"] == "succeeded" and body["2"]["value"] == 3
        assert backend.restarts == 1
        measure("requests during restart", all_answered=time.monotonic() - sent)


async def test_request_during_a_restart_gets_503_after_a_short_ready_timeout(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path, flags=["--ready-timeout", "0.2"]) as agent:
        backend = agent.services.backend
        old_pid = backend.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)  # the restart back-off alone (0.5 s) exceeds 0.2 s
        assert await eventually(lambda: not backend.ready, 1.0) is not None
        sent = time.monotonic()
        status, headers, body = await post_run(agent, slow_prompt(3), "too-early")
        elapsed = time.monotonic() - sent
        assert status == 503, body
        assert body["message"] == "ComfyUIUnavailable"
        assert body["error"]["type"] == "comfyui_unavailable"
        assert int(headers["Retry-After"]) > 0
        assert headers["X-Task-Status"] == "failed"
        assert 0.2 <= elapsed < 1.2, elapsed
        # Once the child is back, work is accepted again.
        assert await eventually(lambda: backend.ready, 15) is not None
        status, _, body = await post_run(agent, slow_prompt(3), "in-time")
        assert status == 200, body


# -- 3. a crash-looping child ------------------------------------------------------------


async def test_crash_looping_child_backs_off_and_the_agent_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\nprint('crash-looping ComfyUI: giving up', flush=True)\nsys.exit(3)\n"
    )
    caplog.set_level(logging.INFO)
    flags = ["--ready-timeout", "0.5"]
    zombies_before = zombie_children()  # other tests' leftovers are not this test's business
    async with agent_with_command(tmp_path, [sys.executable, str(script)], flags) as agent:
        backend = agent.services.backend
        started = time.monotonic()
        # A run sent now waits --ready-timeout, then is refused with a retry hint.
        run = asyncio.create_task(finished_at(post_run(agent, slow_prompt(2), "never")))

        restart_times: list[float] = []
        most_children = 0
        most_zombies = 0

        def watch() -> bool:
            nonlocal most_children, most_zombies
            while backend.restarts > len(restart_times):
                restart_times.append(time.monotonic() - started)
            mine = [pid for pid, state in children_of(os.getpid()) if runs(pid, script)]
            most_children = max(most_children, len(mine))
            most_zombies = max(most_zombies, len(zombie_children() - zombies_before))
            return len(restart_times) >= 3

        checked = False
        while not await eventually(watch, 0.2, 0.005):
            assert time.monotonic() - started < 10, restart_times
            if not checked:
                assert await status_of(agent.session, f"{agent.url}/healthz") == 200
                async with agent.session.get(f"{agent.url}/readyz") as response:
                    assert response.status == 503
                    assert int(response.headers["Retry-After"]) > 0
                    readyz = await response.json()
                assert readyz["ready"] is False
                assert readyz["comfyui"] in ("restarting", "starting"), readyz
                checked = True

        (status, headers, body), answered = await run
        assert status == 503, body
        assert body["message"] == "ComfyUIUnavailable"
        assert int(headers["Retry-After"]) > 0
        # Waited --ready-timeout (0.5 s), then refused; the upper bound only rules out a
        # refusal that waited for the restarts (a loaded machine stretches the rest).
        assert 0.5 <= answered - started < 5

        gaps = [b - a for a, b in zip([0.0, *restart_times], restart_times, strict=False)]
        measure("crash loop", **{f"gap{i}": gap for i, gap in enumerate(gaps)})
        assert gaps[1] > 1.4 * gaps[0] and gaps[2] > 1.4 * gaps[1], gaps
        assert await status_of(agent.session, f"{agent.url}/healthz") == 200
        # Each dead child is reaped: no zombies pile up, at most one child lives at a time.
        assert most_zombies <= 1 and most_children <= 1
        assert await eventually(lambda: not zombie_children() - zombies_before, 1.0) is not None
    assert any("crash-looping ComfyUI: giving up" in r.getMessage() for r in caplog.records)


# -- 4. a hung child ---------------------------------------------------------------------


async def test_hung_child_is_killed_and_replaced(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--comfyui-hang-timeout", "1"]) as agent:
        backend = agent.services.backend
        old_pid = backend.pid
        victim = asyncio.create_task(post_run(agent, slow_prompt(200), "hung"))
        await wait_progress(agent, "hung")
        await call(agent.session, "POST", f"{agent.comfyui_url}/fake/stall?seconds=30")
        stalled = time.monotonic()
        assert old_pid is not None
        killed_after = await eventually(lambda: not alive(old_pid), 6)
        assert killed_after is not None, "the hung child was not killed"
        status, headers, body = await asyncio.wait_for(victim, 5)
        answered = time.monotonic() - stalled
        assert status == 502, body
        assert body["message"] == "ComfyUICrashed" and headers["X-Task-Status"] == "failed"
        record = await agent.services.store.load("hung")
        assert record is not None and record.error is not None
        assert record.error.type == "comfyui_crashed"
        assert record.error.details == {"exit_code": -signal.SIGKILL}
        status, _, body = await asyncio.wait_for(post_run(agent, slow_prompt(3), "unhung"), 15)
        assert status == 200, body
        assert backend.restarts == 1 and backend.pid not in (None, old_pid)
        measure(
            "hang",
            killed=killed_after,
            failed_answer=answered,
            next_success=time.monotonic() - stalled,
        )


# -- 5. the websocket to ComfyUI drops ---------------------------------------------------


async def test_websocket_drop_mid_run_still_ends_succeeded_with_full_progress(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path) as agent:
        events = agent.services.events
        reconnects = events.reconnects
        run = asyncio.create_task(post_run(agent, slow_prompt(50), "dropped"))
        await wait_progress(agent, "dropped", at_least=5)
        await call(agent.session, "POST", f"{agent.comfyui_url}/fake/drop-websockets")
        status, headers, body = await asyncio.wait_for(run, 15)
        assert status == 200, body
        assert headers["X-Task-Status"] == "succeeded"
        assert body["2"]["value"] == body["2"]["max"] == 50
        assert body["9"]["images"] and body["9"]["results"]
        assert events.reconnects > reconnects
        record = await agent.services.store.load("dropped")
        assert record is not None and record.status is TaskStatus.SUCCEEDED
        assert record.progress["2"].value == 50


async def test_run_started_while_the_websocket_is_down_finishes(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        events = agent.services.events
        await call(agent.session, "POST", f"{agent.comfyui_url}/fake/drop-websockets")
        assert await eventually(lambda: not events.connected, 1.0) is not None
        status, headers, body = await asyncio.wait_for(
            post_run(agent, slow_prompt(20), "while-down"), 15
        )
        assert status == 200, body
        assert headers["X-Task-Status"] == "succeeded"
        assert body["2"]["value"] == body["2"]["max"] == 20
        assert body["9"]["images"]


async def test_run_finishes_while_the_websocket_keeps_dropping(tmp_path: Path) -> None:
    """Started while the socket is down, and it is dropped again every 50 ms: the run ends
    through /history. Progress events it never saw cannot be recovered (history has no
    progress), so node 2 only has to be done, not to show all its steps."""
    async with running_agent(tmp_path) as agent:
        events = agent.services.events
        drop_url = f"{agent.comfyui_url}/fake/drop-websockets"
        await call(agent.session, "POST", drop_url)
        assert await eventually(lambda: not events.connected, 1.0) is not None
        sent = time.monotonic()
        run = asyncio.create_task(post_run(agent, slow_prompt(20), "storm"))

        async def storm() -> None:
            while not run.done():
                await call(agent.session, "POST", drop_url)
                await asyncio.sleep(0.05)

        dropper = asyncio.create_task(storm())
        try:
            status, headers, body = await asyncio.wait_for(run, 15)
        finally:
            await dropper
        measure("run under websocket drops", run=time.monotonic() - sent)
        assert status == 200, body
        assert headers["X-Task-Status"] == "succeeded"
        assert body["9"]["images"] and body["9"]["value"] == body["9"]["max"] >= 1
        assert body["2"]["value"] == body["2"]["max"] >= 1, body["2"]
        record = await agent.services.store.load("storm")
        assert record is not None and record.status is TaskStatus.SUCCEEDED


# -- 6. run timeout ----------------------------------------------------------------------


async def test_run_timeout_answers_504_and_frees_comfyui(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--run-timeout", "1"]) as agent:
        sent = time.monotonic()
        status, headers, body = await post_run(agent, slow_prompt(200), "too-slow")
        elapsed = time.monotonic() - sent
        assert status == 504, body
        assert body["message"] == "RunTimeout" and headers["X-Task-Status"] == "failed"
        assert 1.0 <= elapsed < 2.5, elapsed
        record = await agent.services.store.load("too-slow")
        assert record is not None and record.status is TaskStatus.FAILED
        assert record.error is not None and record.error.type == "timeout"
        prompt_id = record.prompt_id
        assert prompt_id is not None

        async def interrupted() -> bool:
            _, _, history = await call(
                agent.session, "GET", f"{agent.comfyui_url}/history/{prompt_id}"
            )
            entry = (history or {}).get(prompt_id)
            if entry is None:
                return False
            kinds = [message[0] for message in entry["status"]["messages"]]
            return "execution_interrupted" in kinds

        assert await eventually(interrupted, 3.0, 0.05) is not None, "prompt not interrupted"
        _, _, queue = await call(agent.session, "GET", f"{agent.comfyui_url}/queue")
        assert queue["queue_running"] == [] and queue["queue_pending"] == []
        sent = time.monotonic()
        status, _, body = await post_run(agent, slow_prompt(3), "quick")
        assert status == 200, body
        measure("run timeout", answer=elapsed, next_run=time.monotonic() - sent)


# -- 7. the client leaves ----------------------------------------------------------------


async def test_client_disconnect_from_sync_run_does_not_stop_it(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        leaver = aiohttp.ClientSession()
        request = asyncio.create_task(
            leaver.post(
                f"{agent.url}/api/run",
                data=json.dumps(slow_prompt(30)).encode(),
                headers={"task-id": "left"},
            )
        )
        try:
            await wait_progress(agent, "left")
        finally:
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
            await leaver.close()

        async def ended() -> bool:
            record = await agent.services.store.load("left")
            return record is not None and record.status.is_terminal

        assert await eventually(ended, 10, 0.05) is not None
        record = await agent.services.store.load("left")
        assert record is not None and record.status is TaskStatus.SUCCEEDED
        assert record.progress["2"].value == 30 and record.outputs["9"]["images"]


# -- 8. SIGTERM to the agent process -----------------------------------------------------


async def test_sigterm_finishes_the_running_task_refuses_new_ones_and_exits_0(
    tmp_path: Path,
) -> None:
    async with (
        agent_process(tmp_path, ["--shutdown-grace", "5"]) as agent,
        aiohttp.ClientSession() as session,
    ):
        run_url = f"{agent.url}/api/run"
        running = asyncio.create_task(
            call(session, "POST", run_url, slow_prompt(100), {"task-id": "graceful"})
        )

        async def progressed() -> bool:
            _, _, record = await call(session, "GET", f"{agent.url}/api/tasks/graceful")
            return bool(record) and record.get("progress", {}).get("2", {}).get("value", 0) >= 2

        assert await eventually(progressed, 10, 0.05) is not None
        agent.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()

        async def refusing() -> bool:
            _, _, readyz = await call(session, "GET", f"{agent.url}/readyz")
            return readyz["accepting"] is False

        assert await eventually(refusing, 2.0) is not None
        status, headers, body = await call(
            session, "POST", run_url, slow_prompt(2), {"task-id": "late"}
        )
        assert status == 503, body
        assert body["message"] == "ShuttingDown" and int(headers["Retry-After"]) > 0

        status, headers, body = await asyncio.wait_for(running, 10)
        assert status == 200, (body, agent.log_tail())
        assert headers["X-Task-Status"] == "succeeded" and body["2"]["value"] == 100
        code = await asyncio.wait_for(agent.process.wait(), 5 + 5)
        stopped = time.monotonic() - termed
        assert code == 0, agent.log_tail()
        assert agent.stored("graceful")["status"] == "succeeded"
        assert not (agent.store_dir / "late.json").exists()
        assert await eventually(lambda: not alive(agent.child_pid), 2.0) is not None
        measure("graceful stop", exit=stopped)


async def test_sigterm_fails_a_run_longer_than_the_grace_and_still_exits_0(
    tmp_path: Path,
) -> None:
    async with (
        agent_process(tmp_path, ["--shutdown-grace", "1"]) as agent,
        aiohttp.ClientSession() as session,
    ):
        running = asyncio.create_task(
            call(session, "POST", f"{agent.url}/api/run", slow_prompt(200), {"task-id": "long"})
        )

        async def progressed() -> bool:
            _, _, record = await call(session, "GET", f"{agent.url}/api/tasks/long")
            return bool(record) and record.get("progress", {}).get("2", {}).get("value", 0) >= 2

        assert await eventually(progressed, 10, 0.05) is not None
        agent.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        status, headers, body = await asyncio.wait_for(running, 1 + 8)
        answered = time.monotonic() - termed
        assert status == 503, (body, agent.log_tail())
        assert body["message"] == "ShuttingDown" and headers["X-Task-Status"] == "failed"
        assert answered >= 1.0, answered
        code = await asyncio.wait_for(agent.process.wait(), 1 + 8)
        assert code == 0, agent.log_tail()
        stored = agent.stored("long")
        assert stored["status"] == "failed" and stored["error"]["type"] == "shutting_down"
        assert 0 < stored["progress"]["2"]["value"] < 200
        assert await eventually(lambda: not alive(agent.child_pid), 2.0) is not None
        measure("stop past the grace", failed_answer=answered, exit=time.monotonic() - termed)


SLOW_BOOT = ("--slow-delay", "0.02", "--startup-delay", "30")  # ComfyUI still loading


async def test_sigterm_while_comfyui_boots_exits_0_at_once(tmp_path: Path) -> None:
    async with agent_process(
        tmp_path, ["--shutdown-grace", "1"], fake_args=SLOW_BOOT, wait_for="/healthz"
    ) as agent:
        agent.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        code = await asyncio.wait_for(agent.process.wait(), 5)
        assert code == 0, agent.log_tail()
        assert await eventually(lambda: not alive(agent.child_pid), 2.0) is not None
        measure("stop during boot", exit=time.monotonic() - termed)


async def test_sigterm_while_a_request_waits_for_comfyui_to_boot(tmp_path: Path) -> None:
    """The request waiting for readiness ends at the grace, and the agent exits soon after."""
    async with (
        agent_process(
            tmp_path, ["--shutdown-grace", "1"], fake_args=SLOW_BOOT, wait_for="/healthz"
        ) as agent,
        aiohttp.ClientSession() as session,
    ):
        waiting = asyncio.create_task(
            call(session, "POST", f"{agent.url}/api/run", slow_prompt(2), {"task-id": "early"})
        )
        stored = agent.store_dir / "early.json"
        assert await eventually(stored.exists, 5) is not None
        agent.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        try:
            status, headers, body = await asyncio.wait_for(waiting, 1 + 3)
            assert status == 503, body
            assert body["message"] in ("ShuttingDown", "ComfyUIUnavailable")
            assert headers["X-Task-Status"] == "failed"
            code = await asyncio.wait_for(agent.process.wait(), 3)
            assert code == 0, agent.log_tail()
            assert agent.stored("early")["status"] == "failed"
            measure("stop while a request waits for boot", exit=time.monotonic() - termed)
        finally:
            waiting.cancel()


async def test_sigterm_with_a_websocket_watching_a_remote_task_exits_promptly(
    tmp_path: Path,
) -> None:
    """A client watching a task that runs on another instance must not hold the exit."""
    remote = TaskRecord(
        task_id="remote",
        status=TaskStatus.RUNNING,
        instance="other-instance",
        lease_expires_at=time.time() + 120,
    )
    store = open_store(f"file://{tmp_path / 'tasks'}", ttl=None, instance="other-instance")
    await store.save(remote)
    await store.close()
    async with (
        agent_process(tmp_path, ["--shutdown-grace", "1"]) as agent,
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"ws{agent.url[4:]}/api/run/ws?id=remote",
            timeout=aiohttp.ClientWSTimeout(ws_close=0.5),  # the end need not wait long
        ) as ws,
    ):
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "progress"
        agent.process.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        try:
            code = await asyncio.wait_for(agent.process.wait(), 1 + 3)
        finally:
            measure("stop with a remote watcher", exit=time.monotonic() - termed)
        assert code == 0, agent.log_tail()


# -- 9. backpressure ---------------------------------------------------------------------


async def test_max_queue_refuses_with_429_and_stores_nothing(tmp_path: Path) -> None:
    async with running_agent(tmp_path, flags=["--max-queue", "2"]) as agent:
        tasks_url = f"{agent.url}/api/tasks"
        for task_id in ("bp-1", "bp-2"):
            status, _, body = await call(
                agent.session, "POST", tasks_url, slow_prompt(40), {"task-id": task_id}
            )
            assert status == 202, body
        status, headers, body = await post_run(agent, slow_prompt(2), "bp-3")
        assert status == 429, body
        assert body["message"] == "QueueFull" and int(headers["Retry-After"]) > 0
        status, headers, body = await call(
            agent.session, "POST", tasks_url, slow_prompt(2), {"task-id": "bp-4"}
        )
        assert status == 429 and body["message"] == "QueueFull"
        for task_id in ("bp-3", "bp-4"):
            assert await agent.services.store.load(task_id) is None
            status, _, _ = await call(agent.session, "GET", f"{tasks_url}/{task_id}")
            assert status == 404

        async def both_done() -> bool:
            for task_id in ("bp-1", "bp-2"):
                record = await agent.services.store.load(task_id)
                if record is None or record.status is not TaskStatus.SUCCEEDED:
                    return False
            return True

        assert await eventually(both_done, 10, 0.05) is not None
        status, _, body = await post_run(agent, slow_prompt(2), "bp-3")
        assert status == 200, body


# -- 10. an idle websocket client --------------------------------------------------------


async def test_silent_websocket_client_gets_request_timeout(tmp_path: Path) -> None:
    # (A client that sends garbage: test_agent_api.test_ws_garbage_first_message_...)
    flags = ["--ws-first-message-timeout", "0.5"]
    async with running_agent(tmp_path, flags=flags) as agent:
        opened = time.monotonic()
        async with agent.session.ws_connect(agent.ws_url("/api/run/ws")) as ws:
            messages = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            closed = time.monotonic() - opened
            assert ws.closed
        assert messages == [
            {
                "type": "error",
                "data": {"message": "RequestTimeout", "error": "no workflow received"},
            }
        ]
        assert 0.5 <= closed < 2.0, closed
        assert await status_of(agent.session, f"{agent.url}/healthz") == 200
        assert await status_of(agent.session, f"{agent.url}/readyz") == 200
        status, _, body = await post_run(agent, slow_prompt(2), "after-idle-ws")
        assert status == 200, body


# -- 11. SIGKILL to the agent process ----------------------------------------------------


@pytest.mark.parametrize("which", ["first", "restarted"])
async def test_comfyui_child_does_not_outlive_a_killed_agent(tmp_path: Path, which: str) -> None:
    async with agent_process(tmp_path, []) as agent:
        child = agent.child_pid
        if which == "restarted":  # the replacement is spawned by the supervisor's loop
            os.kill(child, signal.SIGKILL)

            def replaced() -> bool:
                found = [pid for pid, _ in children_of(agent.process.pid) if is_fake_comfyui(pid)]
                return bool(found) and found[0] != child

            assert await eventually(replaced, 10) is not None
            [child] = [pid for pid, _ in children_of(agent.process.pid) if is_fake_comfyui(pid)]
            agent.child_pids.append(child)
        assert alive(child)
        agent.process.kill()
        await agent.process.wait()
        killed = time.monotonic()
        gone = await eventually(lambda: not alive(child), 2.0)
        assert gone is not None, f"ComfyUI child {child} still runs after the agent was killed"
        measure(f"{which} child after agent SIGKILL", gone=time.monotonic() - killed)
