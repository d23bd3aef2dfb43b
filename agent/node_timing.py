"""Pure: how long ComfyUI executed each node of one prompt, from its events.

ComfyUI runs one node at a time and says `executing N` when N starts; a node ends when the
next one starts, or when the prompt ends (`executing` null, `execution_success`). Nodes
that ComfyUI reused (`execution_cached`) never execute and are not timed; neither is the
node a failure or an interrupt stopped (its time says nothing about the node type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyui.events import (
    ComfyEvent,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionSuccess,
)

UNKNOWN_NODE_TYPE = "unknown"


class NodeTimer:
    """Folds one prompt's events into (node type, seconds) of every node that finished."""

    def __init__(self, workflow: Mapping[str, Mapping[str, Any]], prompt_id: str) -> None:
        self._workflow = workflow
        self._prompt_id = prompt_id
        self._current: tuple[str, float] | None = None

    def apply(self, event: ComfyEvent, now: float) -> list[tuple[str, float]]:
        """The nodes this event ends, as (node type, seconds executing)."""
        if event.event_prompt_id != self._prompt_id:
            return []
        if isinstance(event, Executing):
            ended = self._end(now)
            if event.node is not None:
                self._current = (event.display_node or event.node, now)
            return ended
        if isinstance(event, ExecutionSuccess):
            return self._end(now)
        if isinstance(event, ExecutionError | ExecutionInterrupted):
            self._current = None
        return []

    def _end(self, now: float) -> list[tuple[str, float]]:
        if self._current is None:
            return []
        node_id, started = self._current
        self._current = None
        return [(self.node_type(node_id), max(now - started, 0.0))]

    def node_type(self, node_id: str) -> str:
        """The class_type of a node of the workflow; `unknown` for ids ComfyUI made up."""
        node = self._workflow.get(node_id)
        class_type = node.get("class_type") if node is not None else None
        return class_type if isinstance(class_type, str) and class_type else UNKNOWN_NODE_TYPE
