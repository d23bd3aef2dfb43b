"""The app routes: list and describe apps, and run one by name.

`POST /api/apps/{id}/run` and `/tasks` are `/api/run` and `POST /api/tasks` with another
body reader: the app's workflow with the caller's parameters applied. Everything after
(task ids, FC async idempotency, `?results=`, errors) is the same code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.apps.panels import App
from agent.apps.params import ParamError, apply_params
from agent.errors import TASK_ERROR_STATUS, ApiError, bad_request
from agent.routes.common import RunRequest, check_image_inputs, read_json_body
from agent.routes.run import answer_run
from agent.routes.tasks import start_task
from agent.services import Services, services

BODY_KEYS = frozenset({"params", "app"})


async def list_apps(request: web.Request) -> web.Response:
    """Every app: `[{"id", "title", "description", "params", "prompt"}]`."""
    apps = await services(request).apps.apps()
    return web.json_response([app.describe() for app in apps.values()])


async def get_app(request: web.Request) -> web.Response:
    """One app, as the list shows it."""
    app = await known_app(services(request), request.match_info["app_id"])
    return web.json_response(app.describe())


async def run_app(request: web.Request) -> web.Response:
    """Run the app with the body's `params` and answer when it ends (as /api/run does)."""
    return await answer_run(request, read_app_run)


async def create_app_task(request: web.Request) -> web.Response:
    """Start the app with the body's `params` in the background (as POST /api/tasks does)."""
    return await start_task(request, read_app_run)


async def known_app(svc: Services, app_id: str) -> App:
    """The app with this id, or 404 AppNotFound."""
    app = await svc.apps.get(app_id)
    if app is None:
        raise ApiError(404, "AppNotFound", f"app {app_id} not found")
    return app


async def read_app_run(svc: Services, request: web.Request) -> RunRequest:
    """The run a `POST /api/apps/{id}/...` asks for: body `{"params": {...}}` (or none)."""
    app = await known_app(svc, request.match_info["app_id"])
    body: Any = {}
    if request.body_exists:
        body = await read_json_body(request, svc.settings.max_body)
    return app_run(svc, app, params_in_body(body, app.id))


def is_app_message(body: Any) -> bool:
    """True for a websocket first message naming an app: `{"app": id, "params": {...}}`."""
    return isinstance(body, dict) and isinstance(body.get("app"), str)


async def app_run_from_message(svc: Services, body: dict[str, Any]) -> RunRequest:
    """The run a websocket's `{"app", "params"}` first message asks for."""
    app = await known_app(svc, body["app"])
    return app_run(svc, app, params_in_body(body, app.id))


def params_in_body(body: Any, app_id: str) -> dict[str, Any]:
    """The `params` object of a body; 400 for anything else in it."""
    if not isinstance(body, dict):
        raise bad_request('body must be a JSON object: {"params": {"<node>.<input>": value}}')
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise bad_request(f"unknown body field(s) {', '.join(unknown)}; expected params")
    if "app" in body and body["app"] != app_id:
        raise bad_request(f"body names app {body['app']!r} but the path names {app_id!r}")
    params = body.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise bad_request('params must be an object: {"<node>.<input>": value}')
    return params


def app_run(svc: Services, app: App, params: dict[str, Any]) -> RunRequest:
    """The app's workflow with params applied; 422 ParamError / InputError before any task."""
    try:
        call = apply_params(app, params, max_image_bytes=svc.settings.max_input_bytes)
    except ParamError as exc:
        status, name = TASK_ERROR_STATUS["param_error"]
        raise ApiError(status, name, exc.detail()) from exc
    check_image_inputs(svc, call.workflow)
    return RunRequest(call.workflow, app=app.id, params=call.params)
