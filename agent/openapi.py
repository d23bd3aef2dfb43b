"""The OpenAPI document of the agent's own routes (GET /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.openapi_parts import (
    APP_PATH_ID,
    APP_RUN_BODY,
    APP_SCHEMA,
    DELIVERY_PARAMETERS,
    ERROR,
    PANEL_SCHEMA,
    RESULTS_QUERY,
    TASK_ID_HEADER,
    TASK_ID_SCHEMA,
    TASK_LINKS,
    TASK_PATH_ID,
    WORKFLOW_BODY,
    json_body,
    ref,
)
from store.records import NodeProgress, TaskRecord


def openapi_document() -> dict[str, Any]:
    """The whole document (built on request: it is small and never hot)."""
    template = "#/components/schemas/{model}"
    record_schema = TaskRecord.model_json_schema(ref_template=template)
    definitions = record_schema.pop("$defs", {})
    node_schema = NodeProgress.model_json_schema(ref_template=template)
    definitions.update(node_schema.pop("$defs", {}))
    progress_map = {"type": "object", "additionalProperties": ref("NodeProgressWithResults")}
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
                        "200": json_body(progress_map, "the progress map with results"),
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
                        "200": json_body(progress_map, "the progress map"),
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
                            **json_body(ref("TaskRecord"), "the task already succeeded"),
                            **TASK_LINKS,
                        },
                        "202": {
                            **json_body(ref("TaskRecord"), "started (or already running)"),
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
                        "200": json_body(ref("TaskRecord"), "the record"),
                        **{code: ERROR for code in ("400", "401", "404", "503")},
                    },
                },
                "delete": {
                    "operationId": "deleteTask",
                    "summary": "Interrupt the task wherever it runs",
                    "parameters": [TASK_PATH_ID],
                    "responses": {
                        "202": json_body(ref("TaskRecord"), "interrupt requested"),
                        **{code: ERROR for code in ("400", "401", "404", "409", "503")},
                    },
                },
            },
            "/api/apps": {
                "get": {
                    "operationId": "listApps",
                    "summary": "Every app (saved workflow with a parameter panel)",
                    "responses": {
                        "200": json_body({"type": "array", "items": ref("App")}, "the apps"),
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
                        "200": json_body(ref("App"), "the app"),
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
                        "200": json_body(progress_map, "the progress map with results"),
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
                        "200": json_body(ref("TaskRecord"), "the task already succeeded"),
                        "202": json_body(ref("TaskRecord"), "started (or already running)"),
                        **{code: ERROR for code in ("400", "401", "404", "413", "422", "429")},
                        "503": ERROR,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Alive (the process answers)",
                    "responses": {"200": json_body({"type": "object"}, "ok")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "ComfyUI ready and the agent accepting work",
                    "responses": {
                        "200": json_body(ref("Readiness"), "ready"),
                        "503": json_body(ref("Readiness"), "not ready (Retry-After)"),
                    },
                }
            },
            "/initialize": {
                "post": {
                    "operationId": "initialize",
                    "summary": "Function Compute's initializer hook: answers once ComfyUI is ready",
                    "responses": {
                        "200": json_body({"type": "object"}, "ready"),
                        "503": json_body({"type": "object"}, "not ready within --ready-timeout"),
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
                    "responses": {"200": json_body({"type": "object"}, "the OpenAPI document")},
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
                        ref("NodeMap"),
                        {
                            "type": "object",
                            "required": ["prompt"],
                            "properties": {"prompt": ref("NodeMap")},
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
