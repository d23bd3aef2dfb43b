"""The OpenAPI document of the agent's own routes (GET /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from agent import __version__
from store.records import NodeProgress, TaskRecord


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "error: {message: ErrorType, error: detail}")
TASK_ID_HEADER = {
    "name": "task-id",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"},
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
        "schema": {"type": "string"},
        "description": "upload outputs to s3://BUCKET/PREFIX?endpoint=URL&region=R",
    },
    {
        "name": "X-Webhook-Url",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "format": "uri"},
        "description": "POST task.succeeded / task.failed / task.interrupted here (signed)",
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
WORKFLOW_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _ref("Workflow")}},
}
TASK_PATH_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
APP_PATH_ID = {"name": "app_id", "in": "path", "required": True, "schema": {"type": "string"}}
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
    record_schema = TaskRecord.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = record_schema.pop("$defs", {})
    node_schema = NodeProgress.model_json_schema()
    progress_map = {"type": "object", "additionalProperties": _ref("NodeProgressWithResults")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "comfyui-agent", "version": __version__},
        "paths": {
            "/api/run": {
                "post": {
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
                    "summary": "The stored progress map of a task",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(progress_map, "the progress map"),
                        "400": ERROR,
                        "401": ERROR,
                        "404": ERROR,
                    },
                }
            },
            "/api/tasks": {
                "post": {
                    "summary": "Start a workflow in the background",
                    "parameters": [TASK_ID_HEADER, *DELIVERY_PARAMETERS],
                    "requestBody": WORKFLOW_BODY,
                    "responses": {
                        "200": _json(_ref("TaskRecord"), "the task already succeeded"),
                        "202": _json(_ref("TaskRecord"), "started (or already running)"),
                        **{code: ERROR for code in ("400", "401", "413", "422", "429", "503")},
                    },
                }
            },
            "/api/tasks/{task_id}": {
                "get": {
                    "summary": "The task record",
                    "parameters": [TASK_PATH_ID],
                    "responses": {
                        "200": _json(_ref("TaskRecord"), "the record"),
                        **{code: ERROR for code in ("400", "401", "404")},
                    },
                },
                "delete": {
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
                    "summary": "Every app (saved workflow with a parameter panel)",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("App")}, "the apps"),
                        "401": ERROR,
                    },
                }
            },
            "/api/apps/{app_id}": {
                "get": {
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
                    "summary": "Run an app with parameters; answers as POST /api/run does",
                    "parameters": [APP_PATH_ID, TASK_ID_HEADER, RESULTS_QUERY],
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
                    "summary": "Start an app in the background; answers as POST /api/tasks does",
                    "parameters": [APP_PATH_ID, TASK_ID_HEADER],
                    "requestBody": APP_RUN_BODY,
                    "responses": {
                        "200": _json(_ref("TaskRecord"), "the task already succeeded"),
                        "202": _json(_ref("TaskRecord"), "started (or already running)"),
                        **{code: ERROR for code in ("400", "401", "404", "413", "422", "429")},
                        "503": ERROR,
                    },
                }
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "ComfyUI ready",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not"}},
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
                    "type": "object",
                    "description": "API-format workflow: node id -> {class_type, inputs}",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["class_type"],
                        "properties": {
                            "class_type": {"type": "string"},
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
                "Error": {
                    "type": "object",
                    "required": ["message", "error"],
                    "properties": {"message": {"type": "string"}, "error": {}},
                },
            }
        },
    }
