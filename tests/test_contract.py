"""Contract tests: schemathesis generates requests from /api/openapi.json of a running agent.

The agent is a real `comfyui-agent` process with the fake ComfyUI as its child. Every
operation the document lists is exercised by every phase (examples, coverage, fuzzing,
stateful: POST /api/tasks links to GET/DELETE of the task it made), with bounded examples
so CI stays fast, and every answer goes through all of schemathesis' checks: no 5xx, a
documented status, a body and headers that match the document, invalid data refused. The
runner is schemathesis' own CLI (`st run`), settings in `tests/schemathesis.toml`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.agent_process import AgentProcess, spawn_agent, stop_gracefully, wait_ready

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 20
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentProcess]:
    # Short timeouts: a generated request must never hold the run for long.
    flags = ["--ready-timeout", "5", "--run-timeout", "20"]
    process = await spawn_agent(tmp_path_factory.mktemp("contract"), flags)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, process)
        yield process
    finally:
        code = await stop_gracefully(process)
        assert code == 0, f"agent exit code {code}:\n{process.log_tail()}"


async def documented_operations(agent: AgentProcess) -> set[str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{agent.url}/api/openapi.json") as response:
            document: dict[str, Any] = await response.json()
    return {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def statuses_by_operation(events_path: Path) -> dict[str, set[int]]:
    """Every status each operation answered, from the run's NDJSON events (not stateful
    scenarios, which the events file does not itemise)."""
    seen: dict[str, set[int]] = defaultdict(set)
    for line in events_path.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if scenario is None:
            continue
        recorder = scenario["recorder"]
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response")
            if response is not None:
                seen[recorder["label"]].add(response["status_code"])
    return seen


async def test_every_documented_operation_honours_the_document(
    agent: AgentProcess, tmp_path: Path
) -> None:
    operations = await documented_operations(agent)
    assert {"POST /api/run", "GET /api/status", "POST /api/tasks"} <= operations
    events = tmp_path / "events.ndjson"
    command = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{agent.url}/api/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--seed",
        "14",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    print(text[-3000:])
    assert process.returncode == 0, text[-20000:] + "\n--- agent log ---\n" + agent.log_tail()
    seen = statuses_by_operation(events)
    print("statuses answered per operation:")
    for label in sorted(seen):
        print(f"  {label}: {sorted(seen[label])}")
    # schemathesis leaves out the document's own route; this test fetched it above.
    assert operations - set(seen) <= {"GET /api/openapi.json"}, sorted(operations - set(seen))
    # Generated data reached past validation: each operation answered more than one status.
    for label in ("POST /api/run", "POST /api/tasks", "GET /api/tasks/{task_id}"):
        assert len(seen[label]) > 1, (label, seen[label])
