"""GET /api/run/ws: run a workflow (or watch a task with ?id=) and stream its progress.

The first message is the workflow, or `{"app": id, "params": {...}}` to run an app.

Messages: `{"type": "progress", "task_id", "data": <progress map>}` on every change, then
one `{"type": "result", ...}` (with results) or `{"type": "error", ...}`, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import WSMsgType, web

from agent.answer_json import dumps_answer
from agent.delivery.image_format import ImageFormat
from agent.errors import ApiError
from agent.routes.apps import app_run_from_message, is_app_message
from agent.routes.common import (
    RunRequest,
    checked_workflow,
    finished_body,
    invalid_task_id,
    parse_json,
    results_mode,
)
from agent.routes.delivery_plan import request_plan
from agent.routes.run import start_run
from agent.routes.status import load_task
from agent.runner import RunHandle
from agent.services import Services, services
from agent.task_ids import task_id_from_headers
from agent.task_watch import follow_task
from store.base import InvalidTaskId, validate_task_id
from store.records import TaskRecord

log = logging.getLogger("agent.ws")


async def run_ws(request: web.Request) -> web.StreamResponse:
    """Websocket run (client sends the workflow once) or watch (`?id=TASK`)."""
    svc = services(request)
    # timeout: how long close() waits for the client's close frame (default 10 s).
    # No permessage-deflate (browsers offer it; the Go agent never took it): previews are
    # JPEG and results mostly base64 of PNG, which deflate shrinks by a fifth at best, for
    # about 70 ms of a core per 2 MB result, on the cores ComfyUI runs on.
    ws = web.WebSocketResponse(
        heartbeat=30.0, max_msg_size=svc.settings.max_body, timeout=1.0, compress=False
    )
    await ws.prepare(request)
    svc.websockets.add(ws)
    try:
        mode = results_mode(request, svc.settings.results)
        watch_id = request.query.get("id")
        with svc.runner.metrics.websocket_watcher("watch" if watch_id else "run"):
            if watch_id:
                await _watch(svc, ws, watch_id, mode)
            else:
                await _run(svc, ws, request, mode)
    except ApiError as exc:
        await _send(ws, {"type": "error", "data": exc.body()})
    finally:
        await ws.close()
    return ws


async def _run(svc: Services, ws: web.WebSocketResponse, request: web.Request, mode: str) -> None:
    try:
        task_id = task_id_from_headers(request.headers, request.query)
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc
    plan = await request_plan(svc, request)
    body = await _first_message(ws, svc.settings.ws_first_message_timeout)
    if is_app_message(body):
        run = await app_run_from_message(svc, body)
    else:
        run = RunRequest(checked_workflow(svc, body))
    handle = await start_run(svc, task_id, run, plan)
    previews = request.query.get("previews") in ("1", "true")
    # Live from the run; through the store should another run take the task over.
    updates = _follow(svc, task_id, handle)
    await _stream(
        svc,
        ws,
        task_id,
        updates,
        mode,
        handle if previews else None,
        True,
        plan.image_format,
    )


async def _watch(svc: Services, ws: web.WebSocketResponse, task_id: str, mode: str) -> None:
    try:
        validate_task_id(task_id)
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc
    if await load_task(svc, task_id) is None:
        raise ApiError(404, "TaskNotFound", f"task {task_id} not found")
    await _stream(svc, ws, task_id, _follow(svc, task_id), mode, None, False)


def _follow(
    svc: Services, task_id: str, handle: RunHandle | None = None
) -> AsyncGenerator[TaskRecord, None]:
    return follow_task(
        svc.runner,
        svc.store,
        task_id,
        lease_check=svc.runner.options.lease / 3,
        lost_grace=svc.settings.lost_grace,
        handle=handle,
    )


async def _stream(
    svc: Services,
    ws: web.WebSocketResponse,
    task_id: str,
    updates: AsyncGenerator[TaskRecord, None],
    mode: str,
    previews_from: RunHandle | None,
    require_results: bool,
    image_format: ImageFormat | None = None,
) -> None:
    """Send progress until the task ends, then the result or error; stop if the client goes."""
    reader = asyncio.create_task(_drain(ws))
    forwarder = asyncio.create_task(_forward_previews(ws, previews_from)) if previews_from else None
    try:
        last: TaskRecord | None = None
        sent: dict[str, Any] | None = None
        while True:
            # Wait for the next change or for the client to leave, whichever comes first:
            # a watcher of a quiet task must not outlive its client (or hold a shutdown).
            step = asyncio.ensure_future(anext(updates))
            await asyncio.wait({step, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return  # client gone: the run goes on and its state is stored
            try:
                record = step.result()
            except StopAsyncIteration:
                break
            if reader.done():
                return
            last = record
            if record.status.is_terminal:
                break
            progress = record.progress_map()
            if progress != sent:  # status-only changes leave the map as it was
                await _send(ws, {"type": "progress", "task_id": task_id, "data": progress})
                sent = progress
        if last is None or reader.done():
            return
        # A run taken over by another instance ended there: its files may not be readable here.
        here = last.instance == svc.settings.instance
        status, body = await finished_body(
            svc,
            last,
            mode,
            require_results=require_results and here,
            image_format=image_format,
        )
        if status == 200:
            await _send(ws, {"type": "result", "task_id": task_id, "data": body})
        else:
            await _send(ws, {"type": "error", "task_id": task_id, "status": status, "data": body})
    finally:
        for task in (reader, forwarder):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await updates.aclose()


async def _first_message(ws: web.WebSocketResponse, timeout: float) -> Any:
    try:
        message = await ws.receive(timeout=timeout)
    except TimeoutError as exc:
        raise ApiError(408, "RequestTimeout", "no workflow received") from exc
    if message.type == WSMsgType.TEXT:
        return parse_json(message.data)
    if message.type == WSMsgType.BINARY:
        return parse_json(message.data)
    raise ApiError(400, "RequestParamsError", "expected the workflow as a JSON text message")


async def _drain(ws: web.WebSocketResponse) -> None:
    # Reads (and ignores) client messages so pings are answered and a close is noticed.
    async for message in ws:
        if message.type == WSMsgType.TEXT and message.data.strip() == '{"type":"close"}':
            break


async def _forward_previews(ws: web.WebSocketResponse, handle: RunHandle) -> None:
    queue = handle.add_preview_listener()
    try:
        while True:
            frame = await queue.get()
            await ws.send_bytes(frame)
    finally:
        handle.remove_preview_listener(queue)


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        # A text frame from the rendered bytes: results go in unscanned (answer_json).
        await ws.send_frame(dumps_answer(message), WSMsgType.TEXT)
