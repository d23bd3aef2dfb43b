"""API errors: every failure answers JSON `{"message": <ErrorType>, "error": <detail>}`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from store.records import TaskError

# Task error types (TaskError.type) -> (HTTP status, the Go agent style ErrorType).
TASK_ERROR_STATUS: dict[str, tuple[int, str]] = {
    "prompt_validation": (400, "CallComfyUIPromptError"),
    "input_error": (422, "InputError"),
    # App parameters refused before a task exists (agent/apps/params.py).
    "param_error": (422, "ParamError"),
    "execution_error": (500, "ExecutionError"),
    "interrupted": (500, "ExecutionInterrupted"),
    "comfyui_crashed": (502, "ComfyUICrashed"),
    "comfyui_unavailable": (503, "ComfyUIUnavailable"),
    "shutting_down": (503, "ShuttingDown"),
    "store_error": (503, "StoreError"),
    "timeout": (504, "RunTimeout"),
    "output_upload_failed": (502, "OutputUploadFailed"),
}


def task_error_status(error: TaskError | None) -> tuple[int, str]:
    """HTTP status and ErrorType for a task that ended with error."""
    if error is None:
        return 500, "ExecutionError"
    return TASK_ERROR_STATUS.get(error.type, (500, "ExecutionError"))


class ApiError(Exception):
    """An error answered to the client as JSON with a status code."""

    def __init__(
        self,
        status: int,
        message: str,
        error: Any,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {message}: {error}")
        self.status = status
        self.message = message
        self.error = error
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"message": self.message, "error": self.error}

    def response(self, extra_headers: dict[str, str] | None = None) -> web.Response:
        """The aiohttp response."""
        headers = {**self.headers, **(extra_headers or {})}
        return web.json_response(self.body(), status=self.status, headers=headers)


def bad_request(error: Any, message: str = "RequestParamsError") -> ApiError:
    """400: the request itself is wrong."""
    return ApiError(400, message, error)


def not_found(error: Any, message: str = "TaskNotFound") -> ApiError:
    """404: no such task."""
    return ApiError(404, message, error)


def unavailable(error: Any, message: str = "ComfyUIUnavailable", retry_after: int = 5) -> ApiError:
    """503 with Retry-After: try again (here or on another instance)."""
    return ApiError(503, message, error, headers={"Retry-After": str(retry_after)})
