"""The access log: one line per request, except successful status polls.

Clients poll GET /api/status and GET /api/tasks/{id} many times per task; a line for each
successful poll says nothing the task's own log lines do not, and writing it costs more
than answering the poll from memory. Those lines are written only at --log-level DEBUG;
everything else (runs, errors, proxied ComfyUI requests) at INFO, in aiohttp's format.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

POLL_PREFIXES = ("/api/status", "/api/tasks/")


def is_poll(request: BaseRequest, response: StreamResponse) -> bool:
    """A successful read of a task's state."""
    return (
        response.status < 400
        and request.method in ("GET", "HEAD")
        and request.path.startswith(POLL_PREFIXES)
    )


class AgentAccessLogger(AbstractAccessLogger):
    """aiohttp's access log lines; successful polls only at DEBUG."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._lines = AccessLogger(logger, log_format)
        # The access logger itself never goes below INFO (see agent.logs): ask the agent's.
        self._debug = logging.getLogger("agent")

    @property
    def enabled(self) -> bool:
        """False when not even INFO lines would be written (nothing to format)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write the request's line (polls only when DEBUG is on)."""
        if is_poll(request, response) and not self._debug.isEnabledFor(logging.DEBUG):
            return
        self._lines.log(request, response, time)
