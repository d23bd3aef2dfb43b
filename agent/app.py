"""Wiring: build the aiohttp application and the objects it runs on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import WSCloseCode, web

from agent.address_policy import AddressPolicy
from agent.answer_cache import AnswerCache
from agent.apps.registry import AppRegistry
from agent.delivery.hooks import Delivery
from agent.delivery.metrics import DeliveryMetrics
from agent.delivery.output_files import OutputFiles, output_dir_from_command
from agent.delivery.uploads import Uploader
from agent.delivery.warmup import Warmup
from agent.delivery.webhook import WebhookSender
from agent.errors import ApiError
from agent.http.front_door import FrontDoor, Handler
from agent.inputs import parse_input_specs
from agent.metrics import Metrics
from agent.prepare import WorkflowPreparer
from agent.proxy import proxy
from agent.routes.apps import create_app_task, get_app, list_apps, run_app
from agent.routes.health import healthz, initialize, metrics, openapi, pre_stop, readyz
from agent.routes.pages import PAGE_ASSETS, apps_page, apps_redirect, apps_static
from agent.routes.run import run_sync
from agent.routes.run_ws import run_ws
from agent.routes.status import get_status
from agent.routes.tasks import create_task, delete_task, get_task
from agent.runner import RunOptions, TaskRunner
from agent.security import CorsPolicy, token_cookie_setter
from agent.services import SERVICES, Services
from agent.settings import AgentSettings
from agent.url_fetch import UrlFetcher
from agent.web.assets import PageAssets
from comfyui.backend import ComfyUIBackend
from comfyui.client import ComfyUIClient
from comfyui.event_stream import EventStream
from store.factory import open_store
from store.records import TaskError

log = logging.getLogger("agent.app")


async def method_not_allowed(request: web.Request) -> web.Response:
    """The agent's own routes answer 405 for other methods instead of reaching ComfyUI."""
    error = f"{request.method} is not allowed on {request.path}"
    # RFC 9110: a 405 lists the methods the resource supports.
    allow = ", ".join(_allowed_methods(request))
    raise ApiError(405, "MethodNotAllowed", error, headers={"Allow": allow})


def _allowed_methods(request: web.Request) -> list[str]:
    """The methods registered for the matched path, on any of its resources."""
    canonical = request.match_info.route.resource
    path = canonical.canonical if canonical is not None else request.path
    methods = {
        route.method
        for resource in request.app.router.resources()
        if resource.canonical == path
        for route in resource
        if route.method != "*"
    }
    return sorted(methods)


def create_app(settings: AgentSettings, backend: ComfyUIBackend) -> web.Application:
    """The agent's application; its services start with it and stop with it."""
    cors = CorsPolicy(settings.cors_origins)
    front = FrontDoor(cors, settings.token)
    app = web.Application(client_max_size=settings.max_body)
    if settings.token:
        app.on_response_prepare.append(token_cookie_setter(settings.token))
    if cors.enabled:
        app.on_response_prepare.append(cors.on_prepare)

    def add(method: str, path: str, handler: Handler) -> None:
        if method == "GET":  # and HEAD, as add_get does
            app.router.add_get(path, front.wrap(handler))
        else:
            app.router.add_route(method, path, front.wrap(handler))

    add("POST", "/api/run", run_sync)
    add("GET", "/api/run/ws", run_ws)
    add("GET", "/api/status", get_status)
    # Before POST /api/tasks: the router tries both for /api/tasks/..., polls come first.
    add("GET", "/api/tasks/{task_id}", get_task)
    add("DELETE", "/api/tasks/{task_id}", delete_task)
    add("POST", "/api/tasks", create_task)
    add("GET", "/api/apps", list_apps)
    add("GET", "/api/apps/{app_id}", get_app)
    add("POST", "/api/apps/{app_id}/run", run_app)
    add("POST", "/api/apps/{app_id}/tasks", create_app_task)
    app[PAGE_ASSETS] = PageAssets.load()
    add("GET", "/apps", apps_redirect)
    add("GET", "/apps/", apps_page)
    add("GET", "/apps/static/{name}", apps_static)
    add("GET", "/apps/{app_id}", apps_page)
    add("GET", "/healthz", healthz)
    add("GET", "/readyz", readyz)
    add("GET", "/metrics", metrics)
    add("GET", "/api/openapi.json", openapi)
    # Function Compute's instance lifecycle hooks for custom containers.
    add("POST", "/initialize", initialize)
    add("*", "/pre-stop", pre_stop)
    own_paths = (
        "/api/run",
        "/api/run/ws",
        "/api/status",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/openapi.json",
        "/api/apps",
        "/api/apps/{app_id}",
        "/api/apps/{app_id}/run",
        "/api/apps/{app_id}/tasks",
        "/apps",
        "/apps/",
        "/apps/static/{name}",
        "/apps/{app_id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/initialize",
    )
    for path in own_paths:
        add("*", path, method_not_allowed)
    add("*", "/{tail:.*}", proxy)
    app.cleanup_ctx.append(_services_context(settings, backend))
    app.on_shutdown.append(_close_websockets)
    return app


