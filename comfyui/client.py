"""HTTP client for ComfyUI's own API (/prompt, /upload/image, /view, /history, /interrupt)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiofiles
import aiohttp
from pydantic import BaseModel, ConfigDict

from comfyui.kept_alive import ConnectFailed, KeptAlivePoster


class ComfyUIError(Exception):
    """ComfyUI could not be reached or answered something unusable."""


class ComfyUIUnavailable(ComfyUIError):
    """Connection refused/reset or a 5xx: ComfyUI is down, restarting or overloaded."""


class NotConnected(ComfyUIUnavailable):
    """No connection to ComfyUI could be made (refused, unreachable): nothing was sent."""


class PromptRejected(ComfyUIError):
    """ComfyUI refused the prompt (validation): status and its JSON body are kept."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"ComfyUI rejected the prompt with HTTP {status}")
        self.status = status
        self.body = body


class FileNotFound(ComfyUIError):
    """/view answered 404 for an output file."""


class PromptAccepted(BaseModel):
    """ComfyUI's answer to a successful POST /prompt."""

    model_config = ConfigDict(extra="allow")

    prompt_id: str
    number: int | None = None
    node_errors: dict[str, Any] = {}


class UploadedFile(BaseModel):
    """ComfyUI's answer to POST /upload/image."""

    model_config = ConfigDict(extra="allow")

    name: str
    subfolder: str = ""
    type: str = "input"


class ComfyUIClient:
    """Calls ComfyUI's HTTP API over a session the caller owns."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # POST /prompt is on a sync run's critical path: sent without aiohttp's client
        # where it can be (comfyui.kept_alive).
        self._poster = (
            KeptAlivePoster(self.base_url) if KeptAlivePoster.usable_for(self.base_url) else None
        )

    async def close(self) -> None:
        """Close the connections kept for POST /prompt (the session is the caller's)."""
        if self._poster is not None:
            await self._poster.close()

    async def submit(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str,
        client_id: str,
        extra_data: Mapping[str, Any] | None = None,
    ) -> PromptAccepted:
        """POST /prompt with a prompt id chosen by the caller."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        if self._poster is not None:
            status, payload = await self._post_kept_alive("/prompt", body)
        else:
            status, payload = await self._request_json("POST", "/prompt", json_body=body)
        if status == 200 and isinstance(payload, dict):
            return PromptAccepted.model_validate(payload)
        if 400 <= status < 500:
            raise PromptRejected(status, payload)
        raise ComfyUIUnavailable(f"POST /prompt answered HTTP {status}: {str(payload)[:500]}")

    async def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        overwrite: bool = True,
        subfolder: str = "",
        content_type: str = "application/octet-stream",
    ) -> UploadedFile:
        """POST /upload/image (multipart field `image`), as ComfyUI's frontend does."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type=content_type)
        form.add_field("overwrite", "true" if overwrite else "false")
        if subfolder:
            form.add_field("subfolder", subfolder)
        status, payload = await self._request_json("POST", "/upload/image", data=form)
        if status == 200 and isinstance(payload, dict):
            return UploadedFile.model_validate(payload)
        if 400 <= status < 500:
            raise ComfyUIError(f"upload of {filename} refused: HTTP {status} {str(payload)[:300]}")
        raise ComfyUIUnavailable(f"POST /upload/image answered HTTP {status}")

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        """GET /view: the bytes of an output (or input/temp) file."""
        params = {"filename": filename, "subfolder": subfolder, "type": file_type}
        try:
            async with self._session.get(
                self._url("/view"), params=params, timeout=self._timeout
            ) as response:
                if response.status == 404:
                    raise FileNotFound(f"{file_type}/{subfolder}/{filename} not found")
                if response.status != 200:
                    raise ComfyUIError(f"GET /view answered HTTP {response.status}")
                return await response.read()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ComfyUIUnavailable(f"GET /view failed: {exc!r}") from exc

    async def download(
        self,
        filename: str,
        subfolder: str,
        file_type: str,
        destination: Path,
        *,
        chunk_size: int = 1024 * 1024,
    ) -> int:
        """GET /view streamed into destination chunk by chunk (never whole in memory); bytes."""
        params = {"filename": filename, "subfolder": subfolder, "type": file_type}
        # No total timeout: a large video may take long; a stalled read still ends.
        timeout = aiohttp.ClientTimeout(sock_connect=self._timeout.total, sock_read=60)
        size = 0
        try:
            async with self._session.get(
                self._url("/view"), params=params, timeout=timeout
            ) as response:
                if response.status == 404:
                    raise FileNotFound(f"{file_type}/{subfolder}/{filename} not found")
                if response.status != 200:
                    raise ComfyUIError(f"GET /view answered HTTP {response.status}")
                async with aiofiles.open(destination, "wb") as out:
                    async for chunk in response.content.iter_chunked(chunk_size):
                        await out.write(chunk)
                        size += len(chunk)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ComfyUIUnavailable(f"GET /view failed: {exc!r}") from exc
        return size

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a prompt, or None while it has none (queued, running)."""
        status, payload = await self._request_json("GET", f"/history/{prompt_id}")
        if status != 200:
            raise ComfyUIUnavailable(f"GET /history answered HTTP {status}")
        if isinstance(payload, dict):
            entry = payload.get(prompt_id)
            if isinstance(entry, dict):
                return entry
        return None

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt; with a prompt id only that prompt is interrupted (if it runs)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await self._request_json("POST", "/interrupt", json_body=body)

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """Remove prompts from ComfyUI's pending queue (no effect on a running one)."""
        await self._request_json("POST", "/queue", json_body={"delete": prompt_ids})

    async def queue(self) -> dict[str, Any]:
        """GET /queue: running and pending prompts."""
        status, payload = await self._request_json("GET", "/queue")
        if status != 200 or not isinstance(payload, dict):
            raise ComfyUIUnavailable(f"GET /queue answered HTTP {status}")
        return payload

    async def _post_kept_alive(self, path: str, body: Any) -> tuple[int, Any]:
        assert self._poster is not None
        try:
            status, data = await self._poster.post(
                path, json.dumps(body).encode(), timeout=self._timeout.total
            )
        except ConnectFailed as exc:
            raise NotConnected(f"POST {path} failed: {exc!r}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ComfyUIUnavailable(f"POST {path} failed: {exc!r}") from exc
        return status, _decoded(data)

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
    ) -> tuple[int, Any]:
        try:
            async with self._session.request(
                method, self._url(path), json=json_body, data=data, timeout=self._timeout
            ) as response:
                return response.status, _decoded(await response.read())
        except aiohttp.ClientConnectorError as exc:
            raise NotConnected(f"{method} {path} failed: {exc!r}") from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ComfyUIUnavailable(f"{method} {path} failed: {exc!r}") from exc


def _decoded(data: bytes) -> Any:
    """An answer's JSON; its text when it is not JSON; None when empty."""
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text
