"""The apps web page: `GET /apps/` (the list) and `GET /apps/{id}` (one app's form).

Both answer the same HTML; its ES module reads the path and talks to the agent's own
API (`/api/apps`, `/api/run/ws`) only, so the page works with `--proxy none`.
"""

from __future__ import annotations

from aiohttp import web

from agent.errors import ApiError
from agent.services import services
from agent.web.assets import PAGE, SECURITY_HEADERS, Asset, PageAssets

PAGE_ASSETS = web.AppKey("page_assets", PageAssets)


async def apps_redirect(request: web.Request) -> web.Response:
    """`/apps` -> `/apps/` (so the page's relative links resolve), keeping the query."""
    query = f"?{request.query_string}" if request.query_string else ""
    raise web.HTTPPermanentRedirect(location=f"/apps/{query}")


async def apps_page(request: web.Request) -> web.Response:
    """The page shell, for the list and for every app (404 status for an unknown app)."""
    response = _answer(request, request.app[PAGE_ASSETS].files[PAGE])
    app_id = request.match_info.get("app_id")
    if app_id is not None and await services(request).apps.get(app_id) is None:
        response.set_status(404)  # the page itself says so, in words
    return response


async def apps_static(request: web.Request) -> web.Response:
    """The page's module and style sheet."""
    asset = request.app[PAGE_ASSETS].files.get(request.match_info["name"])
    if asset is None or request.match_info["name"] == PAGE:
        raise ApiError(404, "NotFound", f"{request.path} is not a file of the page")
    return _answer(request, asset)


def _answer(request: web.Request, asset: Asset) -> web.Response:
    # Revalidated on every load (no-cache), cheap with the ETag: an upgraded agent's page
    # is never mixed with a cached older module.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)
