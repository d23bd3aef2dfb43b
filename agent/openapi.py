"""The OpenAPI document of the agent's own routes (GET /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from agent import __version__
from store.base import TASK_ID_PATTERN
from store.records import NodeProgress, TaskRecord


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "error: {message: ErrorType, error: detail}")
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
    "content": {"application/json": {"schema": _ref("Workflow"), "example": WORKFLOW_EXAMPLE}},
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
    "content": {"application/json": {"schema": _ref("AppRunBody")}},
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
        "children": {"type": "array", "items": _ref("Panel")},
    },
}
APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "title", "params", "prompt"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "params": {"type": "array", "items": _ref("Panel")},
        "prompt": _ref("Workflow"),
    },
}


def openapi_document() -> dict[str, Any]:
    """The whole document (built on request: it is small and never hot)."""
    template = "#/components/schemas/{model}"
    record_schema = TaskRecord.model_json_schema(ref_template=template)
    definitions = record_schema.pop("$defs", {})
    node_schema = NodeProgress.model_json_schema(ref_template=template)
    definitions.update(node_schema.pop("$defs", {}))
    progress_map = {"type": "object", "additionalProperties": _ref("NodeProgressWithResults")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "comfyui-agent", "version": __version__},
        "paths": {
            "/api/run": {
                "post": {
                    "operationId": "runWorkflow",
                    "summary": "Run a workflow and answer when it ends",
                    "parameters": [TASK_ID_HEADER, RESULTS_QUERY, *DELIVERY_PARAMETERS],
                    "requestBody": WORKFLOW_BODY,
                    "responses": {
                        "200": _json(progress_map, "the progress map with results"),
                        **{code: ERROR for code in ("400", "401", "409", "413", "422", "429")},
                        **{code: ERROR for code in ("500", "502", "503", "504")},
                    },
                }
            },
            "/api/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "The stored progress map of a task",
                    "parameters": [
                        {"name": "id", "in": "query", "required": True, "schema": TASK_ID_SCHEMA}
                    ],
                    "responses": {
                        "200": _json(progress_map, "the progress map"),
                        **{code: ERROR for code in ("400", "401", "404", "503")},
                    },
                }
            },
            "/api/tasks": {
                "post": {
                    "operationId": "createTask",
                    "summary": "Start a workflow in the background",
                    "parameters": [TASK_ID_HEADER, *DELIVERY_PARAMETERS],
                    "requestBody": WORKFLOW_BODY,
                    "responses": {
                        "200": {
                            **_json(_ref("TaskRecord"), "the task already succeeded"),
                            **TASK_LINKS,
                        },
                        "202": {
                            **_json(_ref("TaskRecord"), "started (or already running)"),
                            **TASK_LINKS,
                        },
                        **{code: ERROR for code in ("400", "401", "413", "422", "429", "503")},
                    },
                }
            },
            "/api/tasks/{task_id}": {
                "get": {
                    "operationId": "getTask",
                    "summary": "The task record",
                    "parameters": [TASK_PATH_ID],
                    "responses": {
                        "200": _json(_ref("TaskRecord"), "the record"),
                        **{code: ERROR for code in ("400", "401", "404", "503")},
                    },
                },
                "delete": {
                    "operationId": "deleteTask",
                    "summary": "Interrupt the task wherever it runs",
                    "parameters": [TASK_PATH_ID],
                    "responses": {
                        "202": _json(_ref("TaskRecord"), "interrupt requested"),
                        **{code: ERROR for code in ("400", "401", "404", "409", "503")},
                    },
                },
            },
            "/api/apps": {
                "get": {
                    "operationId": "listApps",
                    "summary": "Every app (saved workflow with a parameter panel)",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("App")}, "the apps"),
                        "401": ERROR,
                    },
                }
            },
            "/api/apps/{app_id}": {
                "get": {
                    "operationId": "getApp",
                    "summary": "One app",
                    "parameters": [APP_PATH_ID],
                    "responses": {
                        "200": _json(_ref("App"), "the app"),
                        **{code: ERROR for code in ("401", "404")},
                    },
                }
            },
            "/api/apps/{app_id}/run": {
                "post": {
                    "operationId": "runApp",
                    "summary": "Run an app with parameters; answers as POST /api/run does",
                    "parameters": [
                        APP_PATH_ID,
                        TASK_ID_HEADER,
                        RESULTS_QUERY,
                        *DELIVERY_PARAMETERS,
                    ],
                    "requestBody": APP_RUN_BODY,
                    "responses": {
                        "200": _json(progress_map, "the progress map with results"),
                        **{code: ERROR for code in ("400", "401", "404", "409", "413", "422")},
                        **{code: ERROR for code in ("429", "500", "502", "503", "504")},
                    },
                }
            },
            "/api/apps/{app_id}/tasks": {
                "post": {
                    "operationId": "startAppTask",
                    "summary": "Start an app in the background; answers as POST /api/tasks does",
                    "parameters": [APP_PATH_ID, TASK_ID_HEADER, *DELIVERY_PARAMETERS],
                    "requestBody": APP_RUN_BODY,
                    "responses": {
                        "200": _json(_ref("TaskRecord"), "the task already succeeded"),
                        "202": _json(_ref("TaskRecord"), "started (or already running)"),
                        **{code: ERROR for code in ("400", "401", "404", "413", "422", "429")},
                        "503": ERROR,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Alive (the process answers)",
                    "responses": {"200": _json({"type": "object"}, "ok")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "ComfyUI ready and the agent accepting work",
                    "responses": {
                        "200": _json(_ref("Readiness"), "ready"),
                        "503": _json(_ref("Readiness"), "not ready (Retry-After)"),
                    },
                }
            },
            "/initialize": {
                "post": {
                    "operationId": "initialize",
                    "summary": "Function Compute's initializer hook: answers once ComfyUI is ready",
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _json({"type": "object"}, "not ready within --ready-timeout"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of this instance (text format 0.0.4)",
                    "responses": {
                        "200": {
                            "description": "exposition text",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": ERROR,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
                }
            },
        },
        "components": {
            "schemas": {
                **definitions,
                "TaskRecord": record_schema,
                "NodeProgressWithResults": {
                    **node_schema,
                    "properties": {
                        **node_schema["properties"],
                        "results": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Workflow": {
                    "description": "API-format workflow, bare or as ComfyUI's {prompt: ...}",
                    "anyOf": [
                        _ref("NodeMap"),
                        {
                            "type": "object",
                            "required": ["prompt"],
                            "properties": {"prompt": _ref("NodeMap")},
                        },
                    ],
                },
                "NodeMap": {
                    "type": "object",
                    "description": "node id -> {class_type, inputs}; at least one node",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": "object",
                        "required": ["class_type"],
                        "properties": {
                            "class_type": {"type": "string", "minLength": 1},
                            "inputs": {"type": "object"},
                        },
                    },
                },
                "App": APP_SCHEMA,
                "Panel": PANEL_SCHEMA,
                "AppRunBody": {
                    "type": "object",
                    "properties": {
                        "params": {
                            "type": "object",
                            "description": "parameter name (`<node id>.<input>`) -> value;"
                            " numbers may be given as text",
                        }
                    },
                },
                "Readiness": {
                    "type": "object",
                    "required": ["ready", "comfyui", "accepting"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "comfyui": {"type": "string"},
                        "accepting": {"type": "boolean"},
                        "restarts": {"type": "integer"},
                        "active_tasks": {"type": "integer"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["message", "error"],
                    "properties": {"message": {"type": "string"}, "error": {}},
                },
            }
        },
    }
