"""Outbound HTTP that cannot reach internal addresses: the rules, the session, the errors.

What is refused (`FetchRefused`: the request breaks the rules, retrying cannot help): a
scheme other than http/https, a URL with user:password@ (credentials do not belong in a
workflow, which is stored in task records and logs), no host, a non-canonical numeric host
such as `2130706433` or `0x7f.1`, an address the `AddressPolicy` blocks (literal or
resolved). `FetchFailed`: the remote did not deliver. Used by URL inputs (agent.url_fetch)
and webhooks (agent.delivery.webhook).

How the address check holds: the session's connector uses a `PolicyResolver`, which
resolves a name once, checks every address it got (all must be allowed: one blocked
address refuses the host, so a name cannot mix a public and a private answer), and hands
exactly those addresses to the connector, which connects to nothing else. The connector's
DNS cache and keep-alive pooling are off, so every connection is made from a fresh, checked
answer and no second lookup can swap the address between check and connect (DNS
rebinding). aiohttp does not resolve IP literals, so `check_url` checks those before each
request. No proxy from the environment is used (a proxy would make the connection, not us).

Known limit: on an IPv6-only network whose DNS64 uses its own NAT64 prefix (not
64:ff9b::/96), a synthesized address of a private IPv4 host looks public.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from agent.address_policy import AddressPolicy

_ALLOWED_SCHEMES = ("http", "https")
_MAX_DISPLAY = 200
ALLOW_HINT = " (an operator can allow it with --url-fetch-allow)"


def display_url(url: str | URL) -> str:
    """The URL as error messages show it: no credentials, no query, bounded length."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        shown = str(parsed.with_user(None).with_query(None).with_fragment(None))
        if parsed.query_string:
            shown += "?…"  # query strings often carry signatures
    except (ValueError, TypeError):
        shown = str(url)
    if len(shown) > _MAX_DISPLAY:
        shown = shown[: _MAX_DISPLAY - 1] + "…"
    return shown


class FetchError(Exception):
    """A URL could not be fetched; the message is meant for the API user."""

    verb = "cannot fetch"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{self.verb} {display_url(url)}: {reason}")
        self.url = url
        self.reason = reason


class FetchRefused(FetchError):
    """The fetch breaks the rules (scheme, address, redirects, size); retrying cannot help."""

    verb = "refused to fetch"


class FetchFailed(FetchError):
    """The remote did not deliver (DNS, connect, timeout, HTTP error status)."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(url, reason)
        self.status = status


class AddressRefused(Exception):
    """Raised by `PolicyResolver` when a name resolves to a blocked address."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {reason}")
        self.host = host
        self.reason = reason


class PolicyResolver(AbstractResolver):
    """Resolves through `inner` and returns the answer only if every address is allowed."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's answer, or AddressRefused if any address is blocked."""
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"no address found for {host}")
        for result in results:
            try:
                ip = ipaddress.ip_address(result["host"])
            except ValueError:
                raise AddressRefused(host, f"an unusable address {result['host']!r}") from None
            reason = self._policy.check(host, ip)
            if reason is not None:
                raise AddressRefused(host, reason)
        return results

    async def close(self) -> None:
        """Nothing to release: the inner resolver belongs to whoever made it."""


class FencedSession:
    """A `fenced_session`, made on first use and remade after close (the resolver too)."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: AbstractResolver | None,
        *,
        connect_timeout: float,
        user_agent: str,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._owned_resolver: AbstractResolver | None = None
        self._connect_timeout = connect_timeout
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session (made now if needed: aiohttp wants the running loop)."""
        if self._session is None or self._session.closed:
            inner = self._resolver
            if inner is None:
                inner = self._owned_resolver = DefaultResolver()
            self._session = fenced_session(
                self._policy,
                inner,
                connect_timeout=self._connect_timeout,
                user_agent=self._user_agent,
            )
        return self._session

    async def close(self) -> None:
        """Close the session and the resolver it made; get() makes new ones."""
        session, self._session = self._session, None
        owned, self._owned_resolver = self._owned_resolver, None
        if session is not None:
            await session.close()
        if owned is not None:
            await owned.close()


def fenced_session(
    policy: AddressPolicy,
    resolver: AbstractResolver,
    *,
    connect_timeout: float,
    user_agent: str,
) -> aiohttp.ClientSession:
    """A session that connects only to addresses `policy` allows (see the module docstring)."""
    connector = aiohttp.TCPConnector(
        resolver=PolicyResolver(policy, resolver),
        use_dns_cache=False,  # every connection gets a fresh, checked answer
        force_close=True,  # and no pooled connection outlives the check it passed
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,  # an env proxy would connect on our behalf, unchecked
        cookie_jar=aiohttp.DummyCookieJar(),  # fetches of different users share nothing
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        headers={hdrs.USER_AGENT: user_agent, hdrs.ACCEPT: "*/*"},
    )


def check_url(policy: AddressPolicy, url: str, current: URL, where: str = "") -> None:
    """Refuse a URL by its scheme, credentials or IP literal host, before any request.

    Raises FetchRefused; a host name passes here (PolicyResolver checks its addresses).
    """
    if current.scheme not in _ALLOWED_SCHEMES:
        scheme = current.scheme or "none"
        raise FetchRefused(url, f"{where}scheme {scheme!r} is not allowed (http or https)")
    if current.raw_user is not None or current.raw_password is not None:
        raise FetchRefused(url, f"{where}URLs with user:password@ are not accepted")
    host = current.raw_host
    if not host:
        raise FetchRefused(url, f"{where}the URL has no host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if _is_legacy_ipv4(host) or ":" in host:
            raise FetchRefused(url, f"{where}{host!r} is not a canonical IP address") from None
        return  # a name: PolicyResolver checks what it resolves to
    reason = policy.check(host, ip)
    if reason is not None:
        raise FetchRefused(url, f"{where}{reason}{ALLOW_HINT}")


def _is_legacy_ipv4(host: str) -> bool:
    """Whether the C library reads `host` as an IPv4 address (`127.1`, `0x7f000001`, ...)."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True
