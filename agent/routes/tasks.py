"""The task API: POST /api/tasks (start, 202), GET and DELETE /api/tasks/{id}.

For platforms that do not freeze idle instances: the run goes on in the background and
any instance answers for it. Starting a task id that succeeded or still runs does not run
it again (the answer says so with the record); one that failed or was lost runs again (a
lost one is taken over through the claim's fence, so its old owner cannot finish it too).
"""

from __future__ import annotations

import time

from aiohttp import web

from agent.answer_cache import FinishedAnswer
from agent.errors import ApiError, not_found
from agent.routes.common import (
    RunReader,
    errors_name_task,
    invalid_task_id,
    json_bytes_response,
    request_task_id,
    task_headers,
    workflow_run,
)
from agent.routes.delivery_plan import request_plan
from agent.routes.run import start_run
from agent.routes.status import load_answer, load_task
from agent.services import Services, services
from store.base import InvalidTaskId, StoreError, validate_task_id
from store.records import TaskRecord, TaskStatus


def record_response(record: TaskRecord, status: int = 200) -> web.Response:
    """The task record as JSON, with the task headers (and Location for new tasks)."""
    headers = task_headers(record.task_id, record.status)
    headers["Location"] = f"/api/tasks/{record.task_id}"
    return web.json_response(record.model_dump(mode="json"), status=status, headers=headers)


def _task_id(request: web.Request) -> str:
    try:
        return validate_task_id(request.match_info["task_id"])
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc


async def _known(svc: Services, task_id: str) -> TaskRecord:
    record = await load_task(svc, task_id)
    if record is None:
        raise not_found(f"task {task_id} not found")
    return record


async def get_task(request: web.Request) -> web.Response:
    """The task record (status `lost` once its owner stopped renewing it)."""
    svc = services(request)
    task_id = _task_id(request)
    found = await load_answer(svc, task_id)
    if found is None:
        raise not_found(f"task {task_id} not found")
    if isinstance(found, FinishedAnswer):
        headers = task_headers(task_id, found.status)
        headers["Location"] = f"/api/tasks/{task_id}"
        return json_bytes_response(found.record_body, headers)
    return record_response(found)


async def create_task(request: web.Request) -> web.Response:
    """Start the workflow in the body as a background task: 202 with the record."""
    return await start_task(request, workflow_run)


async def start_task(request: web.Request, read: RunReader) -> web.Response:
    """Start what the request asks for (read from its body) in the background: 202."""
    svc = services(request)
    task_id = request_task_id(request)
    with errors_name_task(task_id):
        run = await read(svc, request)
        plan = await request_plan(svc, request)
    existing = await load_task(svc, task_id)
    if existing is not None:
        status = existing.effective_status(time.time())
        if status is TaskStatus.SUCCEEDED:
            return record_response(existing, 200)
        if status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return record_response(existing, 202)
    try:
        handle = await start_run(svc, task_id, run, plan)
    except ApiError as exc:
        if exc.status != 409:
            raise
        # Another request started it just now: report that one.
        return record_response(await _known(svc, task_id), 202)
    return record_response(handle.snapshot(), 202)


async def delete_task(request: web.Request) -> web.Response:
    """Interrupt the task, wherever it runs: 202 with the record as it is now.

    A lost task is asked through the store too: its owner, should it come back, stops it.
    """
    svc = services(request)
    task_id = _task_id(request)
    record = await _known(svc, task_id)
    if record.status.is_terminal:
        raise ApiError(
            409,
            "TaskFinished",
            f"task {task_id} already ended ({record.status.value})",
            headers=task_headers(task_id, record.status),
        )
    if not await svc.runner.interrupt(task_id):
        # It runs on another instance: ask its owner through the store.
        try:
            await svc.store.request_cancel(task_id)
        except StoreError as exc:
            raise ApiError(503, "StoreError", str(exc), headers={"Retry-After": "2"}) from exc
    return record_response(await _known(svc, task_id), 202)
