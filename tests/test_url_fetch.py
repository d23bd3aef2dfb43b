"""UrlFetcher end to end, against servers on loopback only.

Every test here runs under `no_outside_traffic`: socket connects and name lookups to
anything but loopback fail the test, so a broken guard cannot send a packet off this host.
Names other than `localhost` are served by an injected resolver, never by DNS.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from agent.address_policy import AddressPolicy
from agent.fenced_http import (
    AddressRefused,
    FetchFailed,
    FetchRefused,
    PolicyResolver,
    display_url,
)
from agent.url_fetch import FetchedFile, UrlFetcher

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
ALLOW_LOOPBACK_V4 = AddressPolicy(["127.0.0.1"])
DENY_ALL = AddressPolicy()


# -- the guard: nothing leaves loopback ----------------------------------------------------


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


@dataclass
class Guard:
    """What the guard saw: every inet connect attempt, and the ones it stopped."""

    connects: list[tuple[str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def no_outside_traffic(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """Fail on any connect or name lookup that is not loopback, for every test here."""
    guard = Guard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple):  # AF_INET / AF_INET6; AF_UNIX paths are local
            guard.connects.append((address[0], address[1]))
            if not _is_loopback(address[0]):
                guard.violations.append(f"connect {address!r}")
                raise AssertionError(f"test tried to connect to non-loopback {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", b"localhost") and not _is_loopback(host):
            guard.violations.append(f"getaddrinfo {host!r}")
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
    assert not guard.violations, guard.violations


def test_the_guard_itself_stops_outside_traffic(no_outside_traffic: Guard) -> None:
    with socket.socket() as sock, pytest.raises(AssertionError):
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing answers there even if it leaked
    with pytest.raises(AssertionError):
        socket.getaddrinfo("example.com", 80)
    assert len(no_outside_traffic.violations) == 2
    no_outside_traffic.violations.clear()  # provoked on purpose


# -- resolvers that never touch DNS --------------------------------------------------------


class MapResolver(AbstractResolver):
    """Answers from a map (`later` from a name's second lookup on); records every lookup."""

    def __init__(
        self, answers: dict[str, list[str]], *, later: dict[str, list[str]] | None = None
    ) -> None:
        self.answers = answers
        self.later = later or {}
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The mapped addresses of `host`, or a resolution error."""
        self.calls.append(host)
        addresses = self.answers.get(host)
        if host in self.later and self.calls.count(host) > 1:
            addresses = self.later[host]
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


# -- servers on loopback -------------------------------------------------------------------


@dataclass
class Server:
    """A test HTTP server on a loopback address, counting the requests it saw."""

    host: str
    port: int = 0
    hits: list[str] = field(default_factory=list)

    def url(self, path: str = "/file", host: str | None = None) -> str:
        """A URL of this server, optionally spelled with another host name."""
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        return f"http://{name}:{self.port}{path}"


def build_app(server: Server) -> web.Application:
    """Routes for every behaviour the tests need."""

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        server.hits.append(request.path_qs)
        return await handler(request)

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png", charset="utf-8")

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def redirect(request: web.Request) -> web.Response:
        code = int(request.query.get("code", "302"))
        return web.Response(status=code, headers={"Location": request.query["to"]})

    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        await asyncio.sleep(float(request.query.get("delay", "0")))
        target = f"/chain/{left - 1}?{request.query_string}" if left > 1 else "/file"
        return web.Response(status=302, headers={"Location": target})

    async def stream(request: web.Request) -> web.StreamResponse:
        # `first` bytes at once, then a chunk every `interval` s: a slow body past the cap.
        response = web.StreamResponse()
        if "length" in request.query:
            response.content_length = int(request.query["length"])
        await response.prepare(request)
        await response.write(b"a" * int(request.query.get("first", "0")))
        for _ in range(int(request.query.get("chunks", "100"))):
            await asyncio.sleep(float(request.query.get("interval", "0.2")))
            await response.write(b"b" * 1024)
        return response

    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (8 * 1024 * 1024))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application(middlewares=[count])
    app.router.add_get("/file", file)
    app.router.add_get("/sized/{n}", sized)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/no-location", no_location)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/stream", stream)
    app.router.add_get("/stall", stall)
    app.router.add_get("/bomb", bomb)
    return app


StartServer = Callable[[str], Awaitable[Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Starts servers on a loopback address; all are stopped at the end of the test."""
    runners: list[web.AppRunner] = []

    async def start(host: str = "127.0.0.1") -> Server:
        assert _is_loopback(host)
        server = Server(host)
        # Cancel handlers whose client went away, so stalled ones do not delay teardown.
        runner = web.AppRunner(build_app(server), handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, host, 0)
        await site.start()
        server.port = runner.addresses[-1][1]
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """The main test server on 127.0.0.1."""
    return await start_server("127.0.0.1")


@pytest.fixture
async def fetchers() -> AsyncIterator[Callable[..., UrlFetcher]]:
    """Makes UrlFetchers (small cap, short timeout by default) and closes them after."""
    made: list[UrlFetcher] = []

    def make(policy: AddressPolicy = ALLOW_LOOPBACK_V4, **kwargs: Any) -> UrlFetcher:
        kwargs.setdefault("max_bytes", 64 * 1024)
        kwargs.setdefault("timeout", 5.0)
        fetcher = UrlFetcher(policy, **kwargs)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.close()


MakeFetcher = Callable[..., UrlFetcher]


async def refused(fetcher: UrlFetcher, url: str) -> FetchRefused:
    """The FetchRefused that fetching `url` raises."""
    with pytest.raises(FetchRefused) as info:
        await fetcher.fetch(url)
    assert info.value.url == url
    assert str(info.value).startswith("refused to fetch ")
    return info.value


async def failed(fetcher: UrlFetcher, url: str) -> FetchFailed:
    """The FetchFailed that fetching `url` raises."""
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch(url)
    assert str(info.value).startswith("cannot fetch ")
    return info.value


# -- allowed fetches -----------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.1/32"])
async def test_fetch_from_an_allowed_address(
    entry: str, server: Server, fetchers: MakeFetcher
) -> None:
    fetched = await fetchers(AddressPolicy([entry])).fetch(server.url("/file?x=1"))
    assert fetched == FetchedFile(PNG, "image/png", server.url("/file?x=1"))
    assert server.hits == ["/file?x=1"]


async def test_body_of_exactly_max_bytes_is_accepted(server: Server, fetchers: MakeFetcher) -> None:
    fetched = await fetchers(max_bytes=1000).fetch(server.url("/sized/1000"))
    assert fetched.data == b"x" * 1000
    assert fetched.content_type == "application/octet-stream"


async def test_host_allowed_by_name_may_resolve_to_loopback(
    server: Server, fetchers: MakeFetcher
) -> None:
    fetched = await fetchers(AddressPolicy(["localhost"])).fetch(server.url(host="localhost"))
    assert fetched.data == PNG
    assert server.hits == ["/file"]


async def test_injected_resolver_answer_is_what_gets_connected(
    server: Server, fetchers: MakeFetcher, no_outside_traffic: Guard
) -> None:
    resolver = MapResolver({"files.test": ["127.0.0.1"]})
    fetcher = fetchers(AddressPolicy(["files.test"]), resolver=resolver)
    assert (await fetcher.fetch(server.url(host="files.test"))).data == PNG
    assert resolver.calls == ["files.test"]
    assert no_outside_traffic.connects == [("127.0.0.1", server.port)]


async def test_relative_redirect_is_followed(server: Server, fetchers: MakeFetcher) -> None:
    fetched = await fetchers().fetch(server.url("/redirect?code=307&to=/file"))
    assert fetched.data == PNG
    assert fetched.final_url == server.url("/file")
    assert server.hits == ["/redirect?code=307&to=/file", "/file"]


async def test_redirect_chain_up_to_the_limit_is_followed(
    server: Server, fetchers: MakeFetcher
) -> None:
    fetched = await fetchers(max_redirects=5).fetch(server.url("/chain/5"))
    assert fetched.final_url == server.url("/file")
    assert len(server.hits) == 6


async def test_session_is_made_lazily_and_remade_after_close(
    server: Server, fetchers: MakeFetcher
) -> None:
    fetcher = fetchers()
    assert (await fetcher.fetch(server.url())).data == PNG
    await fetcher.close()
    await fetcher.close()
    assert (await fetcher.fetch(server.url())).data == PNG


def test_fetcher_can_be_built_outside_a_loop() -> None:
    UrlFetcher(DENY_ALL, max_bytes=1)


# -- refused addresses: the server sees nothing ----------------------------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback address 127.0.0.1"),
        ("localhost", "localhost resolves to loopback address"),
        ("0.0.0.0", "unspecified address 0.0.0.0"),
    ],
)
async def test_loopback_is_refused_without_allow(
    host: str, reason: str, server: Server, fetchers: MakeFetcher
) -> None:
    error = await refused(fetchers(DENY_ALL), server.url(host=host))
    assert reason in error.reason
    assert "--url-fetch-allow" in str(error)
    assert server.hits == []


