"""Runs one queued prompt and emits ComfyUI's websocket events in ComfyUI's order.

Per prompt: execution_start, execution_cached, then per node progress_state(running),
executing, [per step: progress_state, (preview type 4), progress, (preview type 1)],
executed (output nodes), progress_state(finished); then execution_success / execution_error /
execution_interrupted. Who gets what follows ComfyUI: execution_* / executing / executed go to
the submitting client only (nobody without a client_id, except execution_interrupted, which is
then broadcast); progress and progress_state go to the submitting client or, without one, to
everybody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .graph import DependencyCycleError, ExecutionOrder, full_type_name, is_link, signatures
from .nodes import NODES, NodeDef, NodeEnv, new_temp_suffix

log = logging.getLogger("fake_comfyui")

PREVIEW_IMAGE = 1  # binary event: 4-byte image type (1 = JPEG) + image
PREVIEW_IMAGE_WITH_METADATA = 4  # binary event: 4-byte JSON length + JSON + image
JPEG = 1

QueueItem = tuple[Any, str, dict[str, Any], dict[str, Any], list[str]]


class Messenger(Protocol):
    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        """Queue a message for one client (sid) or everybody (None), keeping order."""

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """Whether that client announced supports_preview_metadata."""


class InterruptProcessingError(Exception):
    """POST /interrupt reached the running prompt (ComfyUI's InterruptProcessingException)."""


@dataclass
class Caches:
    """Node outputs and UI outputs keyed by cache key (see graph.signatures)."""

    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)

    def keep_only(self, keys: set[str]) -> None:
        # ComfyUI's default (classic) cache forgets whatever the new prompt does not use
        self.outputs = {k: v for k, v in self.outputs.items() if k in keys}
        self.ui = {k: v for k, v in self.ui.items() if k in keys}


class ProgressRegistry:
    """Per-prompt node states; every change sends the full map of non-pending nodes."""

    def __init__(self, prompt_id: str, send: Callable[[dict[str, Any]], None]) -> None:
        self.prompt_id = prompt_id
        self.send = send
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        # a node first seen at "finish" (a cached output) starts from int 0/1, hence "value": 1
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._publish()

    def update(self, node_id: str, value: float, total: float) -> None:
        self._entry(node_id).update(state="running", value=value, max=total)
        self._publish()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._publish()

    def _publish(self) -> None:
        nodes = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self.nodes.items()
            if entry["state"] != "pending"
        }
        self.send({"prompt_id": self.prompt_id, "nodes": nodes})


@dataclass
class Outcome:
    success: bool
    messages: list[tuple[str, dict[str, Any]]]
    outputs: dict[str, Any]
    meta: dict[str, Any]


