"""Pure translation of ComfyUI events into the Go agent's per-node progress map.

No I/O and no clock: the caller passes `now`, so every rule is tested exhaustively.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from agent.history_entry import needed_nodes, read_history_entry
from comfyui.events import (
    ComfyEvent,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
    ProgressState,
)
from store.records import FILE_OUTPUT_KEYS, NodeProgress, OutputFile, TaskError

# The Go agent recorded only SaveImage's files; every output node's are recorded here.


class Outcome(StrEnum):
    """How a prompt ended, as far as the events tell."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ProgressTracker:
    """Folds one prompt's events into per-node progress, outputs and an outcome."""

    def __init__(self, node_ids: Iterable[str], prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, NodeProgress] = {node_id: NodeProgress() for node_id in node_ids}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.outcome: Outcome | None = None
        self.error: TaskError | None = None
        self.started = False
        # True once ComfyUI said the prompt is over (executing null), history is written.
        self.ended = False
        self._current: str | None = None

    @property
    def finished(self) -> bool:
        """True once the outcome is known."""
        return self.outcome is not None

    def apply(self, event: ComfyEvent, now: float) -> bool:
        """Apply one event; return True exactly when something visible changed (nodes,
        outputs, outcome/error, started, ended), so callers save only real changes."""
        if event.event_prompt_id != self.prompt_id:
            return False
        if self.outcome is not None and not (isinstance(event, Executing) and event.node is None):
            # The prompt is over: a late or re-delivered event must not reopen it (a second
            # `executing` would mark the interrupted node done, a `progress` rewind it).
            return False
        ts = int(now)
        if isinstance(event, ExecutionStart):
            changed = not self.started
            self.started = True
            return changed
        if isinstance(event, ExecutionCached):
            changed = not self.started
            self.started = True
            return self._apply_cached(event.nodes, ts) or changed
        if isinstance(event, Executing):
            return self._apply_executing(event.node, ts)
        if isinstance(event, Progress):
            return self._apply_progress(event.node, event.value, event.max, ts)
        if isinstance(event, ProgressState):
            return self._apply_progress_state(event, ts)
        if isinstance(event, Executed):
            return self._apply_executed(event.node, event.output or {}, ts)
        if isinstance(event, ExecutionSuccess):
            return self._finish(Outcome.SUCCEEDED, None, ts)
        if isinstance(event, ExecutionError):
            error = TaskError(
                type="execution_error",
                message=event.exception_message.strip() or "node raised an exception",
                node_id=event.node_id,
                node_type=event.node_type,
                details={
                    "exception_type": event.exception_type,
                    "traceback": event.traceback,
                    "executed": event.executed,
                },
            )
            return self._finish(Outcome.FAILED, error, ts)
        if isinstance(event, ExecutionInterrupted):
            error = TaskError(
                type="interrupted",
                message="execution was interrupted",
                node_id=event.node_id,
                node_type=event.node_type,
                details={"executed": event.executed},
            )
            return self._finish(Outcome.INTERRUPTED, error, ts)
        return False

    def apply_history(self, entry: Mapping[str, Any], now: float) -> bool:
        """Bring the state up to date from a `/history/{prompt_id}` entry (websocket gaps)."""
        ts = int(now)
        history = read_history_entry(entry)
        changed = self._apply_cached(history.cached, ts)
        for node_id, output in history.outputs.items():
            if node_id not in self.outputs:
                changed |= self._apply_executed(node_id, output, ts)
        for event in history.events:
            changed |= self.apply(event, now)
        if self.outcome is None and history.succeeded:
            changed |= self._finish(Outcome.SUCCEEDED, None, ts)
        if self.outcome is Outcome.SUCCEEDED:
            # Nodes that ran while the websocket was down sent nothing we saw; but a
            # successful prompt ran (or took from cache) everything its outputs need.
            for node_id in needed_nodes(entry):
                node = self.nodes.get(node_id)
                if node is not None and not node.done:
                    changed |= _mark_done(node, ts)
        if self.outcome is not None and not self.ended:
            self.ended = True
            changed = True
        return changed

    # -- rules -------------------------------------------------------------------------

    def _node(self, node_id: str) -> NodeProgress:
        """The entry for node_id; ids ComfyUI made by expanding a node count for that node."""
        entry = self.nodes.get(node_id)
        if entry is None:
            parent = node_id.split(".", 1)[0]
            entry = self.nodes.get(parent)
            if entry is None:
                # Unknown to the workflow: keep it, like the Go agent did.
                entry = self.nodes[node_id] = NodeProgress()
        return entry

    def _apply_cached(self, node_ids: Iterable[str], ts: int) -> bool:
        changed = False
        for node_id in node_ids:
            node = self._node(node_id)
            if not node.cached or not node.done:
                node.cached = True
                node.max = max(node.max, 1)
                node.value = node.max
                node.last_updated = ts
                changed = True
        return changed

    def _apply_executing(self, node_id: str | None, ts: int) -> bool:
        # The same node announced again (re-delivery) is still running, not done.
        changed = self._complete_current(ts) if node_id != self._current else False
        if node_id is None:
            # ComfyUI sends this after the history entry was written: the prompt is over.
            changed |= not self.ended
            self.ended = True
            self._current = None
            if self.outcome is None:
                changed |= self._finish(Outcome.SUCCEEDED, None, ts)
            return changed
        changed |= not self.started
        self.started = True
        self._current = node_id
        return self._start(self._node(node_id), ts) or changed

    @staticmethod
    def _start(node: NodeProgress, ts: int) -> bool:
        # Keeps the first start: progress_state announces a node just before `executing`
        # and is the only start signal of a prompt posted without client_id.
        if node.start and node.max >= 1:
            return False
        node.start = node.start or ts
        node.max = max(node.max, 1)
        node.last_updated = ts
        return True

    def _apply_progress(self, node_id: str | None, value: float, maximum: float, ts: int) -> bool:
        if not (math.isfinite(value) and math.isfinite(maximum)):
            return False  # int() of inf/nan raises; such a message carries no progress
        if node_id is None:
            node_id = self._current
            if node_id is None:
                return False
        node = self._node(node_id)
        # Clamped like ComfyUI's ProgressBar does, so the map never shows value > max.
        new_max = max(int(maximum), 1)
        new_value = min(max(int(value), 0), new_max)
        if node.value == new_value and node.max == new_max:
            return False
        if node.start == 0:
            node.start = ts
        node.value, node.max = new_value, new_max
        node.last_updated = ts
        return True

    def _apply_progress_state(self, event: ProgressState, ts: int) -> bool:
        changed = False
        for key, state in event.nodes.items():
            node_id = state.display_node_id or state.node_id or key
            if state.state == "finished":
                node = self._node(node_id)
                if not node.done:
                    if math.isfinite(state.max):
                        node.max = max(node.max, int(state.max))
                    changed |= _mark_done(node, ts)
            elif state.state == "running":
                changed |= self._start(self._node(node_id), ts)
                if state.max > 1:
                    changed |= self._apply_progress(node_id, state.value, state.max, ts)
        return changed

    def _apply_executed(self, node_id: str, output: Mapping[str, Any], ts: int) -> bool:
        # Returns True only for a real change, so a re-delivered `executed` reports none.
        node = self._node(node_id)
        changed = _mark_done(node, ts)
        if node_id not in self.outputs:
            self.outputs[node_id] = {}
            changed = True
        stored = self.outputs[node_id]
        for key, value in output.items():
            if isinstance(value, list):
                if key not in stored:
                    stored[key] = []
                    changed = True
                current = stored[key]
                if isinstance(current, list):
                    for item in value:
                        if item not in current:
                            current.append(item)
                            changed = True
            elif key not in stored or stored[key] != value:
                stored[key] = value
                changed = True
        files = list(node.images or [])
        for key in FILE_OUTPUT_KEYS:
            entries = output.get(key)
            if not isinstance(entries, list):
                continue
            for item in entries:
                if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                    file = OutputFile.model_validate(item)
                    if file not in files:
                        files.append(file)
        if files and files != node.images:
            node.images = files
            node.last_updated = ts
            changed = True
        return changed

    def _complete_current(self, ts: int) -> bool:
        # ComfyUI runs one node at a time, so the previous node is done once the next starts.
        if self._current is None:
            return False
        node = self._node(self._current)
        self._current = None
        return _mark_done(node, ts)

    def _finish(self, outcome: Outcome, error: TaskError | None, ts: int) -> bool:
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.error = error
        if outcome is Outcome.SUCCEEDED:
            self._complete_current(ts)
            for node in self.nodes.values():
                if node.start or node.max:
                    _mark_done(node, ts)
        else:
            self._current = None
            details = error.details if error is not None else None
            executed = details.get("executed") if isinstance(details, dict) else None
            # ComfyUI lists the nodes that finished before the failure: done, even when
            # their events were missed (a websocket gap filled from history).
            for node_id in executed if isinstance(executed, list) else []:
                finished = self.nodes.get(str(node_id))
                if finished is not None:
                    _mark_done(finished, ts)
            if error is not None and error.node_id is not None:
                self._node(error.node_id).last_updated = ts
        return True


def _mark_done(node: NodeProgress, ts: int) -> bool:
    """value = max (at least 1); False when the node was done already (nothing changes)."""
    if node.done:
        return False
    node.max = max(node.max, 1)
    node.value = node.max
    node.last_updated = ts
    return True
