"""ComfyUI 0.3.64's origin check (`create_origin_only_middleware` in its server.py), as is.

ComfyUI answers an empty 403 when a request carries both `Host` and `Origin`, the host name
in `Host` is loopback (an IP literal, or a name that resolves only to loopback addresses)
and `Host` differs from the `Origin`'s netloc, compared case-insensitively. When `Origin`
has no port, only `Host`'s host name is compared; when `Host` has no port, only the
`Origin`'s host name. The scheme is never looked at; an empty side (`Origin: null`) passes.
It also answers every OPTIONS request itself with an empty 200, without calling a route.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("fake_comfyui")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host: str) -> str | None:
    """The host name part of a `Host` header, the way ComfyUI splits it."""
    return urllib.parse.urlsplit("//" + host.lower()).hostname


def refused(host: str, origin: str, loopback: bool) -> bool:
    """True when ComfyUI answers 403 (loopback: whether `host_name(host)` is loopback).

    Raises ValueError for a port that is not a number, as ComfyUI does (its answer is 500).
    """
    host_domain: str | None = host.lower()
    parsed = urllib.parse.urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_domain_parsed = urllib.parse.urlsplit("//" + host.lower())
    if parsed.port is None:
        host_domain = host_domain_parsed.hostname
    if host_domain_parsed.port is None:
        origin_domain = parsed.hostname
    if loopback and host_domain and origin_domain:
        return host_domain != origin_domain
    return False


async def is_loopback(host: str | None) -> bool:
    """ComfyUI's is_loopback: an IP literal, else what the name resolves to (IPv4, IPv6)."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for *_, sockaddr in infos:
            if not ipaddress.ip_address(sockaddr[0]).is_loopback:
                return loopback
            loopback = True
    return loopback


@web.middleware
async def origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ComfyUI's middleware: 403 for a loopback Host with another Origin; OPTIONS → 200."""
    if "Host" in request.headers and "Origin" in request.headers:
        host, origin = request.headers["Host"], request.headers["Origin"]
        if refused(host, origin, await is_loopback(host_name(host))):
            log.warning(
                "WARNING: request with non matching host and origin %s != %s, returning 403",
                host,
                origin,
            )
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)
