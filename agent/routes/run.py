"""POST /api/run: run a workflow and answer when it is done (the Go agent's sync call).

Under Function Compute async invocation (`X-Fc-Invocation-Type: Async`) the same request
is delivered at least once, so it is idempotent per task id: a task that succeeded is
answered from the store without running again, one still running (here or elsewhere) is
waited for, one that failed or was lost is run again (a lost one is taken over through
the claim's fence: its old owner, should it come back, can no longer write and stops its
copy, so no two copies finish); and only failures worth retrying
answer 5xx with `x-fc-status: 404` (FC's failure signal), so FC does not re-run a
workflow that can only fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web

from agent.answer_json import dumps_answer
from agent.delivery.plan import DeliveryPlan
from agent.errors import ApiError, unavailable
from agent.results import EncodedFiles
from agent.routes.common import (
    RunReader,
    RunRequest,
    errors_name_task,
    finished_body,
    json_bytes_response,
    request_task_id,
    results_mode,
    task_headers,
    workflow_run,
)
from agent.routes.delivery_plan import answer_mode, request_plan
from agent.routes.status import load_task
from agent.run_handle import ComfyUITime
from agent.runner import (
    QueueFull,
    RunHandle,
    ShuttingDown,
    StoreUnavailable,
    TaskAlreadyRunning,
)
from agent.services import Services, services
from agent.task_ids import is_async_invocation, names_task
from agent.task_watch import wait_for_end
from store.records import TaskRecord, TaskStatus

log = logging.getLogger("agent.run")

# Task errors that another attempt may not hit: the only ones answered 5xx under async.
RETRYABLE_ERRORS = frozenset(
    {"comfyui_crashed", "comfyui_unavailable", "store_error", "timeout", "shutting_down"}
)
# Status for a task that ended for good under async invocation: not 5xx and without the
# failure header, so FC does not re-run a workflow that fails the same way every time.
ASYNC_FINAL_FAILURE_STATUS = 200
# Function Compute counts an invocation as failed (and retries async ones) when the
# response carries this header with this value; without it, any answer is a success.
FC_STATUS_HEADER = "x-fc-status"
FC_FAILED = "404"
# How long an async invocation's answer waits for the task's webhook to be delivered.
WEBHOOK_WAIT = 300.0


async def start_run(
    svc: Services,
    task_id: str,
    run: RunRequest,
    delivery: object = None,
    *,
    durable_start: bool = True,
    fresh_id: bool = False,
) -> RunHandle:
    """Start a run, turning refusals into API errors (409 when it runs anywhere already)."""
    try:
        return await svc.runner.start(
            task_id,
            run.workflow,
            app=run.app,
            params=run.params,
            delivery=delivery,
            durable_start=durable_start,
            fresh_id=fresh_id,
        )
    except TaskAlreadyRunning as exc:
        raise ApiError(
            409, "TaskAlreadyRunning", str(exc), headers=task_headers(task_id, "running")
        ) from exc
    except QueueFull as exc:
        raise ApiError(429, "QueueFull", str(exc), headers={"Retry-After": "5"}) from exc
    except ShuttingDown as exc:
        raise unavailable(str(exc), message="ShuttingDown") from exc
    except StoreUnavailable as exc:
        raise unavailable(f"task store unavailable: {exc}", message="StoreError") from exc


async def run_to_end(
    svc: Services, task_id: str, run: RunRequest, delivery: object = None
) -> TaskRecord:
    """Start the run and wait for it; the run goes on if the caller leaves."""
    handle = await start_run(svc, task_id, run, delivery)
    return await outcome_of(svc, handle)


async def outcome_of(svc: Services, handle: RunHandle) -> TaskRecord:
    """The final record of a run started here: its own, or, when another run took the task
    over meanwhile (this one was then stopped), that run's, followed through the store."""
    await handle.done.wait()  # the run goes on if the caller leaves: it is a task of its own
    if not handle.superseded:
        return handle.snapshot()
    lease = svc.runner.options.lease
    final = await wait_for_end(
        svc.runner,
        svc.store,
        handle.task_id,
        lease_check=lease / 3,
        lost_grace=svc.settings.lost_grace,
    )
    return final if final is not None else handle.snapshot()


async def run_and_answer(
    svc: Services,
    task_id: str,
    run: RunRequest,
    plan: DeliveryPlan,
    mode: str,
    *,
    fresh_id: bool = False,
    answered: asyncio.Event | None = None,
    comfyui: ComfyUITime | None = None,
) -> tuple[TaskRecord, int, dict[str, Any]]:
    """Run to the end and build the answer, its files read while ComfyUI finishes the run.

    The answer is built only once the final record is stored: a caller never holds a
    result the store does not have yet. fresh_id: the task id was made up for this request.
    answered: set once the answer is sent (the run's claim is released after it).
    comfyui: filled with when ComfyUI had the run.
    """
    handle = await start_run(svc, task_id, run, plan, durable_start=False, fresh_id=fresh_id)
    handle.answered = answered
    if comfyui is not None:
        handle.comfyui = comfyui  # before the run task first runs: no await since start
    files = EncodedFiles(svc.output_files or svc.client, image_format=plan.image_format)
    if mode == "base64":
        handle.output_listeners.append(files.start)  # read while ComfyUI finishes the run
    try:
        return await _answer_when_done(svc, handle, plan, mode, files)
    finally:
        files.close()