async def test_other_loopback_address_is_refused(
    start_server: StartServer, fetchers: MakeFetcher
) -> None:
    other = await start_server("127.0.0.2")
    error = await refused(fetchers(), other.url())  # only 127.0.0.1 is allowed
    assert "loopback address 127.0.0.2" in error.reason
    assert other.hits == []


async def test_ipv6_loopback_is_refused(start_server: StartServer, fetchers: MakeFetcher) -> None:
    try:
        other: Server | None = await start_server("::1")
    except OSError:  # no IPv6 here: the refusal happens before any connect all the same
        other = None
    port = other.port if other else 9
    error = await refused(fetchers(), f"http://[::1]:{port}/x")
    assert "loopback address ::1" in error.reason
    assert other is None or other.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://100.64.0.1/",
        "http://192.168.1.1:8080/",
        "https://172.16.0.1/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
    ],
)
async def test_blocked_ip_literals_are_refused_before_connecting(
    url: str, fetchers: MakeFetcher
) -> None:
    error = await refused(fetchers(DENY_ALL), url)
    assert "address" in error.reason or "endpoint" in error.reason


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (["10.0.0.1"], "private address 10.0.0.1"),
        (["169.254.169.254"], "cloud metadata endpoint 169.254.169.254"),
        (["100.100.100.200"], "cloud metadata endpoint 100.100.100.200"),
        (["100.64.0.1"], "carrier-grade NAT address 100.64.0.1"),
        (["fd00::1"], "private address fd00::1"),
        (["fe80::1"], "link-local address fe80::1"),
        (["::ffff:192.168.0.1"], "private address 192.168.0.1"),
        (["93.184.216.34", "10.0.0.1"], "private address 10.0.0.1"),  # one bad answer is enough
        (["2606:2800:220:1::", "::1"], "loopback address ::1"),
    ],
)
async def test_names_resolving_to_blocked_addresses_are_refused_before_connecting(
    answer: list[str],
    reason: str,
    fetchers: MakeFetcher,
    no_outside_traffic: Guard,
) -> None:
    resolver = MapResolver({"evil.test": answer})
    error = await refused(fetchers(resolver=resolver), "http://evil.test/image.png")
    assert error.reason.startswith(f"evil.test resolves to {reason}")
    assert resolver.calls == ["evil.test"]
    assert no_outside_traffic.connects == []


