"""The three displays of a run (agent/client/display.py, live_view.py), fed snapshots."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.client.display import JsonDisplay, Outcome, PlainDisplay, SavedFile
from agent.client.errors import ExitCode
from agent.client.live_view import LiveDisplay
from agent.client.progress_view import ProgressSnapshot, snapshot

TITLES = {"1": "Load", "2": "KSampler", "3": "Save"}


def node(value: int, max: int, start: int, cached: bool = False) -> dict[str, Any]:
    return {"value": value, "max": max, "start": start, "last_updated": start, "cached": cached}


def sampler_at(step: int, steps: int = 40) -> ProgressSnapshot:
    progress = {"1": node(1, 1, 1, cached=True), "2": node(step, steps, 2), "3": node(0, 0, 0)}
    return snapshot(progress, TITLES)


DONE = snapshot({"1": node(1, 1, 1, True), "2": node(40, 40, 2), "3": node(1, 1, 3)}, TITLES)
SAVED = [SavedFile("3", "a_00001_.png [output]", Path("outputs/a_00001_.png"))]


def test_plain_lines_go_to_stderr_and_paths_to_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    display = PlainDisplay(out, err)
    display.started("t1", "http://agent")
    for step in range(41):
        display.progress(sampler_at(step))
    display.finished(Outcome("t1", ExitCode.OK, 2.04, DONE, SAVED))
    lines = err.getvalue().splitlines()
    assert lines[0] == "task t1 on http://agent"
    assert lines[1] == "[ 33%] Load #1 cached"  # once, though every snapshot lists it
    sampler = [line for line in lines if "KSampler" in line]
    assert sampler[0] == "[ 33%] KSampler #2 0/40"
    assert len(sampler) == 10  # every tenth of the steps, not 40 lines
    assert lines[-1] == "succeeded in 2.0 s (3/3 nodes, 1 cached)"
    assert out.getvalue() == "outputs/a_00001_.png\n"


def test_plain_failure_and_listed_files() -> None:
    out, err = io.StringIO(), io.StringIO()
    display = PlainDisplay(out, err)
    failure = Outcome("t2", ExitCode.RUN_FAILED, 1.0, sampler_at(3), error="boom", status="failed")
    display.finished(failure)
    assert err.getvalue() == "failed after 1.0 s: boom\n" and out.getvalue() == ""
    listed = [SavedFile("3", "b.png [temp]", None, "not saved: gone")]
    display.finished(Outcome("t3", ExitCode.UNAVAILABLE, 1.0, DONE, listed))
    assert out.getvalue() == "b.png [temp]\n"
    assert "b.png [temp]: not saved: gone" in err.getvalue()


def test_json_events() -> None:
    out = io.StringIO()
    display = JsonDisplay(out)
    display.started("t4", "http://agent")
    display.progress(sampler_at(10))
    display.note("hello")
    display.finished(Outcome("t4", ExitCode.OK, 1.23456, DONE, SAVED))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [event["event"] for event in events] == ["started", "progress", "note", "succeeded"]
    assert all(event["task_id"] == "t4" for event in events)
    assert events[1] == {
        "event": "progress",
        "task_id": "t4",
        "percent": 41.7,
        "nodes_done": 1,
        "nodes_total": 3,
        "cached": ["1"],
        "node": {"id": "2", "title": "KSampler", "value": 10, "max": 40},
    }
    assert events[3]["files"] == [
        {"node": "3", "file": "a_00001_.png [output]", "path": "outputs/a_00001_.png"}
    ]
    assert events[3]["elapsed"] == 1.235 and events[3]["exit_code"] == 0


def test_live_view_draws_both_bars_cached_nodes_and_the_summary() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    display = LiveDisplay(console)
    display.started("t5", "http://agent")
    display.progress(sampler_at(12))
    console.print(display)  # the frame as it stands
    frame = screen.getvalue()
    assert "task t5 on http://agent" in frame
    assert "Overall" in frame and " 43%  1/3 nodes, 1 cached" in frame
    assert "KSampler #2" in frame and "12/40 steps" in frame
    assert "cached: Load #1" in frame
    display.finished(Outcome("t5", ExitCode.OK, 3.0, DONE, SAVED))
    summary = screen.getvalue()
    assert "100%  3/3 nodes, 1 cached" in summary
    assert "40/40 steps" in summary  # the last node's bar completes
    assert "✓ succeeded in 3.0 s · 3/3 nodes, 1 cached" in summary
    assert "saved outputs/a_00001_.png" in summary
