"""GET /api/status?id=TASK: the stored progress map of a task run on any instance."""

from __future__ import annotations

import time

from aiohttp import web

from agent.errors import ApiError, bad_request
from agent.routes.common import invalid_task_id, task_headers
from agent.services import Services, services
from store.base import InvalidTaskId, StoreError, validate_task_id
from store.records import TaskRecord


async def load_task(svc: Services, task_id: str) -> TaskRecord | None:
    """The freshest record (live here, else stored), `lost` once its owner's lease ran out."""
    record = svc.runner.local_record(task_id)
    if record is not None:
        return record
    try:
        stored = await svc.store.load(task_id)
    except StoreError as exc:
        raise ApiError(503, "StoreError", str(exc), headers={"Retry-After": "2"}) from exc
    return stored.as_seen_at(time.time()) if stored is not None else None


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
    record = await load_task(svc, task_id)
    if record is None:
        raise ApiError(404, "LoadProgressError", f"task {task_id} not found")
    return web.json_response(record.progress_map(), headers=task_headers(task_id, record.status))
