"""The agent's own origin rule (agent/http/origin.py): pure, so tested exhaustively."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.http.origin import (
    OriginGuard,
    agent_addresses,
    is_same_origin_request,
    parse_host,
    parse_origin,
    upstream_origin,
)


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"Host": "127.0.0.1:9000", "Origin": "http://127.0.0.1:9000"}, True),
        ({"Host": "127.0.0.1:9000", "Origin": "http://127.0.0.1:9001"}, False),
        ({"Host": "127.0.0.1:9000", "Origin": "http://localhost:9000"}, False),
        ({"Host": "127.0.0.1:9000", "Origin": "http://127.0.0.1"}, False),
        ({"Host": "LOCALHOST:9000", "Origin": "http://localhost:9000"}, True),
        ({"Host": "[::1]:9000", "Origin": "http://[::1]:9000"}, True),
        ({"Host": "x.fcapp.run", "Origin": "https://x.fcapp.run"}, True),  # TLS in front
        ({"Host": "x.fcapp.run", "Origin": "http://x.fcapp.run"}, True),
        ({"Host": "x.fcapp.run", "Origin": "https://x.fcapp.run:8443"}, False),
        ({"Host": "x.fcapp.run", "Origin": "https://x.fcapp.run:443"}, True),
        ({"Host": "x.fcapp.run", "Origin": "http://x.fcapp.run:443"}, False),
        ({"Host": "x.fcapp.run:443", "Origin": "https://x.fcapp.run"}, True),
        ({"Host": "x.fcapp.run:80", "Origin": "https://x.fcapp.run"}, False),
        ({"Host": "x.fcapp.run", "Origin": "https://evil.example"}, False),
        ({"Host": "x.fcapp.run", "Origin": "https://x.fcapp.run.evil.example"}, False),
        ({"Host": "127.0.0.1:9000", "Origin": "null"}, False),
        ({"Host": "127.0.0.1:9000", "Origin": "file://"}, False),
        ({"Host": "127.0.0.1:9000", "Origin": "http://127.0.0.1:99999"}, False),
        ({"Host": "127.0.0.1:bad", "Origin": "http://127.0.0.1:9000"}, False),
        ({"Origin": "http://127.0.0.1:9000"}, False),  # no Host at all
        # Behind a reverse proxy that rewrote Host to the agent's inner address.
        (
            {
                "Host": "10.0.0.5:9000",
                "X-Forwarded-Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "https://comfy.example.com",
            },
            True,
        ),
        (
            {
                "Host": "10.0.0.5:9000",
                "X-Forwarded-Host": "comfy.example.com, inner.proxy",
                "X-Forwarded-Proto": "https,http",
                "Origin": "https://comfy.example.com",
            },
            True,
        ),
        (  # the scheme is known, so it must match
            {
                "Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "http://comfy.example.com",
            },
            False,
        ),
        (
            {
                "Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "https://comfy.example.com",
            },
            True,
        ),
        (
            {
                "Host": "comfy.example.com",
                "X-Forwarded-Proto": "https",
                "Origin": "https://comfy.example.com:8443",
            },
            False,
        ),
        (
            {
                "Host": "10.0.0.5:9000",
                "X-Forwarded-Host": "comfy.example.com:8443",
                "X-Forwarded-Proto": "https",
                "Origin": "https://comfy.example.com:8443",
            },
            True,
        ),
        (
            {
                "Host": "10.0.0.5:9000",
                "X-Forwarded-Host": "comfy.example.com",
                "Origin": "https://evil.example",
            },
            False,
        ),
    ],
)
def test_same_origin_table(headers: dict[str, str], same: bool) -> None:
    assert is_same_origin_request(headers) is same


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
ports = st.integers(min_value=1, max_value=65535)
schemes = st.sampled_from(["http", "https"])


@given(host=hosts, port=ports, scheme=schemes)
def test_a_page_served_by_the_agent_is_same_origin(host: str, port: int, scheme: str) -> None:
    headers = {"Host": f"{host}:{port}", "Origin": f"{scheme}://{host}:{port}"}
    assert is_same_origin_request(headers)
    assert is_same_origin_request({**headers, "Host": f"{host.upper()}:{port}"})


@given(host=hosts, other=hosts, port=ports, other_port=ports, scheme=schemes)
def test_another_host_or_port_is_foreign(
    host: str, other: str, port: int, other_port: int, scheme: str
) -> None:
    parsed_host = parse_host(host, None)
    parsed_other = parse_host(other, None)
    assert parsed_host is not None and parsed_other is not None
    headers = {"Host": f"{host}:{port}", "Origin": f"{scheme}://{other}:{other_port}"}
    expected = parsed_host.host == parsed_other.host and port == other_port
    assert is_same_origin_request(headers) is expected


@given(value=st.text(max_size=40))
def test_any_header_text_is_safe(value: str) -> None:
    parse_origin(value)
    parse_host(value, "https")
    agent_addresses({"Host": value, "X-Forwarded-Host": value, "X-Forwarded-Proto": value})
    assert is_same_origin_request({"Host": "a:1", "Origin": value}) in (True, False)


def test_guard_lets_no_origin_same_origin_and_listed_origins_through() -> None:
    guard = OriginGuard(lambda origin: origin == "http://127.0.0.1:9300")
    host = {"Host": "127.0.0.1:9000"}
    assert guard.allows(host)
    assert guard.allows({**host, "Origin": "http://127.0.0.1:9000"})
    assert guard.allows({**host, "Origin": "http://127.0.0.1:9300"})
    assert not guard.allows({**host, "Origin": "http://127.0.0.1:9301"})
    assert not guard.allows({**host, "Origin": "null"})


@pytest.mark.parametrize(
    ("base", "origin"),
    [
        ("http://127.0.0.1:9001", "http://127.0.0.1:9001"),
        ("http://127.0.0.1:9001/", "http://127.0.0.1:9001"),
        ("http://[::1]:8188", "http://[::1]:8188"),
        ("http://comfy", "http://comfy"),
        ("https://comfy.internal:443/sub", "https://comfy.internal"),
    ],
)
def test_upstream_origin_is_what_comfyui_sees_as_its_own(base: str, origin: str) -> None:
    assert upstream_origin(base) == origin
