"""The delivery a request asks for (output store, presign, webhook, format), checked."""

from __future__ import annotations

from aiohttp import web

from agent.delivery.hooks import DeliveryRefused
from agent.delivery.plan import DeliveryDefaults, DeliveryPlan, PlanError, parse_plan
from agent.errors import ApiError, bad_request
from agent.services import Services


def delivery_defaults(svc: Services) -> DeliveryDefaults:
    """The agent-wide delivery settings."""
    settings = svc.settings
    return DeliveryDefaults(
        output_store=settings.output_store,
        presign=settings.output_store_presign,
        webhook_url=settings.webhook,
    )


async def request_plan(svc: Services, request: web.Request) -> DeliveryPlan:
    """The request's plan: 400 for malformed values, 422 for a store or URL refused."""
    try:
        plan = parse_plan(request.headers, request.query, delivery_defaults(svc))
    except PlanError as exc:
        raise bad_request(str(exc)) from exc
    if svc.delivery is not None:
        try:
            await svc.delivery.check(plan)
        except DeliveryRefused as exc:
            raise ApiError(422, "DeliveryRefused", str(exc)) from exc
    return plan


def answer_mode(request: web.Request, plan: DeliveryPlan, mode: str) -> str:
    """Presigned URLs replace base64 in the answer unless `?results=` asks for both."""
    if plan.presign_asked and "results" not in request.query:
        return "none"
    return mode
