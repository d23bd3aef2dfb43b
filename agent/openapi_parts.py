"""The OpenAPI document's reusable parts: parameters, bodies and links (agent.openapi)."""

from __future__ import annotations

from typing import Any

from store.base import TASK_ID_PATTERN


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A JSON body (request or response) of this schema."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = json_body(ref("Error"), "error: {message: ErrorType, error: detail}")
# The store's own rule, anchored: ids that break it are answered 400 before any lookup.
TASK_ID_SCHEMA = {"type": "string", "pattern": f"^{TASK_ID_PATTERN.pattern}$"}
TASK_ID_HEADER = {
    "name": "task-id",
    "in": "header",
    "required": False,
    # Empty counts as absent, as in the Go agent.
    "schema": {"type": "string", "pattern": f"^$|^{TASK_ID_PATTERN.pattern}$"},
    "description": "names the task (else X-Fc-Async-Task-Id, else a new UUID)",
}
RESULTS_QUERY = {
    "name": "results",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["base64", "none"]},
}
# Delivery (agent/delivery/plan.py): where outputs go and whom to tell.
DELIVERY_PARAMETERS = [
    {
        "name": "X-Output-Store",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^(s3://\\S+)?$"},
        "description": "upload outputs to s3://BUCKET/PREFIX?endpoint=URL&region=R (empty: none)",
    },
    {
        "name": "X-Webhook-Url",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^(https?://\\S+)?$"},
        "description": "POST task.succeeded / task.failed / task.interrupted here (signed;"
        " empty: none)",
    },
    {
        "name": "presign",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": 604800},
        "description": "urls are presigned GET URLs valid this many seconds",
    },
    {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["jpeg", "webp"]},
        "description": "convert still image outputs (copies) inline and uploaded",
    },
    {
        "name": "quality",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    },
]
# Runs on any ComfyUI (core nodes only): a 64x64 black image, inverted, saved.
WORKFLOW_EXAMPLE = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "agent"}},
}
WORKFLOW_BODY = {
    "required": True,
    "content": {"application/json": {"schema": ref("Workflow"), "example": WORKFLOW_EXAMPLE}},
}
TASK_PATH_ID = {"name": "task_id", "in": "path", "required": True, "schema": TASK_ID_SCHEMA}
# A started task's record names it: clients (and contract tests) follow these links.
TASK_LINKS = {
    "links": {
        "GetTask": {
            "operationId": "getTask",
            "parameters": {"task_id": "$response.body#/task_id"},
        },
        "DeleteTask": {
            "operationId": "deleteTask",
            "parameters": {"task_id": "$response.body#/task_id"},
        },
        "GetStatus": {
            "operationId": "getStatus",
            "parameters": {"id": "$response.body#/task_id"},
        },
    }
}
APP_PATH_ID = {"name": "app_id", "in": "path", "required": True, "schema": TASK_ID_SCHEMA}
APP_RUN_BODY = {
    "required": False,
    "content": {"application/json": {"schema": ref("AppRunBody")}},
}


PANEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["image", "select", "number", "string", "group"]},
        "id": {"type": "string", "description": "node id (not for groups)"},
        "key": {"type": "string", "description": "input name (not for groups)"},
        "name": {"type": "string", "description": "the parameter name, `<id>.<key>`"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "options": {"type": "array", "items": {"type": ["string", "number"]}},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "step": {"type": "number"},
        "hidden": {"type": "boolean"},
        "default": {"description": "the workflow's own value"},
        "children": {"type": "array", "items": ref("Panel")},
    },
}
APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "title", "params", "prompt"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "params": {"type": "array", "items": ref("Panel")},
        "prompt": ref("Workflow"),
    },
}
