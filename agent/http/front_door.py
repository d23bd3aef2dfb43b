"""The gate every request of the agent passes before its handler, and the JSON errors after.

In order: CORS preflights are answered (agent.security, with `--cors-origins`), browser
requests from foreign origins refused (agent.http.origin), the bearer token checked (with
`--token`); whatever the handler raises is answered as JSON `{"message", "error"}`, never
a traceback.

It wraps each route's handler when the route is added, instead of being aiohttp
middlewares: with any middleware, aiohttp also runs one of its own on every request and
calls each through its chain, which cost a status poll answered from memory about a tenth
of its throughput. A request with no Origin header, to an agent without a token, goes
straight to its handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.errors import ApiError
from agent.http.origin import OriginGuard
from agent.security import CorsPolicy, TokenCheck

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("agent.app")


class FrontDoor:
    """CORS preflights, the origin guard, the token and JSON errors, around each handler."""

    def __init__(self, cors: CorsPolicy, token: str | None) -> None:
        self._cors = cors if cors.enabled else None
        self._guard = OriginGuard(cors.allows)
        self._token = TokenCheck(token) if token else None

    def wrap(self, handler: Handler) -> Handler:
        """The handler behind the front door."""
        cors, guard, token = self._cors, self._guard, self._token

        @functools.wraps(handler)  # inspect.unwrap() finds the route's own handler
        async def door(request: web.Request) -> web.StreamResponse:
            try:
                if token is not None or "Origin" in request.headers:
                    if cors is not None and (answer := cors.preflight(request)) is not None:
                        return answer
                    guard.check(request)
                    if token is not None:
                        token.check(request)
                return await handler(request)
            except ApiError as exc:
                return exc.response()
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return http_error(exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                error = "unexpected agent error; see the agent log"
                return web.json_response({"message": "InternalError", "error": error}, status=500)

        return door


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's HTTP error (413 from a body too large, say) as the agent's JSON error."""
    name = (exc.reason or "HTTPError").title().replace(" ", "")
    body = {"message": name, "error": exc.text or exc.reason}
    keep = ("Allow", "Retry-After")
    headers = {k: v for k, v in exc.headers.items() if k in keep}
    return web.json_response(body, status=exc.status, headers=headers)
