"""The fake ComfyUI applies ComfyUI 0.3.64's origin check exactly (see fake_comfyui/origin.py).

The same table runs against a real ComfyUI in tests/test_real_browser.py, which holds the
fake to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from tests.fake_comfyui.fixtures import FakeComfyUI, start_fake_comfyui

# (Host header, Origin header or None, expected status); {port} is the server's own port.
ORIGIN_CASES: list[tuple[str, str | None, int]] = [
    ("127.0.0.1:{port}", None, 200),
    ("127.0.0.1:{port}", "http://127.0.0.1:{port}", 200),
    ("127.0.0.1:{port}", "https://127.0.0.1:{port}", 200),  # the scheme is not compared
    ("127.0.0.1:{port}", "http://127.0.0.1:9", 403),  # another port
    ("127.0.0.1:{port}", "http://127.0.0.1", 200),  # Origin without port: host names only
    ("127.0.0.1:{port}", "http://evil.example", 403),
    ("127.0.0.1:{port}", "http://evil.example:{port}", 403),
    ("127.0.0.1:{port}", "null", 200),  # an empty origin netloc passes
    ("127.0.0.1", "http://127.0.0.1:5555", 200),  # Host without port: host names only
    ("127.0.0.1", "http://evil.example:5555", 403),
    ("LOCALHOST:{port}", "http://localhost:{port}", 200),  # case-insensitive
    ("localhost:{port}", "http://127.0.0.1:{port}", 403),  # names are not resolved to match
    ("localhost:{port}", "http://evil.example", 403),  # a name that resolves to loopback
    ("[::1]:{port}", "http://[::1]:{port}", 200),
    ("[::1]:{port}", "http://[::1]:9", 403),
    ("10.1.2.3:{port}", "http://evil.example", 200),  # not loopback: not checked at all
    ("comfy.invalid:{port}", "http://evil.example", 200),  # unresolvable: not loopback
]


def case_ids() -> list[str]:
    return [f"{host}<-{origin}" for host, origin, _ in ORIGIN_CASES]


async def origin_status(
    session: aiohttp.ClientSession, url: str, port: int, host: str, origin: str | None
) -> int:
    """Status of GET url/system_stats with these Host and Origin headers."""
    headers = {"Host": host.format(port=port)}
    if origin is not None:
        headers["Origin"] = origin.format(port=port)
    async with session.get(f"{url}/system_stats", headers=headers) as response:
        if response.status == 403:
            assert await response.read() == b""  # ComfyUI's refusal has no body
        return response.status


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FakeComfyUI]:
    started = await start_fake_comfyui(tmp_path_factory.mktemp("origin"))
    yield started
    await started.stop()


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize(("host", "origin", "status"), ORIGIN_CASES, ids=case_ids())
async def test_origin_check_like_comfyui(
    fake: FakeComfyUI, host: str, origin: str | None, status: int
) -> None:
    async with aiohttp.ClientSession() as session:
        assert await origin_status(session, fake.url, fake.port, host, origin) == status


async def test_origin_check_covers_websockets_and_preflights(fake: FakeComfyUI) -> None:
    foreign = {"Origin": "http://evil.example"}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(fake.ws_url("x"), headers=foreign)
        assert refused.value.status == 403
        same = {"Origin": fake.url}
        async with session.ws_connect(fake.ws_url("x"), headers=same) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "status"
        preflight = {"Access-Control-Request-Method": "POST"}
        async with session.options(
            f"{fake.url}/prompt", headers={**foreign, **preflight}
        ) as response:
            assert response.status == 403
        async with session.options(f"{fake.url}/prompt", headers={**same, **preflight}) as response:
            # ComfyUI answers every OPTIONS itself: 200, no body, no CORS headers.
            assert response.status == 200 and await response.read() == b""
            assert "Access-Control-Allow-Origin" not in response.headers
