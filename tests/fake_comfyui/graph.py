"""Prompt validation, execution order and cache keys, behaving like ComfyUI 0.3.64.

Written from ComfyUI's observable behaviour (the recorded traces) and its documented rules, not
copied: validation answers carry the same error types, messages and `node_errors` layout; the
execution order follows the same topological "dissolve" with the same output-first preference;
a node is cached when its class, inputs and upstream graph equal a node of the previous prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .nodes import NODES, NodeDef, NodeEnv

log = logging.getLogger("fake_comfyui")

Errors = list[dict[str, Any]]
Verdict = tuple[bool, Errors, str]


def is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def full_type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def output_order(outputs: list[str]) -> list[str]:
    """ComfyUI keeps output node ids in a `set`, so their order is Python's hash order, which
    changes per process. The fake uses reverse prompt order: it reproduces the recording
    (load_image: PreviewImage "3" before SaveImage "2") and is deterministic."""
    return list(reversed(outputs))


def _types_match(received: object, expected: object) -> bool:
    if received == expected or "*" in (received, expected):
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _convert(input_type: object, value: Any) -> Any:
    converters: dict[object, Callable[[Any], Any]] = {
        "INT": int,
        "FLOAT": float,
        "STRING": str,
        "BOOLEAN": bool,
    }
    convert = converters.get(input_type) if isinstance(input_type, str) else None  # combos: lists
    return convert(value) if convert else value


class _Validator:
    """Validates nodes depth-first from an output, memoising each node's verdict."""

    def __init__(self, prompt: dict[str, Any], env: NodeEnv) -> None:
        self.prompt = prompt
        self.env = env
        self.validated: dict[str, Verdict] = {}

    def node(self, node_id: str) -> Verdict:
        if node_id in self.validated:
            return self.validated[node_id]
        inputs = self.prompt[node_id]["inputs"]
        defn = NODES[self.prompt[node_id]["class_type"]]
        types = defn.input_types(self.env)
        required, optional = types.get("required", {}), types.get("optional", {})
        errors: Errors = []
        valid = True
        # ComfyUI walks a set of input names (hash order); sorted is deterministic and matches
        # the recording (height's error before width's).
        for name in sorted({*required, *optional}):
            spec = required.get(name) or optional[name]
            info = (spec[0], spec[1] if len(spec) > 1 else {})
            if name not in inputs:
                if name in required:
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            input_name=name,
                        )
                    )
                continue
            if isinstance(inputs[name], list):
                valid = self._check_link(defn, name, inputs[name], info, errors) and valid
            else:
                self._check_constant(defn, inputs, name, info, errors)
        errors += self._custom_validation(defn, inputs)
        verdict: Verdict = (False, errors, node_id) if errors or not valid else (True, [], node_id)
        self.validated[node_id] = verdict
        return verdict

    def _check_link(
        self, defn: NodeDef, name: str, value: list[Any], info: tuple[Any, Any], errors: Errors
    ) -> bool:
        if len(value) != 2:
            errors.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    input_name=name,
                    input_config=info,
                    received_value=value,
                )
            )
            return True
        source_id = value[0]
        # A missing source raises KeyError out of this node, exactly where ComfyUI raises it
        received = NODES[self.prompt[source_id]["class_type"]].returns[value[1]]
        if not _types_match(received, info[0]):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({info[0]})",
                    input_name=name,
                    input_config=info,
                    received_type=received,
                    linked_node=value,
                )
            )
            return True
        try:
            return self.node(source_id)[0]
        except Exception as ex:
            self.validated[source_id] = (
                False,
                [_inner_exception(name, info, value, ex)],
                source_id,
            )
            return False

    def _check_constant(
        self,
        defn: NodeDef,
        inputs: dict[str, Any],
        name: str,
        info: tuple[Any, Any],
        errors: Errors,
    ) -> None:
        input_type, extra = info
        value = inputs[name]
        try:
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            value = inputs[name] = _convert(input_type, value)  # stored converted, like ComfyUI
        except Exception as ex:
            errors.append(
                _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {value}, {ex}",
                    input_name=name,
                    input_config=info,
                    received_value=value,
                    exception_message=str(ex),
                )
            )
            return
        if name in defn.validate_inputs:
            return  # the node's own validation replaces the range and list checks
        if "min" in extra and value < extra["min"]:
            errors.append(
                _range_error("value_smaller_than_min", "smaller than min", name, info, value)
            )
        elif "max" in extra and value > extra["max"]:
            errors.append(
                _range_error("value_bigger_than_max", "bigger than max", name, info, value)
            )
        elif isinstance(input_type, list) and value not in input_type:
            too_long = len(input_type) > 20  # ComfyUI does not echo huge lists
            listed = f"(list of length {len(input_type)})" if too_long else str(input_type)
            errors.append(
                _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {listed}",
                    input_name=name,
                    input_config=None if too_long else info,
                    received_value=value,
                )
            )

    def _custom_validation(self, defn: NodeDef, inputs: dict[str, Any]) -> Errors:
        if defn.validate is None:
            return []
        given = {
            n: (None if is_link(inputs[n]) else inputs[n])
            for n in defn.validate_inputs
            if n in inputs
        }
        if not given:
            return []
        result = defn.validate(self.env, given)
        if result is True:
            return []
        suffix = "" if result is False else f" - {result}"
        return [
            _error(
                "custom_validation_failed",
                "Custom validation failed for node",
                f"{n}{suffix}",
                input_name=n,
            )
            for n in given
        ]


