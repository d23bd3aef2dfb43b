"""Log lines: JSON lines carry the task and prompt ids of the events they are about."""

from __future__ import annotations

import json
import logging

from agent.logs import JsonFormatter
from agent.runner import task_log
from store.records import TaskRecord


def test_json_lines_carry_task_and_prompt_ids() -> None:
    record = TaskRecord(task_id="t-1", prompt_id="p-1")
    entry = logging.LogRecord(
        "agent.runner", logging.INFO, __file__, 1, "task %s: ok", ("t-1",), None
    )
    for name, value in task_log(record).items():
        setattr(entry, name, value)
    line = json.loads(JsonFormatter().format(entry))
    assert line["message"] == "task t-1: ok"
    assert (line["task_id"], line["prompt_id"]) == ("t-1", "p-1")
    assert line["level"] == "INFO" and line["logger"] == "agent.runner"
    assert line["time"].endswith("Z")


def test_lines_without_task_context_have_no_such_fields() -> None:
    entry = logging.LogRecord("agent", logging.WARNING, __file__, 1, "plain", (), None)
    line = json.loads(JsonFormatter().format(entry))
    assert "task_id" not in line and "prompt_id" not in line


def test_exceptions_are_one_line_of_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        entry = logging.LogRecord("agent", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(entry)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]
