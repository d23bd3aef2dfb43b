"""The access log: every request at INFO except successful task polls (DEBUG only)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from agent.access_log import AgentAccessLogger

FORMAT = '%a %t "%r" %s %b'


@pytest.mark.parametrize(
    ("method", "path", "status", "logged"),
    [
        ("GET", "/api/status?id=t1", 200, False),
        ("GET", "/api/tasks/t1", 200, False),
        ("GET", "/api/status?id=t1", 404, True),
        ("GET", "/api/tasks/t1", 503, True),
        ("POST", "/api/run", 200, True),
        ("DELETE", "/api/tasks/t1", 202, True),
        ("GET", "/view?filename=a.png", 200, True),
        ("GET", "/healthz", 200, True),
    ],
)
def test_polls_are_left_out_at_info(
    caplog: pytest.LogCaptureFixture, method: str, path: str, status: int, logged: bool
) -> None:
    logger = logging.getLogger("test.access")
    access = AgentAccessLogger(logger, FORMAT)
    request = make_mocked_request(method, path)
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=status), 0.001)
    assert bool(caplog.records) is logged
    if logged:
        assert f'"{method} {path} HTTP/1.1" {status}' in caplog.records[0].getMessage()


def test_polls_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    access = AgentAccessLogger(logger, FORMAT)
    with (
        caplog.at_level(logging.DEBUG, logger="agent"),
        caplog.at_level(logging.INFO, "test.access"),
    ):
        access.log(make_mocked_request("GET", "/api/status?id=t1"), web.Response(), 0.001)
    assert len(caplog.records) == 1
