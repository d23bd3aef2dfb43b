"""GET /api/status?id=TASK: the stored progress map of a task run on any instance."""

from __future__ import annotations

import time

from aiohttp import web

from agent.answer_cache import FinishedAnswer
from agent.errors import ApiError, bad_request
from agent.routes.common import invalid_task_id, json_bytes_response, task_headers
from agent.services import Services, services
from store.base import InvalidTaskId, StoreError, validate_task_id
from store.records import TaskRecord


def _store_unavailable(exc: StoreError) -> ApiError:
    return ApiError(503, "StoreError", str(exc), headers={"Retry-After": "2"})


async def load_task(svc: Services, task_id: str) -> TaskRecord | None:
    """The freshest record (live here, else stored), `lost` once its owner's lease ran out."""
    record = svc.runner.local_record(task_id)
    if record is not None:
        return record
    try:
        stored = await svc.store.load(task_id)
    except StoreError as exc:
        raise _store_unavailable(exc) from exc
    return stored.as_seen_at(time.time()) if stored is not None else None


async def load_answer(svc: Services, task_id: str) -> TaskRecord | FinishedAnswer | None:
    """Like load_task, but a finished task comes as its kept answer (bytes, no parsing)."""
    if svc.answers is None:
        return await load_task(svc, task_id)
    record = svc.runner.local_record(task_id)
    if record is not None:
        # Running here (again): whatever was kept of an earlier run is out of date.
        svc.answers.forget(task_id)
        return record
    answer = svc.answers.fresh(task_id)
    if answer is not None:
        return answer  # the common case of a poll: no coroutine, no I/O
    try:
        found = await svc.answers.lookup(task_id)
    except StoreError as exc:
        raise _store_unavailable(exc) from exc
    if isinstance(found, TaskRecord):
        return found.as_seen_at(time.time())
    return found


async def get_status(request: web.Request) -> web.Response:
    """The progress map of ?id=TASK, or 404."""
    svc = services(request)
    task_id = request.query.get("id", "")
    if not task_id:
        raise bad_request("query parameter id (the task id) is required")
    try:
        validate_task_id(task_id)
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc
    found = await load_answer(svc, task_id)
    if found is None:
        raise ApiError(404, "LoadProgressError", f"task {task_id} not found")
    headers = task_headers(task_id, found.status)
    if isinstance(found, FinishedAnswer):
        return json_bytes_response(found.progress_body, headers)
    return web.json_response(found.progress_map(), headers=headers)
