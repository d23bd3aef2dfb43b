"""/healthz (the process answers) and /readyz (ComfyUI is ready for work)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from agent.openapi import openapi_document
from agent.services import Services, services


async def healthz(request: web.Request) -> web.Response:
    """200 while the agent process runs."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when ComfyUI answers and the agent accepts work, else 503 + Retry-After."""
    svc = services(request)
    warmed = svc.warmup is None or svc.warmup.done.is_set()
    body = {
        "ready": svc.backend.ready and svc.runner.accepting and warmed,
        "comfyui": svc.backend.state,
        "accepting": svc.runner.accepting,
        "restarts": svc.backend.restarts,
        "active_tasks": len(svc.runner.active),
        "warmed_up": warmed,
    }
    if body["ready"]:
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": "5"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this instance."""
    svc = services(request)
    apps = await svc.apps.apps()
    # Off the loop: the process collector reads /proc on every scrape (metrics are
    # thread-safe in prometheus-client).
    text = await asyncio.to_thread(
        svc.runner.metrics.render,
        queue_depth=len(svc.runner.active),
        child_restarts=svc.backend.restarts,
        comfyui_ready=svc.backend.ready,
        apps_loaded=len(apps),
        apps_broken=len(svc.apps.problems),
    )
    # The exposition format's own content type (text format 0.0.4).
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def initialize(request: web.Request) -> web.Response:
    """FC's initializer hook: answer once ComfyUI is ready and warmed up (bounded)."""
    svc = services(request)
    if await svc.backend.wait_ready(svc.settings.ready_timeout) and await _warmed_up(svc):
        return web.json_response({"ready": True})
    body = {"ready": False, "comfyui": svc.backend.state}
    return web.json_response(body, status=503, headers={"Retry-After": "5"})


async def _warmed_up(svc: Services) -> bool:
    """Wait for the warm-up (at most --warmup-timeout plus a margin); True once it ended."""
    if svc.warmup is None:
        return True
    try:
        async with asyncio.timeout(svc.settings.warmup_timeout + 30):
            await svc.warmup.done.wait()
    except TimeoutError:
        return False
    return True


async def pre_stop(request: web.Request) -> web.Response:
    """FC's preStop hook: let running tasks finish (up to --shutdown-grace), store states.

    FC may call it before freezing an instance as well as before destroying it, so it
    drains without refusing new work or stopping ComfyUI; SIGTERM does the stopping.
    """
    svc = services(request)
    left = await svc.runner.drain(svc.settings.shutdown_grace)
    return web.json_response({"unfinished_tasks": left, "unsaved_records": len(svc.runner.unsaved)})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of the agent's routes."""
    return web.json_response(openapi_document())
