"""POST /api/run: run a workflow and answer when it is done (the Go agent's sync call)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent.errors import ApiError, unavailable
from agent.routes.common import (
    finished_body,
    invalid_task_id,
    read_json_body,
    results_mode,
    task_headers,
    workflow_from_body,
)
from agent.runner import QueueFull, RunHandle, ShuttingDown, TaskAlreadyRunning
from agent.services import Services, services
from agent.task_ids import task_id_from_headers
from store.base import InvalidTaskId


def start_run(svc: Services, task_id: str, workflow: dict[str, dict[str, Any]]) -> RunHandle:
    """Start a run, turning refusals into API errors."""
    try:
        return svc.runner.start(task_id, workflow)
    except TaskAlreadyRunning as exc:
        raise ApiError(
            409,
            "TaskAlreadyRunning",
            f"task {task_id} is already running",
            headers=task_headers(task_id, "running"),
        ) from exc
    except QueueFull as exc:
        raise ApiError(429, "QueueFull", str(exc), headers={"Retry-After": "5"}) from exc
    except ShuttingDown as exc:
        raise unavailable(str(exc), message="ShuttingDown") from exc


async def run_sync(request: web.Request) -> web.Response:
    """Run the workflow in the body; answer the progress map with results when it ends."""
    svc = services(request)
    try:
        task_id = task_id_from_headers(request.headers)
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc
    try:
        mode = results_mode(request, svc.settings.results)
        workflow = workflow_from_body(await read_json_body(request, svc.settings.max_body))
    except ApiError as exc:
        # Refused before a task existed: nothing is stored, but the caller learns the id.
        exc.headers.setdefault("X-Task-Id", task_id)
        raise
    handle = start_run(svc, task_id, workflow)
    # The run lives on in its own task: a client that disconnects does not stop it.
    await asyncio.shield(handle.done.wait())
    record = handle.snapshot()
    status, body = await finished_body(svc, record, mode)
    headers = task_headers(task_id, record.status)
    if status == 503:
        headers["Retry-After"] = "5"
    return web.json_response(body, status=status, headers=headers)