async def test_ip_allow_does_not_cover_names_that_resolve_elsewhere(
    server: Server, fetchers: MakeFetcher
) -> None:
    resolver = MapResolver({"files.test": ["127.0.0.1", "127.0.0.2"]})
    error = await refused(fetchers(resolver=resolver), server.url(host="files.test"))
    assert "loopback address 127.0.0.2" in error.reason
    assert server.hits == []


async def test_each_connection_gets_a_fresh_checked_answer(
    server: Server, fetchers: MakeFetcher, no_outside_traffic: Guard
) -> None:
    # DNS rebinding: the first answer passes, the next one points inside.
    resolver = MapResolver({"rebind.test": ["127.0.0.1"]}, later={"rebind.test": ["10.0.0.1"]})
    fetcher = fetchers(resolver=resolver)
    assert (await fetcher.fetch(server.url(host="rebind.test"))).data == PNG
    error = await refused(fetcher, server.url(host="rebind.test"))
    assert "private address 10.0.0.1" in error.reason
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert {host for host, _ in no_outside_traffic.connects} == {"127.0.0.1"}


async def test_rebinding_between_redirect_hops_is_caught(
    server: Server, fetchers: MakeFetcher
) -> None:
    resolver = MapResolver(
        {"rebind.test": ["127.0.0.1"]}, later={"rebind.test": ["169.254.169.254"]}
    )
    url = server.url(f"/redirect?to={server.url(host='rebind.test')}", host="rebind.test")
    error = await refused(fetchers(resolver=resolver), url)
    assert "redirect to" in error.reason
    assert "cloud metadata endpoint" in error.reason
    assert len(server.hits) == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("ftp://127.0.0.1/x", "scheme 'ftp' is not allowed"),
        ("gopher://127.0.0.1:70/", "scheme 'gopher' is not allowed"),
        ("data:image/png;base64,AAAA", "scheme 'data' is not allowed"),
        ("/relative/path.png", "scheme 'none' is not allowed"),
        ("http:///no-host", "has no host"),
        ("http://user:pw@127.0.0.1/x", "user:password@"),
        ("http://2130706433/", "not a canonical IP address"),
        ("http://0x7f000001/", "not a canonical IP address"),
        ("http://127.1/", "not a canonical IP address"),
        ("http://0177.0.0.1/", "not a canonical IP address"),
    ],
)
async def test_bad_urls_are_refused(url: str, reason: str, fetchers: MakeFetcher) -> None:
    error = await refused(fetchers(), url)
    assert reason in error.reason


