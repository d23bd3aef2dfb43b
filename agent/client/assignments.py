"""`--set NODE.INPUT=VALUE`: parsing, file values, and applying them to a workflow or an
app's parameters. Pure: files are read by the caller and passed in as bytes."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

from agent.client.errors import ClientError, ExitCode

# Inputs the agent uploads as images by default (its --image-inputs); base64 goes there.
IMAGE_INPUTS = frozenset({("LoadImage", "image"), ("LoadImageMask", "image")})


@dataclass(frozen=True)
class Assignment:
    """One `--set`: a value, or a file (`@path`) whose content becomes the value."""

    node: str
    input: str
    value: Any = None
    file: str | None = None

    @property
    def name(self) -> str:
        """`NODE.INPUT`, the app parameter name too."""
        return f"{self.node}.{self.input}"


def bad(message: str) -> ClientError:
    """A usage error (exit 2)."""
    return ClientError(ExitCode.BAD_INPUT, message)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity parse in Python but are not JSON: keep them as text.
    raise ValueError(name)


def parse_value(raw: str) -> Any:
    """The value as JSON when it parses (numbers, true, null, lists, quoted text), else text."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return raw


def parse_assignment(text: str) -> Assignment:
    """`NODE.INPUT=VALUE`; `@path` names a file, `@@...` is text starting with `@`."""
    target, sep, raw = text.partition("=")
    node, dot, name = target.strip().partition(".")
    if not sep or not dot or not node or not name:
        raise bad(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. --set 6.text='a cat'")
    if raw.startswith("@@"):
        return Assignment(node, name, value=raw[1:])
    if raw.startswith("@"):
        if not raw[1:]:
            raise bad(f"--set {text!r}: '@' needs a file path after it")
        return Assignment(node, name, file=raw[1:])
    return Assignment(node, name, value=parse_value(raw))


def file_value(data: bytes, *, image: bool) -> str:
    """A file's content as a value: base64 for image inputs and binary files, else text
    (one trailing newline dropped, as editors add it)."""
    if not image:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text[:-1] if text.endswith("\n") else text
    return base64.b64encode(data).decode("ascii")


def is_image_input(workflow: dict[str, Any], node: str, name: str) -> bool:
    """Whether a workflow input takes an image (LoadImage.image and the like)."""
    entry = workflow.get(node)
    class_type = entry.get("class_type") if isinstance(entry, dict) else None
    return (class_type, name) in IMAGE_INPUTS


def apply_to_workflow(
    workflow: dict[str, Any], assignments: list[tuple[Assignment, Any]]
) -> dict[str, Any]:
    """A copy of the workflow with each (assignment, value) set; unknown nodes or inputs
    are refused, naming what exists (a typo must not run the workflow unchanged)."""
    result = copy.deepcopy(workflow)
    for assignment, value in assignments:
        entry = result.get(assignment.node)
        if not isinstance(entry, dict) or not isinstance(entry.get("inputs"), dict):
            known = ", ".join(sorted(result, key=node_order))
            raise bad(f"--set {assignment.name}: no node {assignment.node!r} (nodes: {known})")
        inputs: dict[str, Any] = entry["inputs"]
        if assignment.input not in inputs:
            known = ", ".join(inputs) or "none"
            kind = entry.get("class_type", "?")
            raise bad(
                f"--set {assignment.name}: node {assignment.node} ({kind}) has no input "
                f"{assignment.input!r} (inputs: {known})"
            )
        inputs[assignment.input] = value
    return result


def app_params(assignments: list[tuple[Assignment, Any]]) -> dict[str, Any]:
    """The `params` object of an app run: parameter name -> value (the last one wins)."""
    return {assignment.name: value for assignment, value in assignments}


def app_image_params(app: dict[str, Any]) -> set[str]:
    """Names of an app's image parameters (panels in `params`, groups and `_meta.edit`)."""
    names: set[str] = set()

    def visit(panels: Any, default_id: str | None) -> None:
        if not isinstance(panels, list):
            return
        for panel in panels:
            if not isinstance(panel, dict):
                continue
            if panel.get("type") == "group":
                visit(panel.get("children"), default_id)
            elif panel.get("type") == "image" and panel.get("key"):
                names.add(f"{panel.get('id', default_id)}.{panel['key']}")

    visit(app.get("params"), None)
    prompt = app.get("prompt")
    if isinstance(prompt, dict):
        for node_id, entry in prompt.items():
            meta = entry.get("_meta") if isinstance(entry, dict) else None
            if isinstance(meta, dict):
                visit(meta.get("edit"), str(node_id))
    return names


def node_order(node_id: str) -> tuple[int, int | str]:
    """Sort key for node ids: numbers in numeric order first, then the rest."""
    return (0, int(node_id)) if node_id.isascii() and node_id.isdigit() else (1, node_id)
