"""Typed models of ComfyUI websocket messages, parsed forward-compatibly.

Unknown message types, extra fields and unexpected shapes never raise: they become
`UnknownEvent`, so a newer ComfyUI cannot break a run (the Go agent failed every run once
`progress_state.nodes` became an object).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def event_prompt_id(self) -> str | None:
        """The prompt this event belongs to, if it names one."""
        value = getattr(self, "prompt_id", None)
        return value if isinstance(value, str) else None


class StatusEvent(_Event):
    """Queue status, broadcast to every client; carries no prompt id."""

    type: Literal["status"] = "status"
    queue_remaining: int | None = None
    sid: str | None = None


class ExecutionStart(_Event):
    """The worker took the prompt from the queue."""

    type: Literal["execution_start"] = "execution_start"
    prompt_id: str
    timestamp: int | None = None


class ExecutionCached(_Event):
    """Nodes whose outputs came from ComfyUI's cache (they will not execute)."""

    type: Literal["execution_cached"] = "execution_cached"
    prompt_id: str
    nodes: list[str] = Field(default_factory=list)
    timestamp: int | None = None


class Executing(_Event):
    """A node starts; node None means the prompt ended (sent after the history entry)."""

    type: Literal["executing"] = "executing"
    node: str | None = None
    display_node: str | None = None
    prompt_id: str | None = None


class Progress(_Event):
    """Step progress of a node (ComfyUI's ProgressBar)."""

    type: Literal["progress"] = "progress"
    prompt_id: str | None = None
    node: str | None = None
    value: float = 0
    max: float = 0


class NodeProgressState(BaseModel):
    """One node's entry in a progress_state message."""

    model_config = ConfigDict(extra="allow", frozen=True)

    value: float = 0
    max: float = 0
    state: str = ""
    node_id: str | None = None
    display_node_id: str | None = None
    real_node_id: str | None = None
    parent_node_id: str | None = None


class ProgressState(_Event):
    """Full map of non-pending nodes (newer protocol); sent on every node change."""

    type: Literal["progress_state"] = "progress_state"
    prompt_id: str
    nodes: dict[str, NodeProgressState] = Field(default_factory=dict)


class Executed(_Event):
    """An output node finished; `output` is its UI output (images, gifs, text, ...)."""

    type: Literal["executed"] = "executed"
    prompt_id: str
    node: str
    display_node: str | None = None
    output: dict[str, Any] | None = None


class ExecutionSuccess(_Event):
    """The prompt finished without error (sent before the history entry is written)."""

    type: Literal["execution_success"] = "execution_success"
    prompt_id: str
    timestamp: int | None = None


class ExecutionError(_Event):
    """A node raised; the prompt stops."""

    type: Literal["execution_error"] = "execution_error"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = Field(default_factory=list)
    exception_message: str = ""
    exception_type: str = ""
    traceback: list[str] = Field(default_factory=list)
    timestamp: int | None = None


class ExecutionInterrupted(_Event):
    """The prompt was interrupted (POST /interrupt)."""

    type: Literal["execution_interrupted"] = "execution_interrupted"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: list[str] = Field(default_factory=list)
    timestamp: int | None = None


class UnknownEvent(_Event):
    """Any message this agent does not model (or that did not fit its model)."""

    type: str
    data: Any = None
    prompt_id: str | None = None


ComfyEvent = (
    StatusEvent
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | UnknownEvent
)

TERMINAL_EVENTS = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)

_MODELS: dict[str, type[_Event]] = {
    "execution_start": ExecutionStart,
    "execution_cached": ExecutionCached,
    "executing": Executing,
    "progress": Progress,
    "progress_state": ProgressState,
    "executed": Executed,
    "execution_success": ExecutionSuccess,
    "execution_error": ExecutionError,
    "execution_interrupted": ExecutionInterrupted,
}


def parse_event(message: Any) -> ComfyEvent:
    """Turn a decoded `{"type", "data"}` message into a typed event; never raises."""
    if not isinstance(message, dict):
        return UnknownEvent(type="", data=message)
    kind = message.get("type")
    data = message.get("data")
    if not isinstance(kind, str):
        return UnknownEvent(type="", data=message)
    if kind == "status":
        return _parse_status(data)
    model = _MODELS.get(kind)
    if model is None or not isinstance(data, dict):
        return _unknown(kind, data)
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError:
        return _unknown(kind, data)


def parse_text_frame(text: str) -> ComfyEvent:
    """Parse a websocket text frame; malformed JSON becomes an UnknownEvent."""
    try:
        message = json.loads(text)
    except ValueError:
        return UnknownEvent(type="", data=text)
    return parse_event(message)


def _parse_status(data: Any) -> StatusEvent:
    if not isinstance(data, dict):
        return StatusEvent()
    status = data.get("status")
    remaining = None
    if isinstance(status, dict):
        exec_info = status.get("exec_info")
        if isinstance(exec_info, dict) and isinstance(exec_info.get("queue_remaining"), int):
            remaining = exec_info["queue_remaining"]
    sid = data.get("sid")
    return StatusEvent(queue_remaining=remaining, sid=sid if isinstance(sid, str) else None)


def _unknown(kind: str, data: Any) -> UnknownEvent:
    prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
    return UnknownEvent(
        type=kind, data=data, prompt_id=prompt_id if isinstance(prompt_id, str) else None
    )


# Binary frames: 4-byte big-endian event type, then the payload.
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4


class BinaryFrame(BaseModel):
    """A binary websocket frame (sampler preview), kept whole for forwarding."""

    model_config = ConfigDict(frozen=True)

    event_type: int
    data: bytes
    # From the metadata of PREVIEW_IMAGE_WITH_METADATA frames; type 1 frames name no prompt.
    prompt_id: str | None = None
    node_id: str | None = None


def parse_binary_frame(data: bytes) -> BinaryFrame:
    """Read the event type (and, for metadata previews, the prompt id); never raises."""
    if len(data) < 4:
        return BinaryFrame(event_type=-1, data=data)
    (event_type,) = struct.unpack(">I", data[:4])
    prompt_id = node_id = None
    if event_type == PREVIEW_IMAGE_WITH_METADATA and len(data) >= 8:
        (length,) = struct.unpack(">I", data[4:8])
        try:
            meta = json.loads(data[8 : 8 + length])
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            p, n = meta.get("prompt_id"), meta.get("node_id")
            prompt_id = p if isinstance(p, str) else None
            node_id = n if isinstance(n, str) else None
    return BinaryFrame(event_type=event_type, data=data, prompt_id=prompt_id, node_id=node_id)