# -- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirect_to_a_blocked_address_is_refused(
    code: int, server: Server, start_server: StartServer, fetchers: MakeFetcher
) -> None:
    target = await start_server("127.0.0.2")
    error = await refused(fetchers(), server.url(f"/redirect?code={code}&to={target.url()}"))
    assert error.reason.startswith(f"redirect to {target.url()}: loopback address 127.0.0.2")
    assert target.hits == []
    assert len(server.hits) == 1


async def test_redirect_to_a_name_that_is_not_allowed_is_refused(
    server: Server, fetchers: MakeFetcher
) -> None:
    resolver = MapResolver({"files.test": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"]})
    fetcher = fetchers(AddressPolicy(["files.test"]), resolver=resolver)
    url = server.url(f"/redirect?to={server.url(host='localhost')}", host="files.test")
    error = await refused(fetcher, url)
    assert "localhost resolves to loopback address" in error.reason
    assert server.hits == [f"/redirect?to={server.url(host='localhost')}"]


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "http://[::1]/"]
)
async def test_redirect_to_a_bad_url_is_refused(
    target: str, server: Server, fetchers: MakeFetcher
) -> None:
    error = await refused(fetchers(), server.url(f"/redirect?to={target}"))
    assert error.reason.startswith("redirect to ")
    assert len(server.hits) == 1


async def test_too_many_redirects_are_refused(server: Server, fetchers: MakeFetcher) -> None:
    error = await refused(fetchers(max_redirects=5), server.url("/chain/6"))
    assert error.reason == "more than 5 redirects"
    assert len(server.hits) == 6  # the sixth redirect is not followed


async def test_no_redirects_allowed(server: Server, fetchers: MakeFetcher) -> None:
    error = await refused(fetchers(max_redirects=0), server.url("/redirect?to=/file"))
    assert error.reason == "more than 0 redirects"


async def test_redirect_without_location_fails(server: Server, fetchers: MakeFetcher) -> None:
    error = await failed(fetchers(), server.url("/no-location"))
    assert "redirect without a Location" in error.reason


# -- size cap -------------------------------------------------------------------------------


async def test_content_length_over_the_cap_is_refused_at_once(
    server: Server, fetchers: MakeFetcher
) -> None:
    started = time.monotonic()
    error = await refused(fetchers(max_bytes=1000), server.url("/stream?length=10000000&first=10"))
    assert time.monotonic() - started < 1.0
    assert error.reason == "the body is larger than 1000 bytes (Content-Length 10000000)"


async def test_exact_content_length_one_over_the_cap_is_refused(
    server: Server, fetchers: MakeFetcher
) -> None:
    error = await refused(fetchers(max_bytes=1000), server.url("/sized/1001"))
    assert "Content-Length 1001" in error.reason


@pytest.mark.parametrize("first", [1001, 600])
async def test_chunked_body_over_the_cap_is_cut_off(
    first: int, server: Server, fetchers: MakeFetcher
) -> None:
    # The server would take 100 x 0.2 s for the rest; the fetch stops at the cap instead.
    started = time.monotonic()
    error = await refused(fetchers(max_bytes=1000), server.url(f"/stream?first={first}"))
    assert time.monotonic() - started < 1.5
    assert error.reason == "the body is larger than 1000 bytes"


