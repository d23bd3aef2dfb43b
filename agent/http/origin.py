"""Which browser origins may use the agent, and the origin ComfyUI is shown instead.

Browsers send `Origin` on every cross-origin request, on module scripts and stylesheets
loaded in CORS mode, on every non-GET request and on every websocket handshake. ComfyUI
refuses (403) a request whose `Origin` differs from its `Host` when that host is loopback,
so other web sites cannot drive a local ComfyUI. Behind the agent, ComfyUI's `Host` is its
own loopback address, never the address the browser used, so the agent takes that decision
itself and forwards only what it allowed, with `Origin` rewritten to ComfyUI's own origin.

A request is allowed when it carries no `Origin` (non-browser clients, plain navigations),
when its `Origin` is the agent's own address as the client sees it, or when `--cors-origins`
lists it. The agent's address is the `Host` header, or the first `X-Forwarded-Host` (a
reverse proxy or Function Compute's domain in front), with the scheme from the first
`X-Forwarded-Proto` when present. These forwarded headers are trusted without a list of
proxies: in a browser, a page of another site cannot set them without a CORS preflight,
which the agent refuses for origins it does not allow; a non-browser client can forge any
header, `Origin` included, and is held off by the token, not by this check.

Unlike ComfyUI, the check holds for every host, not only loopback ones: the agent is
usually reached under a public name, where ComfyUI's rule would switch itself off. A `Host`
without a port, when no `X-Forwarded-Proto` tells the scheme (TLS may end in front of the
agent), matches its host name on either scheme's default port (ComfyUI ignores the port
then, and the scheme always). `Origin: null` is refused (ComfyUI lets it through) unless
`--cors-origins *`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from yarl import URL

from agent.errors import ApiError

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Address:
    """A scheme (None: unknown), a lower-cased host name and a port (None: not given)."""

    scheme: str | None
    host: str
    port: int | None


def parse_origin(origin: str) -> Address | None:
    """The `Origin` header as an address, or None when it is no http(s) origin (`null`)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return Address(scheme, parts.hostname.lower(), port)


def parse_host(host: str, scheme: str | None) -> Address | None:
    """A `Host` / `X-Forwarded-Host` value seen under scheme (None: unknown), or None."""
    try:
        parts = urlsplit("//" + host.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    known = scheme.lower() if scheme and scheme.lower() in DEFAULT_PORTS else None
    return Address(known, parts.hostname.lower(), port)


def same_origin(origin: Address, agent: Address) -> bool:
    """True when a page at origin is the agent's own address."""
    if origin.host != agent.host:
        return False
    if agent.scheme is not None and _http_scheme(agent.scheme) != origin.scheme:
        return False
    origin_port = origin.port or DEFAULT_PORTS[origin.scheme or "http"]
    if agent.port is not None:
        return origin_port == agent.port
    if agent.scheme is not None:
        return origin_port == DEFAULT_PORTS[agent.scheme]
    # No port and no scheme: the client used the default port of a scheme the agent cannot
    # see (TLS may end in front of it), so any origin on its own scheme's default port is it.
    return origin_port == DEFAULT_PORTS[origin.scheme or "http"]


def _http_scheme(scheme: str) -> str:
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


def _first(value: str | None) -> str | None:
    # Proxies append to these lists; the first entry is what the client itself used.
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def agent_addresses(headers: Mapping[str, str]) -> list[Address]:
    """The agent's own address(es) as the client sees them, from the request headers."""
    proto = _first(headers.get("X-Forwarded-Proto"))
    found: list[Address] = []
    for value in (_first(headers.get("X-Forwarded-Host")), headers.get("Host")):
        if value:
            address = parse_host(value, proto)
            if address is not None:
                found.append(address)
    return found


def is_same_origin_request(headers: Mapping[str, str]) -> bool:
    """True when the request's `Origin` is the agent's own address as its client sees it."""
    origin = parse_origin(headers.get("Origin", ""))
    if origin is None:
        return False
    return any(same_origin(origin, agent) for agent in agent_addresses(headers))


def upstream_origin(base_url: str) -> str:
    """The origin ComfyUI at base_url counts as its own (what its Host header will say)."""
    return str(URL(base_url).origin())


class OriginGuard:
    """Refuses requests from browser origins that are neither the agent's own nor listed."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self._allowed = allowed

    def allows(self, headers: Mapping[str, str]) -> bool:
        """True when a request with these headers may go on."""
        origin = headers.get("Origin")
        if origin is None:
            return True
        return is_same_origin_request(headers) or self._allowed(origin)

    def check(self, request: web.Request) -> None:
        """Raise 403 `OriginNotAllowed` for a foreign origin."""
        if not self.allows(request.headers):
            raise ApiError(
                403,
                "OriginNotAllowed",
                f"requests from {request.headers['Origin']!r} may not use this agent:"
                " not its own address and not in --cors-origins",
            )