async def _close_websockets(app: web.Application) -> None:
    """Tell every open client websocket the agent stops, and close it (going away)."""
    svc = app.get(SERVICES)
    if svc is None:
        return
    svc.runner.accepting = False
    message = {"type": "error", "data": {"message": "ShuttingDown", "error": "the agent stops"}}
    for ws in list(svc.websockets):
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(message)
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"agent shutting down")


def _output_dir(settings: AgentSettings) -> Path | None:
    """Where ComfyUI writes outputs, when the agent can tell (else files come over /view)."""
    if settings.comfyui_output_dir is not None:
        return settings.comfyui_output_dir
    if settings.comfyui_url:
        return None
    found = output_dir_from_command(settings.command or settings.comfyui_args)
    if found is None and not settings.command and settings.comfyui_dir is not None:
        return settings.comfyui_dir / "output"
    return found


def _services_context(
    settings: AgentSettings, backend: ComfyUIBackend
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        store = open_store(
            settings.store, ttl=settings.task_ttl or None, instance=settings.instance
        )
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=100),
        )
        base_url = backend.base_url
        client = ComfyUIClient(base_url, session)
        events = EventStream(base_url, session)
        fetcher = UrlFetcher(
            AddressPolicy(settings.url_fetch_allow),
            max_bytes=settings.max_input_bytes,
            timeout=settings.url_fetch_timeout,
        )
        preparer = WorkflowPreparer(
            client,
            fetcher,
            image_inputs=parse_input_specs(settings.image_inputs),
            max_input_bytes=settings.max_input_bytes,
        )
        metrics = Metrics()
        delivery_metrics = DeliveryMetrics(metrics.registry)
        # Read from ComfyUI's output directory when known (no /view round trip), for
        # uploads and for sync answers alike.
        output_files = OutputFiles(client, _output_dir(settings), on_read=metrics.output_read)
        delivery = Delivery(
            store=store,
            uploader=Uploader(
                output_files,
                delivery_metrics,
                concurrency=settings.upload_concurrency,
            ),
            webhooks=WebhookSender(
                AddressPolicy(settings.url_fetch_allow),
                secret=settings.webhook_secret or None,
                metrics=delivery_metrics,
                timeout=settings.webhook_timeout,
                attempts=settings.webhook_attempts,
                trusted_url=settings.webhook,
            ),
            policy=AddressPolicy(settings.url_fetch_allow),
            metrics=delivery_metrics,
            default_store=settings.output_store,
            optional=settings.output_store_optional,
        )
        runner = TaskRunner(
            client=client,
            events=events,
            store=store,
            backend=backend,
            instance=settings.instance,
            options=RunOptions(
                run_timeout=settings.run_timeout,
                ready_timeout=settings.ready_timeout,
                flush_interval=settings.store_flush_interval,
                lease=settings.task_lease,
            ),
            max_queue=settings.max_queue,
            prepare=preparer,
            hooks=delivery,
            metrics=metrics,
        )
        apps = AppRegistry(settings.apps, on_problem=lambda _: metrics.app_problem())
        warmup = Warmup(
            settings.warmup,
            runner=runner,
            backend=backend,
            metrics=delivery_metrics,
            timeout=settings.warmup_timeout,
            apps=apps,
        )

        def on_child_exit(code: int | None) -> None:
            preparer.forget_uploads()
            failed = runner.abort_all(
                TaskError(
                    type="comfyui_crashed",
                    message=f"ComfyUI exited unexpectedly (exit code {code}) during the run",
                    details={"exit_code": code},
                )
            )
            log.error("ComfyUI exited with code %s; %d running task(s) failed", code, failed)

        remove_listener = backend.add_exit_listener(on_child_exit)
        # A restarted child is ready: open the event websocket now, not after its back-off.
        remove_ready_listener = backend.add_ready_listener(events.kick)
        app[SERVICES] = Services(
            settings=settings,
            store=store,
            backend=backend,
            session=session,
            client=client,
            events=events,
            runner=runner,
            preparer=preparer,
            apps=apps,
            delivery=delivery,
            warmup=warmup,
            answers=AnswerCache(
                store,
                ttl=settings.task_ttl or None,
                local_runs=lambda: runner.finished_runs,
            ),
            output_files=output_files,
        )
        await output_files.start()
        await backend.start()
        events.start()
        warmup.start()
        try:
            yield
        finally:
            await warmup.stop()
            await runner.shutdown(settings.shutdown_grace)
            await delivery.close()
            output_files.close()
            remove_listener()
            remove_ready_listener()
            await events.stop()
            await backend.stop(grace=10.0)
            await fetcher.close()
            await client.close()
            await session.close()
            await store.close()

    return context
