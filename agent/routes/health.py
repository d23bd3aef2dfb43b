"""/healthz (the process answers) and /readyz (ComfyUI is ready for work)."""

from __future__ import annotations

from aiohttp import web

from agent.services import services


async def healthz(request: web.Request) -> web.Response:
    """200 while the agent process runs."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when ComfyUI answers and the agent accepts work, else 503 + Retry-After."""
    svc = services(request)
    body = {
        "ready": svc.backend.ready and svc.runner.accepting,
        "comfyui": svc.backend.state,
        "accepting": svc.runner.accepting,
        "restarts": svc.backend.restarts,
        "active_tasks": len(svc.runner.active),
    }
    if body["ready"]:
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": "5"})
