"""Agent errors in words and the exit code each gets: agent/client/words.py and the
classification in agent/client/follow.py."""

from __future__ import annotations

from typing import Any

import pytest

from agent.client.errors import ExitCode
from agent.client.follow import error_exit_code
from agent.client.words import describe_error


def test_execution_error_names_node_type_and_exception() -> None:
    body = {
        "message": "ExecutionError",
        "error": {
            "type": "execution_error",
            "message": "boom",
            "node_id": "2",
            "node_type": "FailAfter",
            "details": {"exception_type": "RuntimeError", "traceback": ["..."]},
        },
    }
    assert describe_error(body) == "ExecutionError: node 2 (FailAfter): RuntimeError: boom"


def test_validation_errors_list_every_node_error() -> None:
    body = {
        "message": "CallComfyUIPromptError",
        "error": {
            "error": {"type": "prompt_outputs_failed_validation", "message": "failed validation"},
            "node_errors": {
                "1": {
                    "class_type": "EmptyImage",
                    "errors": [
                        {"type": "x", "message": "Value too small", "details": "width"},
                        {"type": "invalid_input_type", "message": "", "details": ""},
                    ],
                },
                "2": "junk",
            },
        },
    }
    assert describe_error(body) == (
        "CallComfyUIPromptError: failed validation\n"
        "node 1 (EmptyImage): Value too small: width\n"
        "node 1 (EmptyImage): invalid_input_type"
    )


def test_input_errors_are_not_named_twice() -> None:
    body = {
        "message": "InputError",
        "error": {
            "type": "input_error",
            "message": "node 1 (LoadImage) input 'image': not an image",
            "node_id": "1",
            "node_type": "LoadImage",
        },
    }
    assert describe_error(body) == "InputError: node 1 (LoadImage) input 'image': not an image"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"message": "TaskNotFound", "error": "task x gone"}, "TaskNotFound: task x gone"),
        ({"message": "ParamError", "error": {"param": "6.txt"}}, 'ParamError: {"param": "6.txt"}'),
        ({"error": "plain"}, "plain"),
        ("404: Not Found", "404: Not Found"),
        (None, "None"),
    ],
)
def test_other_errors(body: Any, text: str) -> None:
    assert describe_error(body) == text


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (500, "ExecutionError", ExitCode.RUN_FAILED),
        (500, "ExecutionInterrupted", ExitCode.RUN_FAILED),
        (502, "ComfyUICrashed", ExitCode.RUN_FAILED),
        (504, "RunTimeout", ExitCode.RUN_FAILED),
        (502, "TaskLost", ExitCode.RUN_FAILED),
        (502, "ResultFetchError", ExitCode.UNAVAILABLE),
        (503, "ComfyUIUnavailable", ExitCode.UNAVAILABLE),
        (None, "ComfyUIUnavailable", ExitCode.UNAVAILABLE),
        (None, "ShuttingDown", ExitCode.UNAVAILABLE),
        (None, "QueueFull", ExitCode.UNAVAILABLE),
        (429, "Whatever", ExitCode.UNAVAILABLE),
        (400, "CallComfyUIPromptError", ExitCode.BAD_INPUT),
        (422, "InputError", ExitCode.BAD_INPUT),
        (None, "InputError", ExitCode.BAD_INPUT),
        (None, "ParamError", ExitCode.BAD_INPUT),
        (None, "InvalidTaskId", ExitCode.BAD_INPUT),
        (None, "TaskNotFound", ExitCode.BAD_INPUT),
    ],
)
def test_error_exit_codes(status: Any, message: str, code: ExitCode) -> None:
    assert error_exit_code(status, message) is code
