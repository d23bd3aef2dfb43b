"""Pure workflow handling: accept a request body as an API-format prompt, check its shape."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SEED_INPUTS = ("seed", "noise_seed")
# ComfyUI's seed widgets take 0 .. 2**64-1; stay within 2**53 so JavaScript clients that
# read the value back keep it exact.
MAX_RANDOM_SEED = 2**53 - 1


@dataclass
class PreparedWorkflow:
    """The workflow as posted to ComfyUI, and what the task record keeps of it."""

    workflow: dict[str, dict[str, Any]]
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)


class PreparationError(Exception):
    """An input could not be supplied (URL unreachable, not an image); names node and input."""

    def __init__(self, message: str, details: dict[str, str], node_id: str, node_type: str) -> None:
        super().__init__(message)
        self.details = details
        self.node_id = node_id
        self.node_type = node_type


class WorkflowError(ValueError):
    """The body is not an API-format workflow; `detail` says where and why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def extract_workflow(body: Any) -> dict[str, dict[str, Any]]:
    """The node map of a request body: the bare map, or `{"prompt": {...}}` (ComfyUI style)."""
    if not isinstance(body, dict):
        raise WorkflowError(
            f"body must be a JSON object (the API-format workflow), not {_kind(body)}"
        )
    prompt = body.get("prompt")
    if isinstance(prompt, dict) and not _looks_like_node(prompt):
        body = prompt
    if not body:
        raise WorkflowError("workflow is empty: it has no nodes")
    _check_values(body)
    for node_id, node in body.items():
        if not isinstance(node, dict):
            raise WorkflowError(f"node {node_id!r} must be an object, not {_kind(node)}")
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise WorkflowError(f"node {node_id!r} has no class_type")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowError(f"node {node_id!r}: inputs must be an object, not {_kind(inputs)}")
    return {str(node_id): node for node_id, node in body.items()}


def randomize_seeds(
    workflow: Mapping[str, Mapping[str, Any]], rng: random.Random
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """A copy where `seed`/`noise_seed` inputs equal to -1 hold a fresh random seed.

    Nodes and their `inputs` are copied, so inputs can be set in the copy (seeds here,
    uploaded images' names later); deeper values (links, lists) are shared, and nothing
    changes them in place. Also returns every seed the run uses (node id -> input ->
    value), so the task record can say which seed made an image.
    """
    result = {node_id: _node_copy(node) for node_id, node in workflow.items()}
    used: dict[str, dict[str, int]] = {}
    for node_id, node in result.items():
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for name in SEED_INPUTS:
            value = inputs.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                continue  # a link to another node (e.g. a seed primitive) or not a seed
            if value == -1:
                value = inputs[name] = rng.randint(0, MAX_RANDOM_SEED)
            used.setdefault(node_id, {})[name] = value
    return result, used


def _node_copy(node: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(node)
    inputs = copied.get("inputs")
    if isinstance(inputs, dict):
        copied["inputs"] = dict(inputs)
    return copied


# Real workflows nest a few levels (inputs holding link lists); anything deeper is abuse
# that would only exhaust the recursion limit further down (copies, serialisation).
MAX_DEPTH = 64
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_values(value: Any, depth: int = 0) -> None:
    """Refuse what cannot be stored or sent on: deep nesting, lone UTF-16 surrogates."""
    if depth > MAX_DEPTH:
        raise WorkflowError(f"workflow is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            raise WorkflowError("workflow contains a lone UTF-16 surrogate (\\ud800-\\udfff)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def _looks_like_node(value: Mapping[str, Any]) -> bool:
    return isinstance(value.get("class_type"), str)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
