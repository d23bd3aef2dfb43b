"""NodeTimer: per-node execution time from recorded ComfyUI 0.3.64 events and edge cases."""

from __future__ import annotations

from typing import Any

import pytest

from agent.node_timing import UNKNOWN_NODE_TYPE, NodeTimer
from comfyui.events import (
    ComfyEvent,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionSuccess,
    parse_event,
)
from tests.trace_tools import has_trace, load_prompt, load_ws_trace

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {}},
    "2": {"class_type": "SlowCounter", "inputs": {}},
    "9": {"class_type": "SaveImage", "inputs": {}},
}


def replay(timer: NodeTimer, events: list[tuple[float, ComfyEvent]]) -> list[tuple[str, float]]:
    ended: list[tuple[str, float]] = []
    for now, event in events:
        ended += timer.apply(event, now)
    return ended


@pytest.mark.skipif(not has_trace("progress"), reason="ComfyUI traces not found")
def test_recorded_progress_run_times_every_executed_node() -> None:
    frames = [r for r in load_ws_trace("progress") if "msg" in r]
    events = [(float(r["t"]), parse_event(r["msg"])) for r in frames]
    prompt_id = next(e.event_prompt_id for _, e in events if e.event_prompt_id)
    assert prompt_id is not None
    ended = replay(NodeTimer(load_prompt("progress"), prompt_id), events)
    assert [node_type for node_type, _ in ended] == ["EmptyImage", "SlowCounter", "SaveImage"]
    seconds = dict(ended)
    # SlowCounter ran 10 steps of 0.2 s in the recording; the others took a millisecond.
    assert 1.9 < seconds["SlowCounter"] < 2.1
    assert seconds["EmptyImage"] < 0.01


def test_cached_nodes_are_not_timed_and_the_last_node_ends_with_the_prompt() -> None:
    timer = NodeTimer(WORKFLOW, "p")
    events: list[tuple[float, ComfyEvent]] = [
        (0.0, ExecutionCached(prompt_id="p", nodes=["1", "2"])),
        (0.1, Executing(prompt_id="p", node="9", display_node="9")),
        (0.4, ExecutionSuccess(prompt_id="p")),
        (0.5, Executing(prompt_id="p", node=None)),
    ]
    ended = replay(timer, events)
    assert ended == [("SaveImage", pytest.approx(0.3))]


@pytest.mark.parametrize(
    "stop",
    [
        ExecutionError(prompt_id="p", node_id="2", node_type="SlowCounter"),
        ExecutionInterrupted(prompt_id="p", node_id="2", node_type="SlowCounter"),
    ],
)
def test_a_node_stopped_by_failure_or_interrupt_is_not_timed(stop: ComfyEvent) -> None:
    timer = NodeTimer(WORKFLOW, "p")
    events: list[tuple[float, ComfyEvent]] = [
        (0.0, Executing(prompt_id="p", node="1")),
        (1.0, Executing(prompt_id="p", node="2")),
        (3.0, stop),
        (3.1, Executing(prompt_id="p", node=None)),
    ]
    assert replay(timer, events) == [("EmptyImage", 1.0)]


def test_other_prompts_events_and_unknown_nodes() -> None:
    timer = NodeTimer(WORKFLOW, "p")
    assert timer.apply(Executing(prompt_id="other", node="1"), 0.0) == []
    assert timer.apply(Executing(prompt_id="p", node="5.0.1"), 1.0) == []
    # An id ComfyUI made up (expanded group node) without a display node of the workflow.
    assert timer.apply(Executing(prompt_id="p", node="1"), 2.5) == [(UNKNOWN_NODE_TYPE, 1.5)]
    # Its display node names the workflow node it stands for.
    assert timer.apply(Executing(prompt_id="p", node="7.1", display_node="2"), 3.0) == [
        ("EmptyImage", 0.5)
    ]
    assert timer.apply(ExecutionSuccess(prompt_id="p"), 2.0) == [("SlowCounter", 0.0)]


def test_node_without_class_type_is_unknown() -> None:
    workflow: dict[str, Any] = {"1": {"inputs": {}}}
    assert NodeTimer(workflow, "p").node_type("1") == UNKNOWN_NODE_TYPE
