"""Pass-through of every other path to ComfyUI (HTTP and websocket), so its web UI works.

`--proxy readonly` lets only GET/HEAD through (ComfyUI's API can write files and queue
work); `--proxy none` answers 404 for everything that is not the agent's own.

A request that reaches the pass-through with an `Origin` was allowed by the agent's origin
guard (`agent.http.origin`), so ComfyUI is shown its own origin instead: its origin check
compares `Origin` with its loopback `Host` and would refuse the browser's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Mapping

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from agent.errors import ApiError, unavailable
from agent.http.origin import upstream_origin
from agent.services import services

log = logging.getLogger("agent.proxy")

# RFC 7230 hop-by-hop headers, plus those aiohttp recomputes for the new message.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
READONLY_METHODS = frozenset({"GET", "HEAD"})


def _forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        # CORS is the agent's policy (--cors-origins), whatever ComfyUI's own flags say.
        if lowered not in HOP_BY_HOP and not lowered.startswith("access-control-"):
            result.add(name, value)
    return result


def _as_own_origin(headers: CIMultiDict[str], base_url: str) -> CIMultiDict[str]:
    # The origin guard allowed this Origin; ComfyUI compares it with its own Host.
    if "Origin" in headers:
        headers["Origin"] = upstream_origin(base_url)
    return headers


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward the request to ComfyUI and stream its answer back."""
    svc = services(request)
    mode = svc.settings.proxy
    if mode == "none":
        raise ApiError(404, "NotFound", f"{request.path} is not an agent route (proxy disabled)")
    is_websocket = request.headers.get("upgrade", "").lower() == "websocket"
    if mode == "readonly" and request.method not in READONLY_METHODS and not is_websocket:
        raise ApiError(405, "MethodNotAllowed", "the ComfyUI pass-through is read-only here")
    base_url = svc.settings.comfyui_base_url
    target = base_url + request.rel_url.path_qs
    if is_websocket:
        headers = _as_own_origin(_client_ws_headers(request), base_url)
        return await _proxy_websocket(request, svc.session, target, headers)
    headers = _as_own_origin(_forward_headers(request.headers), base_url)
    return await _proxy_http(request, svc.session, target, headers)


async def _proxy_http(
    request: web.Request,
    session: aiohttp.ClientSession,
    target: str,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    body = request.content if request.body_exists else None
    try:
        async with session.request(
            request.method,
            target,
            headers=headers,
            data=body,
            allow_redirects=False,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=_forward_headers(upstream.headers),
            )
            if upstream.content_length is not None and request.method != "HEAD":
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise unavailable(f"ComfyUI is not reachable: {exc!r}") from exc


async def _proxy_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    target: str,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    ws_target = "ws" + target[len("http") :]
    try:
        upstream = await session.ws_connect(
            ws_target, headers=headers, max_msg_size=0, heartbeat=30.0
        )
    except aiohttp.WSServerHandshakeError as exc:
        # ComfyUI answered, but not with 101: its own status and body, not "unavailable".
        return await _refused_handshake(session, target, headers, exc)
    except (aiohttp.ClientError, OSError) as exc:
        raise unavailable(f"ComfyUI websocket not reachable: {exc!r}") from exc
    client = web.WebSocketResponse(max_msg_size=0, heartbeat=30.0)
    await client.prepare(request)
    async with upstream:
        to_upstream = asyncio.create_task(_pipe(client, upstream))
        to_client = asyncio.create_task(_pipe(upstream, client))
        _, pending = await asyncio.wait(
            {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await client.close()
    return client


def _client_ws_headers(request: web.Request) -> CIMultiDict[str]:
    # Only what ComfyUI may look at; websocket handshake headers are made anew.
    keep = ("cookie", "authorization", "origin", "user-agent")
    return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() in keep)


async def _refused_handshake(
    session: aiohttp.ClientSession,
    target: str,
    headers: CIMultiDict[str],
    refused: aiohttp.WSServerHandshakeError,
) -> web.Response:
    """ComfyUI's own answer to a websocket handshake it refused, status and body."""
    if refused.status == 101:  # it switched protocols but answered a broken handshake
        raise ApiError(502, "ComfyUIBadHandshake", f"ComfyUI's websocket handshake: {refused}")
    # aiohttp drops the refusal's body; ask once more, as a plain upgrade request, to read it.
    handshake = CIMultiDict(headers)
    handshake.update(
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        }
    )
    try:
        async with session.get(
            target, headers=handshake, allow_redirects=False, auto_decompress=False
        ) as again:
            if again.status == refused.status:
                return web.Response(
                    status=again.status,
                    reason=again.reason,
                    body=await again.read(),
                    headers=_forward_headers(again.headers),
                )
    except (aiohttp.ClientError, OSError) as exc:
        log.warning("could not read ComfyUI's websocket refusal: %r", exc)
    status_headers = _forward_headers(refused.headers or {})
    return web.Response(status=refused.status, headers=status_headers)


async def _pipe(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
            break
    await sink.close()