def _range_error(
    kind: str, words: str, name: str, info: tuple[Any, Any], value: Any
) -> dict[str, Any]:
    limit = info[1]["min" if "min" in kind else "max"]
    return _error(
        kind,
        f"Value {value} {words} of {limit}",
        name,
        input_name=name,
        input_config=info,
        received_value=value,
    )


def _traceback_lines() -> list[str]:
    return traceback.format_tb(sys.exc_info()[2])


def _inner_exception(
    name: str, info: tuple[Any, Any], link: list[Any], ex: Exception
) -> dict[str, Any]:
    return _error(
        "exception_during_inner_validation",
        "Exception when validating inner node",
        str(ex),
        input_name=name,
        input_config=info,
        exception_message=str(ex),
        exception_type=full_type_name(type(ex)),
        traceback=_traceback_lines(),
        linked_node=link,
    )


@dataclass
class Validation:
    ok: bool
    error: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def _find_outputs(prompt: dict[str, Any], partial: list[str] | None) -> Validation | list[str]:
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            return Validation(False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"))
        defn = NODES.get(node["class_type"])
        if defn is None:
            message = f"Cannot execute because node {node['class_type']} does not exist."
            return Validation(False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"))
        if defn.output_node and (partial is None or node_id in partial):
            outputs.append(node_id)
    if not outputs:
        return Validation(False, _error("prompt_no_outputs", "Prompt has no outputs", ""))
    return output_order(outputs)


def validate_prompt(
    prompt: dict[str, Any], env: NodeEnv, partial: list[str] | None = None
) -> Validation:
    """POST /prompt's validation; converts constant inputs in place as ComfyUI does."""
    found = _find_outputs(prompt, partial)
    if isinstance(found, Validation):
        return found
    validator = _Validator(prompt, env)
    good: list[str] = []
    failures: list[tuple[str, Errors]] = []
    node_errors: dict[str, Any] = {}
    for output_id in found:
        try:
            ok, reasons, _ = validator.node(output_id)
        except Exception as ex:
            ok = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    exception_type=full_type_name(type(ex)),
                    traceback=_traceback_lines(),
                )
            ]
            validator.validated[output_id] = (False, reasons, output_id)
        if ok:
            good.append(output_id)
            continue
        log.error("Failed to validate prompt for output %s:", output_id)
        failures.append((output_id, reasons))
        # Like ComfyUI: every node that failed with reasons so far gets this output as dependent
        for node_id, (node_ok, node_reasons, _) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)
        log.error("Output will be ignored")
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
        error = _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return Validation(False, error, [], node_errors)
    return Validation(True, None, good, node_errors)


# --- cache keys ----------------------------------------------------------------------------------


def signatures(prompt: dict[str, Any], env: NodeEnv) -> dict[str, str]:
    """Cache key per node: class, IS_CHANGED value, constant inputs and upstream keys. Node ids
    are not part of it, so an identical subgraph under other ids is still cached."""
    keys: dict[str, str] = {}
    in_progress: set[str] = set()

    def key(node_id: str) -> str:
        if node_id in keys:
            return keys[node_id]
        if node_id in in_progress:  # a cycle (never executed; validation rejects it)
            return f"cycle:{node_id}"
        in_progress.add(node_id)
        node = prompt[node_id]
        defn = NODES[node["class_type"]]
        parts: list[tuple[Any, ...]] = []
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt:
                parts.append((name, "link", key(value[0]), value[1]))
            else:
                parts.append((name, "value", json.dumps(value, sort_keys=True, default=str)))
        changed = defn.is_changed(env, node["inputs"]) if defn.is_changed else None
        digest = hashlib.sha256(repr((node["class_type"], changed, parts)).encode()).hexdigest()
        keys[node_id] = digest
        in_progress.discard(node_id)
        return digest

    for node_id in prompt:
        key(node_id)
    return keys


# --- execution order -----------------------------------------------------------------------------


class DependencyCycleError(Exception):
    pass


DependencyCycleError.__module__ = "graph"  # ComfyUI reports "graph.DependencyCycleError"


class ExecutionOrder:
    """Which node runs next: ComfyUI's topological dissolve of the needed subgraph.

    Nodes are collected depth-first from each output (last input first, as a stack does); of
    the nodes whose inputs are ready, an output node goes first, then one feeding an output,
    then one two steps before an output, else the earliest collected. Cached nodes are never
    collected as dependencies, but a cached output is still visited (to re-send `executed`).
    """

    def __init__(self, prompt: dict[str, Any], is_cached: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.pending: dict[str, None] = {}  # insertion-ordered set
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = None
            self.block_count[current] = 0
            self.blocking[current] = {}
            for value in self.prompt[current]["inputs"].values():
                if is_link(value) and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            self.add_node(source)
            if target not in self.blocking[source]:
                self.blocking[source][target] = None
                self.block_count[target] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def next_node(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        return self._pick(ready)

    def _is_output(self, node_id: str) -> bool:
        return NODES[self.prompt[node_id]["class_type"]].output_node

    def _pick(self, ready: list[str]) -> str:
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(self._is_output(b) for b in self.blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1
