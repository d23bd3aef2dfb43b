"""Bearer-token authentication and CORS for the agent's HTTP surface.

Auth: with `--token`, every route but health, readiness and Function Compute's lifecycle
hooks needs `Authorization: Bearer <token>` (compared in constant time). Browsers cannot
set that header on page loads or websockets, so `?token=` is accepted too and answered
with an HttpOnly cookie, which makes the proxied ComfyUI web page usable after opening
`/?token=...` once.

CORS: only origins listed in `--cors-origins` get CORS headers; `*` allows any origin but
never with credentials (the Go agent reflected any Origin with credentials allowed).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

from aiohttp import web

from agent.errors import ApiError

TOKEN_COOKIE = "comfyui_agent_token"
# Reachable without a token: liveness/readiness probes and FC's lifecycle hooks carry none.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/initialize", "/pre-stop"})
# ComfyUI's own routes, reached through the pass-through, use PUT and PATCH too.
CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, task-id, X-Fc-Invocation-Type, X-Fc-Async-Task-Id"
CORS_EXPOSED = "X-Task-Id, X-Task-Status, Location, Retry-After"
_SET_COOKIE = web.RequestKey("set_token_cookie", bool)


class TokenCheck:
    """Refuses requests without the bearer token (401 JSON); see the module docstring."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._expected)

    def check(self, request: web.Request) -> None:
        """Raise 401 unless the request carries the token (or needs none)."""
        if request.path in OPEN_PATHS or is_preflight(request):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self._matches(credentials.strip()):
            return
        if self._matches(request.cookies.get(TOKEN_COOKIE)):
            return
        if self._matches(request.query.get("token")):
            # Set when the response is prepared: proxied answers are streamed from inside
            # the handler, too late for the front door to add a header.
            request[_SET_COOKIE] = True
            return
        raise ApiError(
            401,
            "Unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="comfyui-agent"'},
        )


def token_cookie_setter(token: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Response-prepare signal: hand the token back as a cookie after a `?token=` login."""

    cookie = SimpleCookie()
    cookie[TOKEN_COOKIE] = token
    morsel = cookie[TOKEN_COOKIE]
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = "/"
    header = morsel.OutputString()

    async def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
        # response.set_cookie() is too late here: aiohttp has already turned the response's
        # cookies into headers when this signal runs.
        if request.get(_SET_COOKIE, False) and not isinstance(response, web.WebSocketResponse):
            response.headers.add("Set-Cookie", header)

    return set_cookie


def is_preflight(request: web.Request) -> bool:
    """A browser's CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)."""
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


class CorsPolicy:
    """Which origins may call the agent from a browser, and the headers that say so."""

    def __init__(self, origins: list[str]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        """True when some origin is allowed."""
        return self._any or bool(self._origins)

    def allows(self, origin: str) -> bool:
        """True when a page at origin may call the agent (and, through it, ComfyUI)."""
        return bool(self.headers_for(origin))

    def headers_for(self, origin: str | None) -> dict[str, str]:
        """CORS response headers for a request from origin (empty: not allowed)."""
        if not origin:
            return {}
        if origin.rstrip("/") in self._origins:
            # A listed origin may send credentials (cookies, Authorization).
            return {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": CORS_EXPOSED,
                "Vary": "Origin",
            }
        if self._any:
            return {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": CORS_EXPOSED,
            }
        return {}

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a CORS preflight (403 for origins not allowed); None for others."""
        if not is_preflight(request):
            return None
        allowed = self.headers_for(request.headers.get("Origin"))
        if not allowed:
            raise ApiError(403, "CorsOriginNotAllowed", "this origin may not call the agent")
        requested = request.headers.get("Access-Control-Request-Headers")
        headers = {
            **allowed,
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": requested or CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Signal handler: set CORS headers on every response (streamed ones too)."""
        if "Access-Control-Allow-Origin" in response.headers:
            return  # a preflight answer, complete already
        for name, value in self.headers_for(request.headers.get("Origin")).items():
            response.headers[name] = value
