"""Exit codes of the client and the error that carries one to the command's end."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What `comfyui-agent run|watch|apps` exits with."""

    OK = 0
    # The run failed or was interrupted (a node raised, ComfyUI crashed, timeout, lost).
    RUN_FAILED = 1
    # Bad usage or bad input: flags, files, --set values, 4xx answers of the agent.
    BAD_INPUT = 2
    # The agent is unreachable, the connection broke, or it answered 5xx.
    UNAVAILABLE = 3
    # Ctrl-C and the task was left running on the agent (the shell's convention).
    LEFT_RUNNING = 130


class ClientError(Exception):
    """A failure to report in words and exit with `code`."""

    def __init__(self, code: ExitCode, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status  # the agent's HTTP status, when it answered
