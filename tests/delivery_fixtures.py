"""Loopback servers for delivery tests: moto's S3 server, a flaky S3 proxy, a webhook receiver.

moto (`moto[server]`, PyPI) is the S3-compatible server: pure Python, installs with pip
(no binary download, which this environment cannot do), runs as a plain subprocess on
127.0.0.1, and implements multipart uploads, Content-Type and presigned GET URLs the way
S3 does. MinIO would be closer to production but ships as a binary outside PyPI.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import obstore
import pytest
from aiohttp import web
from obstore.store import S3Store
from standardwebhooks import Webhook

from tests.fake_comfyui.fixtures import free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class S3Server:
    """moto's S3 server on loopback."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def make_bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return name

    def url(self, bucket: str, prefix: str = "out") -> str:
        """The output store URL of bucket/prefix on this server."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    def _store(self, bucket: str) -> S3Store:
        return S3Store(
            bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id="test",
            secret_access_key="test",
            client_options={"allow_http": True},
            virtual_hosted_style_request=False,
        )

    def get(self, bucket: str, key: str) -> tuple[bytes, str]:
        """An object's bytes and Content-Type (read with a client other than the agent's use)."""
        result = obstore.get(self._store(bucket), key)
        return bytes(result.bytes()), str(result.attributes.get("Content-Type"))

    def keys(self, bucket: str) -> list[str]:
        """The object keys in bucket."""
        pages = obstore.list(self._store(bucket))
        return sorted(item["path"] for page in pages for item in page)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """moto in server mode on a free loopback port, for the module's tests."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    try:
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class FlakyProxy:
    """Forwards requests to a server, answering `fail` first requests with 503 instead."""

    target: str
    fail: int = 0
    seen: int = 0
    failed: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        body = await request.read()
        if self.failed < self.fail:
            self.failed += 1
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self.target + request.path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                keep = {k: v for k, v in answer.headers.items() if k.lower() in _KEEP}
                return web.Response(status=answer.status, body=data, headers=keep)


_KEEP = {"etag", "content-type", "x-amz-request-id", "last-modified"}


@dataclass
class WebhookReceiver:
    """A loopback webhook endpoint that verifies every signature with `standardwebhooks`."""

    secret: str = WEBHOOK_SECRET
    # Answer these statuses first (e.g. [500, 503]), then 204.
    statuses: list[int] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    runner: web.AppRunner | None = None
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        self.attempts.append(payload)
        if self.statuses:
            return web.Response(status=self.statuses.pop(0))
        self.events.append({**payload, "webhook-id": headers.get("webhook-id")})
        self.arrived.set()
        return web.Response(status=204)

    async def wait_events(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until count events were delivered (2xx answered)."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events