async def _answer_when_done(
    svc: Services, handle: RunHandle, plan: DeliveryPlan, mode: str, files: EncodedFiles
) -> tuple[TaskRecord, int, dict[str, Any]]:
    # The answer is built once the final record is stored, not beside its write: the
    # writer thread would wait for the GIL between its system calls while this runs.
    await handle.done.wait()
    if handle.superseded:
        # Another run took the task over: answer with its outcome, as run_to_end does.
        record = await outcome_of(svc, handle)
        here = record.instance == svc.settings.instance
        status, body = await finished_body(
            svc, record, mode, require_results=here, image_format=plan.image_format
        )
        return record, status, body
    final = handle.snapshot()
    status, body = await finished_body(
        svc, final, mode, image_format=plan.image_format, started=files
    )
    return final, status, body


async def run_idempotently(
    svc: Services, task_id: str, run: RunRequest, delivery: object = None
) -> TaskRecord:
    """The task's outcome, running it only when no earlier delivery succeeded or runs."""
    lease = svc.runner.options.lease
    deadline = time.monotonic() + lease + 10
    while True:
        existing = await load_task(svc, task_id)
        if existing is not None:
            status = existing.effective_status(time.time())
            if status is TaskStatus.SUCCEEDED:
                log.info("task %s: delivered again; answering the stored result", task_id)
                return existing
            if status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                log.info("task %s: delivered again while it runs; waiting for it", task_id)
                final = await wait_for_end(svc.runner, svc.store, task_id, lease_check=lease / 3)
                if final is not None and final.status is not TaskStatus.LOST:
                    return final
            # Failed, interrupted or lost: run it again. A lost task is taken over through
            # the fence (a new claim token), so its old owner cannot write any more.
        try:
            handle = await svc.runner.start(
                task_id, run.workflow, app=run.app, params=run.params, delivery=delivery
            )
        except TaskAlreadyRunning:
            # Claimed by another delivery in between, or a dead owner's claim not yet
            # expired: look again shortly.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        await asyncio.shield(handle.done.wait())
        if handle.superseded:
            continue  # yet another delivery took it over: wait for that one
        return handle.snapshot()


async def run_sync(request: web.Request) -> web.Response:
    """Run the workflow in the body; answer the progress map with results when it ends."""
    return await answer_run(request, workflow_run)


async def answer_run(request: web.Request, read: RunReader) -> web.Response:
    """Run what the request asks for (read from its body) and answer when it ends."""
    received = time.perf_counter()
    svc = services(request)
    task_id = request_task_id(request)
    async_invocation = is_async_invocation(request.headers)
    with errors_name_task(task_id):
        mode = results_mode(request, svc.settings.results)
        run = await read(svc, request)
        plan = await request_plan(svc, request)
        mode = answer_mode(request, plan, mode)
    if async_invocation:
        try:
            record = await run_idempotently(svc, task_id, run, plan)
        except TaskAlreadyRunning as exc:
            raise _retry_later(unavailable(str(exc), message="TaskAlreadyRunning")) from exc
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                _retry_later(exc)
            raise
        # Nobody reads an async answer's body inline: files stay on the output storage.
        mode = "none"
        if svc.delivery is not None:
            # FC may freeze the instance once it answers: send the webhook first.
            await svc.delivery.wait_delivered(task_id, WEBHOOK_WAIT)
        # A run taken over by another instance ended there: its files may not be readable.
        here = record.instance == svc.settings.instance
        status, body = await finished_body(
            svc, record, mode, require_results=here, image_format=plan.image_format
        )
        return _response(task_id, record, status, body, async_invocation=True)
    answered = asyncio.Event()
    comfyui = ComfyUITime()
    try:
        with errors_name_task(task_id):
            record, status, body = await run_and_answer(
                svc,
                task_id,
                run,
                plan,
                mode,
                fresh_id=not names_task(request.headers),
                answered=answered,
                comfyui=comfyui,
            )
        response = _response(task_id, record, status, body, async_invocation=False)
        # Sent here, not after returning, so that the claim is released only then.
        with contextlib.suppress(ConnectionError):  # the caller left: aiohttp sees to it
            await response.prepare(request)
            await response.write_eof()
        svc.runner.metrics.sync_answered(received, comfyui, time.perf_counter())
        return response
    finally:
        answered.set()


def _response(
    task_id: str, record: TaskRecord, status: int, body: Any, *, async_invocation: bool
) -> web.Response:
    headers = task_headers(task_id, record.status)
    if async_invocation:
        status = async_status(record, status)
        if status >= 500:
            # FC judges an async invocation by this header, not by the HTTP status.
            headers[FC_STATUS_HEADER] = FC_FAILED
    if status == 503:
        headers["Retry-After"] = "5"
    return json_bytes_response(dumps_answer(body), headers, status=status)


def _retry_later(exc: ApiError) -> ApiError:
    """Mark a refusal (busy, stopping, store down) as failed for FC, so it delivers again."""
    exc.headers[FC_STATUS_HEADER] = FC_FAILED
    return exc


def async_status(record: TaskRecord, status: int) -> int:
    """Under async invocation, 5xx only for failures another attempt may not hit."""
    if status < 500 or record.status is TaskStatus.LOST:
        return status
    if record.error is not None and record.error.type in RETRYABLE_ERRORS:
        return status
    return ASYNC_FINAL_FAILURE_STATUS
