"""POSTs to ComfyUI over kept-alive HTTP/1.1 connections, without aiohttp's client.

A sync run's `POST /prompt` is on its critical path: ComfyUI starts only once it arrives,
on a machine whose cores the agent shares with it. aiohttp's client spends about 430 µs of
CPU on such a request here (a task to write the body, timers, the cookie jar, its
response objects); writing the request and reading the answer on a protocol of our own
takes about 180 µs. This sends exactly that request: a body with Content-Length, and an
answer framed by Content-Length, chunked transfer coding, or the connection's end.
Only plain `http://` addresses (ComfyUI beside the agent); anything else uses aiohttp.

Failures keep the meaning agent.submission needs to decide whether a prompt may have
arrived: ConnectFailed when no connection could be made (nothing was sent); otherwise
aiohttp's ServerDisconnectedError, ClientOSError or ClientPayloadError, or TimeoutError.
A connection is used again only when its answer was read whole and nothing else came.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import yarl

# Below the idle timeout of aiohttp's server (75 s, ComfyUI's), as aiohttp's client does:
# a connection the server is closing right now must not carry a prompt.
KEEPALIVE = 15.0
MAX_HEAD = 64 * 1024
_CRLF = b"\r\n"


class ConnectFailed(OSError):
    """No connection to the server could be made: the request was not sent."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes in a buffer, a waiter woken when more arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False  # EOF or connection lost: no more bytes will come
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def usable(self) -> bool:
        """Open, and nothing arrived since its last answer."""
        return (
            not self.ended
            and not self.buffer
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data  # on an idle connection this makes it unusable
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self._wake()

    def close(self) -> None:
        """Close the connection (it is never used again)."""
        self.ended = True
        if self.transport is not None:
            self.transport.close()

    async def more(self) -> None:
        """Wait for more bytes; ServerDisconnectedError once none can come."""
        if self.ended:
            raise aiohttp.ServerDisconnectedError()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class KeptAlivePoster:
    """Sends POST requests to one plain-HTTP server, keeping connections between them."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 10.0,
        keepalive: float = KEEPALIVE,
        limit: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        url = yarl.URL(base_url)
        if not self.usable_for(base_url) or url.raw_host is None:
            raise ValueError(f"not a plain http:// address: {base_url}")
        self._host = url.raw_host
        self._port = url.port or 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = f"{host}:{self._port}".encode("ascii")
        self._prefix = url.raw_path.rstrip("/").encode("ascii")
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._clock = clock
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_made = 0

    @staticmethod
    def usable_for(base_url: str) -> bool:
        """Whether base_url is one this can talk to (http://host[:port][/path], no user)."""
        url = yarl.URL(base_url)
        return (
            url.scheme == "http"
            and bool(url.raw_host)
            and url.user is None
            and not url.query_string
            and not url.fragment
        )

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        timeout: float | None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """POST body to path (below the base URL's path): the answer's status and body."""
        request = b"".join(
            (
                b"POST ",
                self._prefix,
                path.encode("ascii"),
                b" HTTP/1.1\r\nHost: ",
                self._authority,
                b"\r\nContent-Type: ",
                content_type.encode("ascii"),
                b"\r\nContent-Length: ",
                str(len(body)).encode("ascii"),
                b"\r\nAccept: application/json\r\n\r\n",
            )
        )
        async with self._slots, asyncio.timeout(timeout):
            connection = self._pooled() or await self._connect()
            try:
                assert connection.transport is not None
                connection.transport.write(request + body)
                status, answer, reusable = await _read_answer(connection)
            except BaseException:
                connection.close()  # its state is unknown: never used again
                raise
        if reusable and not self._closed and connection.usable:
            connection.idle_since = self._clock()
            self._idle.append(connection)
        else:
            connection.close()
        return status, answer

    async def close(self) -> None:
        """Close the kept connections; later requests each use a connection of their own."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _pooled(self) -> _Connection | None:
        now = self._clock()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {exc!r}") from exc
        self.connections_made += 1
        return connection


async def _read_answer(connection: _Connection) -> tuple[int, bytes, bool]:
    """Status, body, and whether the connection may carry another request."""
    while True:
        status, headers, start = await _read_head(connection)
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            del connection.buffer[:start]
            continue
        break
    keep = headers.get("connection", "").lower() != "close"
    if status in (204, 304):  # never a body
        del connection.buffer[:start]
        return status, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(connection, start)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise aiohttp.ClientPayloadError(f"bad Content-Length: {length!r}")
        end = start + int(length)
        while len(connection.buffer) < end:
            await connection.more()
        body = bytes(connection.buffer[start:end])
        del connection.buffer[:end]
    else:  # the body runs to the connection's end
        with contextlib.suppress(aiohttp.ServerDisconnectedError):
            while True:
                await connection.more()
        body = bytes(connection.buffer[start:])
        connection.buffer.clear()
        keep = False
    return status, body, keep


async def _read_head(connection: _Connection) -> tuple[int, dict[str, str], int]:
    """The status line and headers: status, headers (names lower-cased), where the body starts."""
    while (end := connection.buffer.find(b"\r\n\r\n")) < 0:
        if len(connection.buffer) > MAX_HEAD:
            raise aiohttp.ClientPayloadError("answer head too large")
        await connection.more()
    lines = bytes(connection.buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise aiohttp.ClientPayloadError(f"not an HTTP/1 answer: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise aiohttp.ClientPayloadError(f"bad header line: {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(code), headers, end + 4


async def _read_chunked(connection: _Connection, start: int) -> bytes:
    """A body in chunked transfer coding from start on; the buffer keeps what follows it."""
    buffer = connection.buffer
    body = bytearray()
    position = start
    while True:
        while (line_end := buffer.find(_CRLF, position)) < 0:
            await connection.more()
        size_text = bytes(buffer[position:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise aiohttp.ClientPayloadError(f"bad chunk size: {size_text[:20]!r}") from None
        position = line_end + 2
        if size == 0:
            # Trailer lines, if any, then an empty line.
            while True:
                while (line_end := buffer.find(_CRLF, position)) < 0:
                    await connection.more()
                empty = line_end == position
                position = line_end + 2
                if empty:
                    del buffer[:position]
                    return bytes(body)
        while len(buffer) < position + size + 2:
            await connection.more()
        body += buffer[position : position + size]
        if buffer[position + size : position + size + 2] != _CRLF:
            raise aiohttp.ClientPayloadError("chunk not followed by CRLF")
        position += size + 2
