"""Agent errors said in words: which node, of what type, what went wrong."""

from __future__ import annotations

import json
from typing import Any


def _node(node_id: Any, node_type: Any) -> str:
    if node_id is None:
        return ""
    return f"node {node_id} ({node_type})" if node_type else f"node {node_id}"


def _task_error(error: dict[str, Any]) -> str:
    if error.get("param"):  # an app parameter: the message names it (and every other one)
        return str(error.get("message") or error["param"])
    details = error.get("details") if isinstance(error.get("details"), dict) else {}
    kind = details.get("exception_type") if details else None
    message = str(error.get("message") or error.get("type") or "failed")
    where = _node(error.get("node_id"), error.get("node_type"))
    said = f"{kind}: {message}" if kind and not message.startswith(str(kind)) else message
    # The agent's own messages may name the node already ("node 1 (LoadImage) input ...").
    return (
        f"{where}: {said}"
        if where and not said.startswith(f"node {error.get('node_id')} ")
        else said
    )


def _validation(error: dict[str, Any]) -> str:
    # ComfyUI's own answer: {"error": {...}, "node_errors": {id: {"errors": [...], ...}}}.
    lines = []
    top = error.get("error")
    if isinstance(top, dict):
        lines.append(str(top.get("message") or top.get("type")))
    node_errors = error.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id, entry in node_errors.items():
            if not isinstance(entry, dict):
                continue
            for item in entry.get("errors") or []:
                if isinstance(item, dict):
                    detail = f": {item['details']}" if item.get("details") else ""
                    where = _node(node_id, entry.get("class_type"))
                    lines.append(f"{where}: {item.get('message') or item.get('type')}{detail}")
    return "\n".join(lines)


def describe_error(body: Any) -> str:
    """An error answer (`{"message": Type, "error": detail}`) as a readable text."""
    if not isinstance(body, dict):
        return str(body)
    kind = body.get("message")
    error = body.get("error")
    if isinstance(error, str):
        text = error
    elif isinstance(error, dict) and "node_errors" in error:
        text = _validation(error)
    elif isinstance(error, dict) and ("message" in error or "node_id" in error):
        text = _task_error(error)
    else:
        text = json.dumps(error)
    return f"{kind}: {text}" if kind else text
