"""KeptAlivePoster against a scripted HTTP/1.1 server: framing, reuse, and what each
failure says about whether the request was sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from comfyui.client import ComfyUIClient, ComfyUIUnavailable, NotConnected
from comfyui.kept_alive import ConnectFailed, KeptAlivePoster
from tests.fake_comfyui.fixtures import free_port

# Answers the scripted server sends, one per request, by name.
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


@dataclass
class Request:
    """One request the server read."""

    head: str
    body: bytes
    connection: int


@dataclass
class Script:
    """What the server does for each request, and what it saw."""

    replies: list[Callable[[asyncio.StreamWriter], Awaitable[bool]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


def send(
    data: bytes, *, then_close: bool = False
) -> Callable[[asyncio.StreamWriter], Awaitable[bool]]:
    """A reply that writes data (and closes the connection after it if asked)."""

    async def reply(writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return not then_close

    return reply


def reset() -> Callable[[asyncio.StreamWriter], Awaitable[bool]]:
    """A reply that drops the connection having read the request."""

    async def reply(writer: asyncio.StreamWriter) -> bool:
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.abort()
        return False

    return reply


def silence() -> Callable[[asyncio.StreamWriter], Awaitable[bool]]:
    """A reply that never comes."""

    async def reply(writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    return reply


@contextlib.asynccontextmanager
async def scripted_server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        number = script.connections
        script.writers.append(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                script.requests.append(Request(head, body, number))
                if not await script.replies.pop(0)(writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield script, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in script.writers:
            writer.close()
        await server.wait_closed()


async def test_posts_share_one_connection_and_send_what_they_should() -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url + "/base/")
        script.replies = [send(OK)] * 3
        for index in range(3):
            body = json.dumps({"n": index}).encode()
            assert await poster.post("/prompt", body, timeout=5) == (200, b'{"ok": true}')
        await poster.close()
    assert script.connections == 1 and poster.connections_made == 1
    assert [json.loads(r.body) for r in script.requests] == [{"n": 0}, {"n": 1}, {"n": 2}]
    lines = script.requests[0].head.split("\r\n")
    assert lines[0] == "POST /base/prompt HTTP/1.1"
    assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}" in lines
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(script.requests[0].body)}" in lines


async def test_answers_framed_every_way_are_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n6\r\n: 1, "\r\n5\r\nb": 2\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    until_close = b"HTTP/1.1 500 Oops\r\n\r\nsomething broke"
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url)
        script.replies = [
            send(chunked),
            send(interim),
            send(no_content),
            send(until_close, then_close=True),
        ]
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"a": 1, "b": 2}')
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert await poster.post("/p", b"{}", timeout=5) == (204, b"")
        assert await poster.post("/p", b"{}", timeout=5) == (500, b"something broke")
        assert script.connections == 1  # all on one connection, the last one ended it
        script.replies = [send(OK)]
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert script.connections == 2
        await poster.close()


@pytest.mark.parametrize(
    "closing",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        # Something after the answer: the connection's state is no longer known.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 408 Request Timeout\r\n\r\n",
    ],
)
async def test_a_connection_is_not_used_again_when_it_may_not_be_clean(closing: bytes) -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url)
        script.replies = [send(closing), send(OK)]
        assert await poster.post("/p", b"{}", timeout=5) == (200, b"{}")
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert poster.connections_made == 2
        await poster.close()


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url)
        script.replies = [send(OK, then_close=True), send(OK)]
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        await asyncio.sleep(0.1)  # the server's FIN arrives
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert poster.connections_made == 2
        assert [r.connection for r in script.requests] == [1, 2]
        await poster.close()


async def test_bytes_arriving_on_an_idle_connection_retire_it() -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url)
        script.replies = [send(OK), send(OK)]
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        script.writers[0].write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        await asyncio.sleep(0.1)
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert poster.connections_made == 2
        await poster.close()


async def test_connections_idle_past_the_keepalive_are_not_used() -> None:
    now = [0.0]
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url, keepalive=15.0, clock=lambda: now[0])
        script.replies = [send(OK)] * 3
        await poster.post("/p", b"{}", timeout=5)
        now[0] = 14.0
        await poster.post("/p", b"{}", timeout=5)
        assert poster.connections_made == 1
        now[0] = 29.5
        await poster.post("/p", b"{}", timeout=5)
        assert poster.connections_made == 2
        await poster.close()


async def test_no_connection_means_connect_failed_nothing_sent() -> None:
    poster = KeptAlivePoster(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectFailed):
        await poster.post("/p", b"{}", timeout=5)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (reset(), aiohttp.ServerDisconnectedError),  # read it, then went away
        (
            send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", then_close=True),
            aiohttp.ServerDisconnectedError,
        ),
        (send(b"SSH-2.0-OpenSSH\r\n\r\n"), aiohttp.ClientPayloadError),
        (send(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), aiohttp.ClientPayloadError),
        (
            send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            aiohttp.ClientPayloadError,
        ),
        (silence(), TimeoutError),
    ],
)
async def test_failures_after_sending_are_never_connect_failed(
    reply: Callable[[asyncio.StreamWriter], Awaitable[bool]], error: type[Exception]
) -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url)
        script.replies = [reply, send(OK)]
        with pytest.raises(error):
            await poster.post("/p", b"{}", timeout=0.5)
        assert len(script.requests) == 1  # it was sent
        # The failed connection is dropped; the next request gets a new one.
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        assert poster.connections_made == 2
        await poster.close()


async def test_concurrent_posts_each_get_a_connection_then_share_them() -> None:
    async with scripted_server() as (script, url):
        poster = KeptAlivePoster(url, limit=8)
        script.replies = [send(OK)] * 40
        answers = await asyncio.gather(*(poster.post("/p", b"{}", timeout=5) for _ in range(20)))
        assert answers == [(200, b'{"ok": true}')] * 20
        assert poster.connections_made <= 8
        made = poster.connections_made
        await asyncio.gather(*(poster.post("/p", b"{}", timeout=5) for _ in range(made)))
        assert poster.connections_made == made
        await poster.close()


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        ("http://127.0.0.1:8188", True),
        ("http://[::1]:8188/comfy", True),
        ("http://comfyui", True),
        ("https://127.0.0.1:8188", False),
        ("http://user:secret@127.0.0.1:8188", False),
        ("http://127.0.0.1:8188/?a=1", False),
        ("unix:///run/comfyui.sock", False),
    ],
)
def test_only_plain_http_addresses_are_taken(url: str, usable: bool) -> None:
    assert KeptAlivePoster.usable_for(url) is usable
    if not usable:
        with pytest.raises(ValueError):
            KeptAlivePoster(url)


async def test_an_ipv6_address_is_written_in_brackets() -> None:
    try:
        server = await asyncio.start_server(lambda r, w: None, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server.close()
    await server.wait_closed()
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await reader.readuntil(b"\r\n\r\n")).decode())
        await reader.readexactly(2)
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        poster = KeptAlivePoster(f"http://[::1]:{port}")
        assert await poster.post("/p", b"{}", timeout=5) == (200, b'{"ok": true}')
        await poster.close()
    assert f"Host: [::1]:{port}\r\n" in seen[0]


async def test_comfyui_client_maps_the_failures_for_the_resubmission_rule() -> None:
    async with aiohttp.ClientSession() as session:
        client = ComfyUIClient(f"http://127.0.0.1:{free_port()}", session)
        with pytest.raises(NotConnected) as refused:
            await client.submit({}, prompt_id="p", client_id="c")
        assert isinstance(refused.value.__cause__, ConnectFailed)
        async with scripted_server() as (script, url):
            client = ComfyUIClient(url, session)
            script.replies = [reset()]
            with pytest.raises(ComfyUIUnavailable) as lost:
                await client.submit({}, prompt_id="p", client_id="c")
            assert not isinstance(lost.value, NotConnected)
            assert isinstance(lost.value.__cause__, aiohttp.ClientError)
            await client.close()


async def test_comfyui_client_posts_prompts_as_aiohttp_did() -> None:
    seen: list[web.Request] = []
    bodies: list[object] = []

    async def prompt(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.json())
        return web.json_response({"prompt_id": "p-1", "number": 4, "node_errors": {}})

    app = web.Application()
    app.router.add_post("/prompt", prompt)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            client = ComfyUIClient(f"http://127.0.0.1:{port}", session)
            for _ in range(2):
                accepted = await client.submit(
                    {"1": {"class_type": "X", "inputs": {}}},
                    prompt_id="p-1",
                    client_id="c-1",
                    extra_data={"k": "v"},
                )
                assert accepted.prompt_id == "p-1" and accepted.number == 4
            await client.close()
    finally:
        await runner.cleanup()
    assert bodies[0] == {
        "prompt": {"1": {"class_type": "X", "inputs": {}}},
        "client_id": "c-1",
        "prompt_id": "p-1",
        "extra_data": {"k": "v"},
    }
    assert seen[0].content_type == "application/json"
