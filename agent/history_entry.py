"""Pure reading of a ComfyUI `/history/{prompt_id}` entry: what progress needs of it.

History fills the gaps of a websocket that was down during a run (see
agent.progress.ProgressTracker.apply_history). Anything not shaped as ComfyUI writes it is
skipped, never an error: history is a fallback, read from whatever ComfyUI kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from comfyui.events import (
    ComfyEvent,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    parse_event,
)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A history entry's cached nodes, outputs, run events and success, as recorded."""

    cached: Sequence[str]
    outputs: dict[str, Mapping[str, Any]]
    # execution_start too: a run seen only through history did start.
    events: Sequence[ComfyEvent]
    succeeded: bool


def read_history_entry(entry: Mapping[str, Any]) -> HistoryEntry:
    """The parts of a `/history/{prompt_id}` entry that tell how far a run got."""
    status = entry.get("status")
    raw_messages = status.get("messages", []) if isinstance(status, Mapping) else []
    messages = [
        (item[0], item[1])
        for item in (raw_messages if isinstance(raw_messages, list) else [])
        if isinstance(item, list) and len(item) == 2 and isinstance(item[1], Mapping)
    ]
    cached: list[str] = []
    for kind, data in messages:
        nodes = data.get("nodes")
        if kind == "execution_cached" and isinstance(nodes, list):
            cached += [str(node) for node in nodes]
    raw_outputs = entry.get("outputs")
    outputs = {
        str(node_id): output
        for node_id, output in (raw_outputs.items() if isinstance(raw_outputs, Mapping) else ())
        if isinstance(output, Mapping)
    }
    events = [parse_event({"type": kind, "data": dict(data)}) for kind, data in messages]
    run_events = [
        event
        for event in events
        if isinstance(
            event, ExecutionStart | ExecutionError | ExecutionInterrupted | ExecutionSuccess
        )
    ]
    succeeded = (
        isinstance(status, Mapping)
        and status.get("status_str") == "success"
        and bool(status.get("completed"))
    )
    return HistoryEntry(cached, outputs, run_events, succeeded)


def needed_nodes(entry: Mapping[str, Any]) -> set[str]:
    """Nodes a history entry's prompt needed: its output nodes and all their inputs' nodes.

    The entry's `prompt` is `[number, prompt_id, prompt, extra_data, outputs]`.
    """
    prompt_entry = entry.get("prompt")
    if not (isinstance(prompt_entry, list) and len(prompt_entry) >= 5):
        return set()
    prompt, outputs = prompt_entry[2], prompt_entry[4]
    if not isinstance(prompt, Mapping) or not isinstance(outputs, list):
        return set()
    needed: set[str] = set()
    pending = [str(node_id) for node_id in outputs]
    while pending:
        node_id = pending.pop()
        if node_id in needed or not isinstance(prompt.get(node_id), Mapping):
            continue
        needed.add(node_id)
        inputs = prompt[node_id].get("inputs")
        if isinstance(inputs, Mapping):
            for value in inputs.values():
                # A link is [upstream node id, output index].
                if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                    pending.append(str(value[0]))
    return needed
