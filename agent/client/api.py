"""The agent's HTTP and websocket API, as the client uses it. Every failure becomes a
ClientError with the exit code it deserves (2 for 4xx, 3 for unreachable or 5xx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from agent.client.errors import ClientError, ExitCode
from agent.client.words import describe_error


def _exit_code_for(status: int) -> ExitCode:
    return ExitCode.BAD_INPUT if 400 <= status < 500 and status != 429 else ExitCode.UNAVAILABLE


class AgentClient:
    """One session with an agent at `url`, with the bearer token when given."""

    def __init__(self, url: str, token: str = "", connect_timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        self._session = aiohttp.ClientSession(headers=self.headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (inside `async with`)."""
        assert self._session is not None, "use AgentClient in `async with`"
        return self._session

    def unreachable(self, exc: BaseException) -> ClientError:
        """Exit 3: the agent cannot be reached at all."""
        return ClientError(ExitCode.UNAVAILABLE, f"cannot reach the agent at {self.url}: {exc}")

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        """One JSON request: (status, decoded body); errors raise ClientError in words."""
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self.session.request(
                method,
                self.url + path,
                data=data,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self.unreachable(exc) from exc
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode("utf-8", "replace")
        if status >= 400:
            text = f"{status}: {describe_error(decoded)}"
            raise ClientError(_exit_code_for(status), text, status)
        return status, decoded

    async def read_file(self, filename: str, subfolder: str, kind: str) -> bytes:
        """An output file through ComfyUI's /view (the agent passes it through)."""
        query = f"filename={quote(filename)}&subfolder={quote(subfolder)}&type={quote(kind)}"
        try:
            async with self.session.get(f"{self.url}/view?{query}") as response:
                if response.status != 200:
                    raise ClientError(
                        ExitCode.UNAVAILABLE, f"{filename}: /view answered {response.status}"
                    )
                return await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self.unreachable(exc) from exc

    async def messages(self, query: str, first: Any = None) -> AsyncIterator[dict[str, Any]]:
        """`{"type": "connected"}`, then the messages of /api/run/ws?QUERY (after sending
        `first`, for a run) until the agent closes; a refused handshake raises ClientError."""
        ws_url = "ws" + self.url[len("http") :] + "/api/run/ws?" + query
        try:
            ws = await self.session.ws_connect(ws_url, heartbeat=30.0, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise ClientError(
                _exit_code_for(exc.status), f"{exc.status}: websocket refused ({exc.message})"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self.unreachable(exc) from exc
        try:
            yield {"type": "connected"}
            if first is not None:
                await ws.send_str(json.dumps(first))
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    decoded = json.loads(message.data)
                    if isinstance(decoded, dict):
                        yield decoded
                elif message.type == aiohttp.WSMsgType.ERROR:
                    break
        except (aiohttp.ClientError, OSError) as exc:
            raise self.unreachable(exc) from exc
        finally:
            await ws.close()
