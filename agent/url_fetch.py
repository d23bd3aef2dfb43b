"""Fetch an image URL given in a workflow, without letting it reach internal addresses.

Refused (`FetchRefused`: the request breaks the rules, retrying cannot help): a scheme other
than http/https, a URL with user:password@ (credentials do not belong in a workflow, which
is stored in task records and logs), no host, a non-canonical numeric host such as
`2130706433` or `0x7f.1`, an address the `AddressPolicy` blocks (literal or resolved, on
the first request or after a redirect), more than `max_redirects` redirects, a body larger
than `max_bytes`.

Failed (`FetchFailed`: the remote did not deliver): DNS failure, connect or TLS error,
timeout, HTTP status >= 400 (`status` is set), a redirect without a usable Location, a
connection dropped mid-body.

How the address check holds: the session's connector uses a `PolicyResolver`, which
resolves a name once, checks every address it got (all must be allowed: one blocked
address refuses the host, so a name cannot mix a public and a private answer), and hands
exactly those addresses to the connector, which connects to nothing else. The connector's
DNS cache and keep-alive pooling are off, so every connection is made from a fresh, checked
answer and no second lookup can swap the address between check and connect (DNS
rebinding). aiohttp does not resolve IP literals, so `fetch` checks those itself before each
request. Redirects are followed here, not by aiohttp, so every hop is checked the same way.
No proxy from the environment is used (a proxy would make the connection, not us).

Known limit: on an IPv6-only network whose DNS64 uses its own NAT64 prefix (not
64:ff9b::/96), a synthesized address of a private IPv4 host looks public.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from agent.address_policy import AddressPolicy

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ALLOWED_SCHEMES = ("http", "https")
_CHUNK = 64 * 1024
_MAX_DISPLAY = 200
_ALLOW_HINT = " (an operator can allow it with --url-fetch-allow)"


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A fetched body with its Content-Type (mime type only) and the URL it came from."""

    data: bytes
    content_type: str | None
    final_url: str


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


class UrlFetcher:
    """Fetches http(s) URLs under an `AddressPolicy`, a size cap and an overall timeout."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        max_bytes: int,
        timeout: float = 30.0,
        max_redirects: int = 5,
        resolver: AbstractResolver | None = None,
        user_agent: str = "comfyui-agent",
    ) -> None:
        if max_bytes < 0 or timeout <= 0 or max_redirects < 0:
            raise ValueError("max_bytes, max_redirects must be >= 0 and timeout > 0")
        self._policy = policy
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._sessions = FencedSession(
            policy, resolver, connect_timeout=timeout, user_agent=user_agent
        )

    async def fetch(self, url: str) -> FetchedFile:
        """The body of `url` after at most `max_redirects` checked redirects."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise FetchFailed(url, f"timed out after {self._timeout:g} s") from None

    async def close(self) -> None:
        """Close the session (and the resolver it made); the fetcher may be reused after."""
        await self._sessions.close()

    def _get_session(self) -> aiohttp.ClientSession:
        return self._sessions.get()

    async def _fetch(self, url: str) -> FetchedFile:
        try:
            current = URL(url)
        except (ValueError, TypeError) as exc:
            raise FetchRefused(url, f"not a valid URL ({exc})") from None
        session = self._get_session()
        for hop in range(self._max_redirects + 1):
            where = f"redirect to {display_url(current)}: " if hop else ""
            self._check_url(url, current, where)
            async with _get(session, url, current, where) as response:
                if response.status in REDIRECT_STATUSES:
                    current = self._redirect_target(url, response, where)
                    continue
                return await self._read(url, response, where)
        raise FetchRefused(url, f"more than {self._max_redirects} redirects")

    def _check_url(self, url: str, current: URL, where: str) -> None:
        check_url(self._policy, url, current, where)

    def _redirect_target(self, url: str, response: aiohttp.ClientResponse, where: str) -> URL:
        location = response.headers.get(hdrs.LOCATION)
        if not location:
            raise FetchFailed(
                url, f"{where}HTTP {response.status} redirect without a Location header"
            )
        try:
            return response.url.join(URL(location)).with_fragment(None)
        except (ValueError, TypeError):
            raise FetchFailed(
                url, f"{where}HTTP {response.status} redirect to an invalid URL"
            ) from None

    async def _read(self, url: str, response: aiohttp.ClientResponse, where: str) -> FetchedFile:
        if response.status >= 400:
            status = f"HTTP {response.status} {response.reason or ''}".rstrip()
            raise FetchFailed(url, f"{where}{status}", status=response.status)
        if not 200 <= response.status < 300:
            raise FetchFailed(
                url, f"{where}unexpected HTTP status {response.status}", status=response.status
            )
        too_large = f"{where}the body is larger than {self._max_bytes} bytes"
        length = response.content_length
        if length is not None and length > self._max_bytes:
            raise FetchRefused(url, f"{too_large} (Content-Length {length})")
        body = bytearray()
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > self._max_bytes:
                    # Leaving the response unread closes the connection: the rest never comes.
                    raise FetchRefused(url, too_large)
        except aiohttp.ClientError as exc:
            raise FetchFailed(url, f"{where}{_describe(exc)}") from None
        content_type = response.content_type if hdrs.CONTENT_TYPE in response.headers else None
        return FetchedFile(bytes(body), content_type, str(response.url))


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
        raise FetchRefused(url, f"{where}{reason}{_ALLOW_HINT}")


@contextlib.asynccontextmanager
async def _get(
    session: aiohttp.ClientSession, url: str, current: URL, where: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """One GET of `current`, with aiohttp's errors turned into FetchError for `url`."""
    try:
        response = await session.get(current, allow_redirects=False)
    except AddressRefused as exc:
        raise FetchRefused(url, f"{where}{exc}{_ALLOW_HINT}") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise FetchFailed(url, f"{where}cannot resolve {exc.host}: {_os_reason(exc)}") from None
    except aiohttp.ClientConnectorError as exc:
        raise FetchFailed(
            url, f"{where}cannot connect to {exc.host}:{exc.port}: {_os_reason(exc)}"
        ) from None
    except aiohttp.InvalidURL:
        raise FetchRefused(url, f"{where}not a valid URL") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(url, f"{where}{_describe(exc)}") from None
    try:
        yield response
    finally:
        # close, not release: an unread (oversized) body must not be drained first.
        response.close()


def _is_legacy_ipv4(host: str) -> bool:
    """Whether the C library reads `host` as an IPv4 address (`127.1`, `0x7f000001`, ...)."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    """The operating system's words for a connect or DNS error."""
    return exc.os_error.strerror or str(exc.os_error)


def _describe(exc: aiohttp.ClientError) -> str:
    """A one-line account of an aiohttp error, without internals."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
