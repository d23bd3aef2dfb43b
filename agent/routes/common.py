"""Helpers shared by the routes: body parsing, task headers, task answers."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.delivery.image_format import ImageFormat
from agent.errors import ApiError, bad_request, task_error_status
from agent.inputs import InputValueError
from agent.results import EncodedFiles, fetch_results, progress_with_results
from agent.services import Services
from agent.task_ids import task_id_from_headers
from agent.workflow import WorkflowError, extract_workflow
from comfyui.client import ComfyUIError
from store.base import InvalidTaskId
from store.records import TaskRecord, TaskStatus

RESULT_MODES = ("base64", "none")

log = logging.getLogger("agent.routes")


def task_headers(task_id: str, status: TaskStatus | str) -> dict[str, str]:
    """Headers every task answer carries."""
    value = status.value if isinstance(status, TaskStatus) else status
    return {"X-Task-Id": task_id, "X-Task-Status": value}


async def read_json_body(request: web.Request, max_body: int) -> Any:
    """The request's JSON body; 413 past max_body (checked before reading), 400 if not JSON."""
    too_large = ApiError(413, "RequestTooLarge", f"body is larger than {max_body} bytes")
    if request.content_length is not None and request.content_length > max_body:
        raise too_large
    # Read to the end, chunk by chunk (one read() returns only what has arrived yet),
    # giving up as soon as the body passes the cap: a huge body is never held whole.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_body:
            raise too_large
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


def parse_json(raw: bytes | str) -> Any:
    """Decode JSON or raise a 400."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise bad_request("body is not valid JSON: nested too deeply") from exc


def workflow_from_body(body: Any) -> dict[str, dict[str, Any]]:
    """The workflow in a body, or a 400 saying what is wrong with it."""
    try:
        return extract_workflow(body)
    except WorkflowError as exc:
        raise bad_request(exc.detail) from exc


@dataclass(frozen=True)
class RunRequest:
    """What a request asks to run: a workflow, and the app and parameters it came from."""

    workflow: dict[str, dict[str, Any]]
    app: str | None = None
    params: dict[str, Any] | None = None


# Reads what a request asks to run from its body: 400 / 404 / 422 before any task exists.
RunReader = Callable[[Services, web.Request], Awaitable[RunRequest]]


async def workflow_run(services: Services, request: web.Request) -> RunRequest:
    """The RunReader of the workflow routes: the body is the workflow."""
    body = await read_json_body(request, services.settings.max_body)
    return RunRequest(checked_workflow(services, body))


def checked_workflow(services: Services, body: Any) -> dict[str, dict[str, Any]]:
    """The workflow in a body with its inline images checked: 400 / 422 before any task."""
    workflow = workflow_from_body(body)
    check_image_inputs(services, workflow)
    return workflow


def check_image_inputs(services: Services, workflow: dict[str, dict[str, Any]]) -> None:
    """422 InputError for image inputs that cannot be used (before any task exists)."""
    try:
        services.preparer.check(workflow)
    except InputValueError as exc:
        error = {
            "type": "input_error",
            "message": str(exc),
            "node_id": exc.node_id,
            "node_type": exc.class_type,
            "details": exc.details(),
        }
        raise ApiError(422, "InputError", error) from exc


def results_mode(request: web.Request, default: str) -> str:
    """`?results=` or the configured default; 400 for unknown values."""
    value = request.query.get("results", default)
    if value not in RESULT_MODES:
        raise bad_request(f"results must be one of {', '.join(RESULT_MODES)}, not {value!r}")
    return value


def invalid_task_id(exc: InvalidTaskId) -> ApiError:
    """400 for a task id that cannot be stored."""
    return bad_request(str(exc), message="InvalidTaskId")


def request_task_id(request: web.Request) -> str:
    """The task id a request names (task-id or an FC header) or a new one; 400 if bad."""
    try:
        return task_id_from_headers(request.headers)
    except InvalidTaskId as exc:
        raise invalid_task_id(exc) from exc


def json_bytes_response(body: bytes, headers: dict[str, str], *, status: int = 200) -> web.Response:
    """JSON already rendered, with the headers web.json_response would send."""
    return web.Response(
        body=body, status=status, content_type="application/json", charset="utf-8", headers=headers
    )


@contextlib.contextmanager
def errors_name_task(task_id: str) -> Iterator[None]:
    """Refusals before a task exists still tell the caller its id (X-Task-Id)."""
    try:
        yield
    except ApiError as exc:
        exc.headers.setdefault("X-Task-Id", task_id)
        raise


async def finished_body(
    services: Services,
    record: TaskRecord,
    mode: str,
    *,
    require_results: bool = True,
    image_format: ImageFormat | None = None,
    started: EncodedFiles | None = None,
) -> tuple[int, dict[str, Any]]:
    """Status and body for a finished task: the progress map, or the error with it.

    With require_results False (watching a task that may have run on another instance,
    whose output files this instance's ComfyUI may not see), files that cannot be read
    are left out instead of failing the answer. started: the run's files being read
    since ComfyUI reported them (the image format is then theirs).
    """
    if record.status is TaskStatus.SUCCEEDED:
        results = None
        if mode == "base64":
            try:
                source = services.output_files or services.client
                results = await fetch_results(
                    source, record, image_format=image_format, started=started
                )
            except ComfyUIError as exc:
                if not require_results:
                    log.info("task %s: results not inlined: %s", record.task_id, exc)
                    return 200, record.progress_map()
                body: dict[str, Any] = {"message": "ResultFetchError", "error": str(exc)}
                return 502, {**body, "task_id": record.task_id, "progress": record.progress_map()}
        return 200, progress_with_results(record, results)
    if record.status is TaskStatus.LOST:
        body = {
            "message": "TaskLost",
            "error": f"instance {record.instance} stopped renewing the task's lease",
            "task_id": record.task_id,
            "progress": record.progress_map(),
        }
        return 502, body
    status, message = task_error_status(record.error)
    error: Any = record.error.model_dump(mode="json") if record.error else None
    if record.error is not None and record.error.type == "prompt_validation":
        # ComfyUI's own answer (error + node_errors), as the Go agent passed it through.
        error = record.error.details
    body = {
        "message": message,
        "error": error,
        "task_id": record.task_id,
        "progress": record.progress_map(),
    }
    return status, body
