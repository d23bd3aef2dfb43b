"""Fetch an image URL given in a workflow, without letting it reach internal addresses.

Refused (`FetchRefused`): what agent.fenced_http refuses (scheme, credentials, host,
blocked address, on the first request or after a redirect), more than `max_redirects`
redirects, a body larger than `max_bytes`.

Failed (`FetchFailed`: the remote did not deliver): DNS failure, connect or TLS error,
timeout, HTTP status >= 400 (`status` is set), a redirect without a usable Location, a
connection dropped mid-body.

The session is a `FencedSession` (see agent.fenced_http for how the address check holds).
Redirects are followed here, not by aiohttp, so every hop is checked the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver
from yarl import URL

from agent.address_policy import AddressPolicy
from agent.fenced_http import (
    ALLOW_HINT,
    AddressRefused,
    FencedSession,
    FetchFailed,
    FetchRefused,
    check_url,
    display_url,
)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A fetched body with its Content-Type (mime type only) and the URL it came from."""

    data: bytes
    content_type: str | None
    final_url: str


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


@contextlib.asynccontextmanager
async def _get(
    session: aiohttp.ClientSession, url: str, current: URL, where: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    """One GET of `current`, with aiohttp's errors turned into FetchError for `url`."""
    try:
        response = await session.get(current, allow_redirects=False)
    except AddressRefused as exc:
        raise FetchRefused(url, f"{where}{exc}{ALLOW_HINT}") from None
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


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    """The operating system's words for a connect or DNS error."""
    return exc.os_error.strerror or str(exc.os_error)


def _describe(exc: aiohttp.ClientError) -> str:
    """A one-line account of an aiohttp error, without internals."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