@dataclass
class _Failure:
    node_id: str
    error: BaseException
    details: dict[str, Any] = field(default_factory=dict)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class _PromptRun:
    """State of one prompt's execution; also the RunContext handed to node functions."""

    def __init__(self, executor: PromptExecutor, item: QueueItem) -> None:
        _, self.prompt_id, self.prompt, self.extra_data, self.outputs = item
        self.executor = executor
        self.env = executor.env
        self.node_id = ""
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.executed: list[str] = []
        self.keys = signatures(self.prompt, self.env)
        self.registry = ProgressRegistry(self.prompt_id, self._send_progress_state)

    # --- RunContext ---

    async def progress(self, value: int, total: int, preview: bytes | None = None) -> None:
        # ComfyUI's progress hook: the interrupt check comes first, so a step that finds the
        # flag set reports nothing
        self.executor.check_interrupt()
        value = min(value, total)
        self.registry.update(self.node_id, value, total)
        client = self.executor.client_id
        meta = preview is not None and self.executor.messenger.supports_preview_metadata(client)
        if preview is not None and meta:
            self._send_preview_with_metadata(preview)
        self._send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id},
        )
        if preview is not None and not meta:
            self._send(PREVIEW_IMAGE, struct.pack(">I", JPEG) + preview)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def temp_suffix(self) -> str:
        return self.executor.temp_suffixes.setdefault(self.node_id, new_temp_suffix())

    # --- sending ---

    def _send(self, event: str | int, data: Any) -> None:
        self.executor.messenger.send_sync(event, data, self.executor.client_id)

    def _send_progress_state(self, data: dict[str, Any]) -> None:
        self._send("progress_state", data)

    def _send_preview_with_metadata(self, preview: bytes) -> None:
        metadata = {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.node_id,
            "parent_node_id": None,
            "real_node_id": self.node_id,
            "image_type": "image/jpeg",
        }
        encoded = json.dumps(metadata).encode()
        self._send(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(encoded)) + encoded + preview)

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        """execution_* events: timestamped, kept for /history, sent to the client (if any)."""
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append((event, data))
        if self.executor.client_id is not None or broadcast:
            self._send(event, data)

    def _to_client(self, event: str, data: dict[str, Any]) -> None:
        if self.executor.client_id is not None:
            self._send(event, data)

    # --- running ---

    def is_cached(self, node_id: str) -> bool:
        return self.keys[node_id] in self.executor.caches.outputs

    async def run(self) -> Outcome:
        caches = self.executor.caches
        self.add_message("execution_start", {"prompt_id": self.prompt_id})
        caches.keep_only(set(self.keys.values()))
        cached = [n for n in self.prompt if self.is_cached(n)]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id})
        current_outputs = list(self.prompt)
        order = ExecutionOrder(self.prompt, self.is_cached)
        for output_id in self.outputs:
            order.add_node(output_id)
        success = True
        while not order.is_empty():
            try:
                node_id = order.next_node()
            except DependencyCycleError as ex:
                failure: _Failure | None = _Failure(next(iter(order.pending)), ex, _cycle_details())
            else:
                failure = await self._run_node(node_id)
            if failure is not None:
                success = False
                self._report(failure, current_outputs)
                break
            order.complete(node_id)
        else:
            self.add_message("execution_success", {"prompt_id": self.prompt_id})
        ui = {n: caches.ui[self.keys[n]] for n in self.prompt if self.keys[n] in caches.ui}
        self.executor.last_node_id = None
        return Outcome(
            success,
            self.messages,
            {n: u["output"] for n, u in ui.items()},
            {n: u["meta"] for n, u in ui.items()},
        )

    def _gather_inputs(self, node_id: str, defn: NodeDef) -> dict[str, Any]:
        types = defn.input_types(self.env)
        declared = {**types.get("required", {}), **types.get("optional", {})}
        values = {}
        for name, value in self.prompt[node_id]["inputs"].items():
            if name not in declared:
                continue
            if is_link(value):
                values[name] = self.executor.caches.outputs[self.keys[value[0]]][value[1]]
            else:
                values[name] = value
        return values

    async def _run_node(self, node_id: str) -> _Failure | None:
        self.node_id = node_id
        key = self.keys[node_id]
        caches = self.executor.caches
        if self.is_cached(node_id):  # only outputs get here: re-send their UI, run nothing
            output = caches.ui.get(key, {}).get("output")
            self._to_client(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": output,
                    "prompt_id": self.prompt_id,
                },
            )
            self.registry.finish(node_id)
            return None
        defn = NODES[self.prompt[node_id]["class_type"]]
        inputs: dict[str, Any] | None = None
        try:
            self.registry.start(node_id)
            inputs = self._gather_inputs(node_id, defn)
            if self.executor.client_id is not None:
                self.executor.last_node_id = node_id
                self._send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                )
            self.executor.check_interrupt()  # ComfyUI checks before every node function call
            result = await defn.run(self, dict(inputs))
            if result.ui:
                meta = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
                caches.ui[key] = {"meta": meta, "output": result.ui}
                self._to_client(
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": result.ui,
                        "prompt_id": self.prompt_id,
                    },
                )
            caches.outputs[key] = result.outputs
        except InterruptProcessingError as ex:
            log.info("Processing interrupted")
            return _Failure(node_id, ex)
        except Exception as ex:
            log.error("!!! Exception during processing !!! %s", ex)
            log.error("%s", traceback.format_exc())
            return _Failure(node_id, ex, _error_details(ex, inputs))
        self.registry.finish(node_id)
        self.executed.append(node_id)
        return None

    def _report(self, failure: _Failure, current_outputs: list[str]) -> None:
        base = {
            "prompt_id": self.prompt_id,
            "node_id": failure.node_id,
            "node_type": self.prompt[failure.node_id]["class_type"],
            "executed": list(self.executed),
        }
        if isinstance(failure.error, InterruptProcessingError):
            self.add_message("execution_interrupted", base, broadcast=True)
            return
        details = failure.details
        self.add_message(
            "execution_error",
            {
                **base,
                "exception_message": details["exception_message"],
                "exception_type": details["exception_type"],
                "traceback": details["traceback"],
                "current_inputs": details["current_inputs"],
                "current_outputs": current_outputs,
            },
        )


def _error_details(ex: Exception, inputs: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "exception_message": f"{ex}\n",  # ComfyUI appends a (here empty) line of tips
        "exception_type": full_type_name(type(ex)),
        "traceback": traceback.format_tb(sys.exc_info()[2]),
        "current_inputs": {k: [_format_value(v)] for k, v in (inputs or {}).items()},
    }


def _cycle_details() -> dict[str, Any]:
    return {
        "exception_message": "Dependency cycle detected",
        "exception_type": "graph.DependencyCycleError",
        "traceback": [],
        "current_inputs": [],
    }


class PromptExecutor:
    """Runs prompts one at a time and owns what outlives a prompt: caches, the interrupt flag,
    and the client/node a reconnecting socket is told about."""

    def __init__(self, messenger: Messenger, env: NodeEnv) -> None:
        self.messenger = messenger
        self.env = env
        self.caches = Caches()
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupt_requested = False
        self.temp_suffixes: dict[str, str] = {}

    def interrupt(self) -> None:
        self.interrupt_requested = True

    def check_interrupt(self) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            raise InterruptProcessingError()

    async def execute(self, item: QueueItem) -> Outcome:
        self.interrupt_requested = False  # an interrupt aimed at an earlier prompt is dropped
        self.client_id = item[3].get("client_id")
        return await _PromptRun(self, item).run()