async def test_compressed_body_is_capped_after_decompression(
    server: Server, fetchers: MakeFetcher
) -> None:
    error = await refused(fetchers(max_bytes=1024 * 1024), server.url("/bomb"))
    assert error.reason == f"the body is larger than {1024 * 1024} bytes"


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text"), [(404, "HTTP 404 Not Found"), (500, "HTTP 500")])
async def test_http_error_status_fails(
    code: int, text: str, server: Server, fetchers: MakeFetcher
) -> None:
    error = await failed(fetchers(), server.url(f"/status/{code}"))
    assert error.status == code
    assert error.reason.startswith(text)


async def test_stalled_server_times_out(server: Server, fetchers: MakeFetcher) -> None:
    started = time.monotonic()
    error = await failed(fetchers(timeout=0.5), server.url("/stall"))
    assert 0.4 < time.monotonic() - started < 1.5
    assert error.reason == "timed out after 0.5 s"
    assert error.status is None


async def test_timeout_bounds_the_whole_redirect_chain(
    server: Server, fetchers: MakeFetcher
) -> None:
    # Each hop takes 0.2 s, well within the timeout; five of them do not fit.
    started = time.monotonic()
    error = await failed(fetchers(timeout=0.5), server.url("/chain/5?delay=0.2"))
    assert time.monotonic() - started < 1.5
    assert "timed out" in error.reason


async def test_slow_body_times_out(server: Server, fetchers: MakeFetcher) -> None:
    started = time.monotonic()
    error = await failed(fetchers(timeout=0.5), server.url("/stream?first=10&interval=0.1"))
    assert time.monotonic() - started < 1.5
    assert "timed out" in error.reason


async def test_connection_refused_fails(fetchers: MakeFetcher) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await failed(fetchers(), f"http://127.0.0.1:{port}/x")
    assert error.reason.startswith(f"cannot connect to 127.0.0.1:{port}")


async def test_unknown_name_fails(fetchers: MakeFetcher) -> None:
    error = await failed(fetchers(resolver=MapResolver({})), "http://nowhere.test/x")
    assert error.reason.startswith("cannot resolve nowhere.test")


# -- the pieces -----------------------------------------------------------------------------


async def test_policy_resolver_passes_allowed_answers_unchanged() -> None:
    inner = MapResolver({"public.test": ["93.184.216.34", "2606:2800:220:1::"]})
    resolver = PolicyResolver(DENY_ALL, inner)
    results = await resolver.resolve("public.test", 443, socket.AF_UNSPEC)
    assert results == await inner.resolve("public.test", 443, socket.AF_UNSPEC)


async def test_policy_resolver_refuses_a_blocked_answer() -> None:
    resolver = PolicyResolver(DENY_ALL, MapResolver({"x.test": ["93.184.216.34", "10.1.2.3"]}))
    with pytest.raises(AddressRefused, match=r"x\.test resolves to private address 10\.1\.2\.3"):
        await resolver.resolve("x.test", 80)


async def test_policy_resolver_lets_allowed_names_through() -> None:
    policy = AddressPolicy(["Intranet.Test"])
    resolver = PolicyResolver(policy, MapResolver({"intranet.test.": ["10.1.2.3"]}))
    assert len(await resolver.resolve("intranet.test.", 80)) == 1


async def test_policy_resolver_treats_an_empty_answer_as_failure() -> None:
    resolver = PolicyResolver(DENY_ALL, MapResolver({"empty.test": []}))
    with pytest.raises(OSError, match="no address"):
        await resolver.resolve("empty.test", 80)


def test_error_messages_hide_credentials_and_queries() -> None:
    shown = display_url("https://user:secret@host.test/a.png?sig=abc#frag")
    assert shown == "https://host.test/a.png?…"
    assert len(display_url("http://h.test/" + "a" * 1000)) == 200
    error = FetchFailed(
        "https://host.test/a.png?Signature=s3cr3t", "HTTP 403 Forbidden", status=403
    )
    assert "s3cr3t" not in str(error)
    assert error.url.endswith("s3cr3t")


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        UrlFetcher(DENY_ALL, max_bytes=-1)
    with pytest.raises(ValueError):
        UrlFetcher(DENY_ALL, max_bytes=1, timeout=0)
