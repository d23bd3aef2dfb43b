"""AddressPolicy: which addresses image URLs may reach (pure checks on IP objects)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.address_policy import AddressPolicy

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
IPAddress = IPv4 | IPv6
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The specification, written out independently of the module's own tables.
BLOCKED_V4: list[tuple[str, str]] = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("169.254.0.0/16", "link-local"),
    ("192.0.0.0/24", "IETF"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("192.88.99.0/24", "6to4 relay"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
]
BLOCKED_V6: list[tuple[str, str]] = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    ("100::/64", "discard"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("2001:2::/48", "benchmarking"),
    ("64:ff9b:1::/48", "NAT64"),
]
METADATA = [
    "169.254.169.254",
    "100.100.100.200",
    "fd00:ec2::254",
    "169.254.170.2",
    "169.254.170.23",
    "169.254.0.23",
    "fd00:ec2::23",
]

V4_NETS: list[IPNetwork] = [ipaddress.IPv4Network(net) for net, _ in BLOCKED_V4]
# IPv6 space that is not plain public unicast, or carries an IPv4 address judged on its own.
V6_SPECIAL: list[IPNetwork] = [
    ipaddress.IPv6Network(net)
    for net in [net for net, _ in BLOCKED_V6] + ["2001::/23", "2002::/16", "::/8"]
]

DENY_ALL = AddressPolicy()


def v4_in(net: str) -> st.SearchStrategy[IPv4]:
    """Any IPv4 address of `net`."""
    network = ipaddress.IPv4Network(net)
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(IPv4)


def v6_in(net: str) -> st.SearchStrategy[IPv6]:
    """Any IPv6 address of `net`."""
    network = ipaddress.IPv6Network(net)
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(IPv6)


def blocked_v4() -> st.SearchStrategy[tuple[IPv4, str]]:
    """An IPv4 address of a blocked network with the word its reason must contain."""
    return st.sampled_from(BLOCKED_V4).flatmap(
        lambda row: v4_in(row[0]).map(lambda ip: (ip, row[1]))
    )


def complement(space: str, holes: list[IPNetwork]) -> list[IPNetwork]:
    """The networks that cover `space` minus `holes` (so strategies need no filtering)."""
    remaining: list[IPNetwork] = [ipaddress.ip_network(space)]
    for hole in holes:
        next_remaining: list[IPNetwork] = []
        for net in remaining:
            if net.version != hole.version or not net.overlaps(hole):
                next_remaining.append(net)
            elif hole.supernet_of(net):  # type: ignore[arg-type]
                continue
            else:
                next_remaining.extend(net.address_exclude(hole))  # type: ignore[arg-type]
        remaining = next_remaining
    return remaining


def address_in(nets: list[IPNetwork]) -> st.SearchStrategy[IPAddress]:
    """Any address of any of `nets`."""
    return st.sampled_from(nets).flatmap(
        lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(
            ipaddress.ip_address
        )
    )


PUBLIC_V4 = complement("0.0.0.0/0", list(V4_NETS))
PUBLIC_V6 = complement("2000::/3", V6_SPECIAL)
NON_UNICAST_V6 = complement(
    "::/0", [ipaddress.IPv6Network("2000::/3"), ipaddress.IPv6Network("::/8")]
)


def public_v4() -> st.SearchStrategy[IPv4]:
    """An IPv4 address outside every blocked network."""
    return address_in(PUBLIC_V4)  # type: ignore[return-value]


def embeddings(ip: IPv4) -> list[IPv6]:
    """The IPv6 forms that carry `ip`: mapped, compatible, translated, NAT64, 6to4."""
    value = int(ip)
    forms = [
        IPv6((0xFFFF << 32) | value),
        IPv6((0xFFFF << 48) | value),
        IPv6(int(IPv6("64:ff9b::")) | value),
        IPv6((0x2002 << 112) | (value << 80)),
    ]
    if value > 1:  # ::0.0.0.0 and ::0.0.0.1 are :: and ::1
        forms.append(IPv6(value))
    return forms


def teredo(server: IPv4, client: IPv4) -> IPv6:
    """The Teredo address of `client` behind `server` (client bits inverted, RFC 4380)."""
    return IPv6((0x20010000 << 96) | (int(server) << 64) | (int(client) ^ 0xFFFFFFFF))


# -- fixed examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback address 127.0.0.1"),
        ("127.255.255.254", "loopback address 127.255.255.254"),
        ("::1", "loopback address ::1"),
        ("0.0.0.0", "unspecified address 0.0.0.0"),
        ("0.1.2.3", "unspecified address 0.1.2.3"),
        ("::", "unspecified address ::"),
        ("10.0.0.5", "private address 10.0.0.5"),
        ("172.16.0.1", "private address 172.16.0.1"),
        ("172.31.255.255", "private address 172.31.255.255"),
        ("192.168.1.1", "private address 192.168.1.1"),
        ("fd12:3456::1", "private address fd12:3456::1"),
        ("fc00::1", "private address fc00::1"),
        ("169.254.1.1", "link-local address 169.254.1.1"),
        ("fe80::1", "link-local address fe80::1"),
        ("fe80::1%eth0", "link-local address fe80::1"),
        ("100.64.0.1", "carrier-grade NAT address 100.64.0.1"),
        ("100.127.255.255", "carrier-grade NAT address 100.127.255.255"),
        ("169.254.169.254", "cloud metadata endpoint 169.254.169.254"),
        ("100.100.100.200", "cloud metadata endpoint 100.100.100.200"),
        ("fd00:ec2::254", "cloud metadata endpoint fd00:ec2::254"),
        ("224.0.0.1", "multicast address 224.0.0.1"),
        ("239.255.255.250", "multicast address 239.255.255.250"),
        ("ff02::1", "multicast address ff02::1"),
        ("240.0.0.1", "reserved address 240.0.0.1"),
        ("255.255.255.255", "broadcast address 255.255.255.255"),
        ("192.0.2.1", "documentation address 192.0.2.1"),
        ("198.51.100.7", "documentation address 198.51.100.7"),
        ("203.0.113.9", "documentation address 203.0.113.9"),
        ("2001:db8::1", "documentation address 2001:db8::1"),
        ("198.18.0.1", "benchmarking address 198.18.0.1"),
        ("198.19.255.255", "benchmarking address 198.19.255.255"),
        ("192.0.0.8", "IETF protocol assignment address 192.0.0.8"),
        ("192.0.0.192", "IETF protocol assignment address 192.0.0.192"),  # Oracle metadata
        ("4000::1", "reserved address 4000::1"),
        ("::ffff:10.0.0.1", "private address 10.0.0.1 (IPv4-mapped in ::ffff:a00:1)"),
        ("::ffff:127.0.0.1", "loopback address 127.0.0.1 (IPv4-mapped"),
        ("::ffff:169.254.169.254", "cloud metadata endpoint 169.254.169.254 (IPv4-mapped"),
        ("::10.0.0.1", "private address 10.0.0.1 (IPv4-compatible"),
        ("::127.0.0.1", "loopback address 127.0.0.1 (IPv4-compatible"),
        ("::ffff:0:10.0.0.1", "private address 10.0.0.1 (IPv4-translated"),
        ("64:ff9b::10.0.0.1", "private address 10.0.0.1 (NAT64"),
        ("64:ff9b::100.100.100.200", "cloud metadata endpoint 100.100.100.200 (NAT64"),
        ("64:ff9b:1::1", "local-use NAT64 address"),
        ("2002:a00:1::", "private address 10.0.0.1 (6to4"),
        ("2002:7f00:1::1", "loopback address 127.0.0.1 (6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation address 192.0.2.45 (Teredo"),
    ],
)
def test_blocked_examples(address: str, reason: str) -> None:
    assert (DENY_ALL.check("example.com", ipaddress.ip_address(address)) or "").startswith(reason)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",  # just below carrier-grade NAT
        "100.128.0.0",  # just above it
        "172.15.255.255",
        "172.32.0.0",
        "169.253.255.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001:81b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: public server and client 8.8.8.8
    ],
)
def test_public_examples_allowed(address: str) -> None:
    assert DENY_ALL.check("example.com", ipaddress.ip_address(address)) is None


def test_host_may_be_unknown() -> None:
    assert DENY_ALL.check(None, IPv4("10.0.0.1")) == "private address 10.0.0.1"
    assert DENY_ALL.check(None, IPv4("8.8.8.8")) is None


# -- every address of the blocked ranges -----------------------------------------------


def expected_words(ip: IPAddress, table: list[tuple[str, str]]) -> set[str]:
    """The reason words the spec allows for `ip` (nested ranges allow either)."""
    if ip in {ipaddress.ip_address(m) for m in METADATA}:
        return {"cloud metadata endpoint"}
    return {word for net, word in table if ip in ipaddress.ip_network(net)}


@given(blocked_v4())
def test_every_blocked_ipv4_address_is_refused(case: tuple[IPv4, str]) -> None:
    ip, _ = case
    reason = DENY_ALL.check("example.com", ip)
    assert reason is not None
    assert str(ip) in reason
    assert any(word in reason for word in expected_words(ip, BLOCKED_V4)), reason


@given(st.sampled_from(BLOCKED_V6).flatmap(lambda row: v6_in(row[0]).map(lambda ip: (ip, row[1]))))
def test_every_blocked_ipv6_address_is_refused(case: tuple[IPv6, str]) -> None:
    ip, _ = case
    reason = DENY_ALL.check("example.com", ip)
    assert reason is not None
    assert any(word in reason for word in expected_words(ip, BLOCKED_V6)), reason


@pytest.mark.parametrize("address", ["255.255.255.255", "240.0.0.0", "255.255.255.254"])
def test_reserved_range_edges(address: str) -> None:
    ip = IPv4(address)
    word = "broadcast" if address == "255.255.255.255" else "reserved"
    assert DENY_ALL.check(None, ip) == f"{word} address {address}"


@given(blocked_v4())
def test_ipv6_forms_of_blocked_ipv4_are_refused_alike(case: tuple[IPv4, str]) -> None:
    ip, _ = case
    plain = DENY_ALL.check("example.com", ip)
    assert plain is not None
    for form in embeddings(ip):
        reason = DENY_ALL.check("example.com", form)
        assert reason is not None and reason.startswith(plain), (form, reason)


@given(blocked_v4(), public_v4())
def test_teredo_with_a_blocked_ipv4_is_refused(case: tuple[IPv4, str], public: IPv4) -> None:
    ip, _ = case
    assert DENY_ALL.check(None, teredo(public, ip)) is not None
    assert DENY_ALL.check(None, teredo(ip, public)) is not None


@given(public_v4())
def test_random_public_ipv4_is_allowed_in_every_form(ip: IPv4) -> None:
    assert DENY_ALL.check("example.com", ip) is None
    for form in embeddings(ip):
        assert DENY_ALL.check("example.com", form) is None, form


@given(public_v4(), public_v4())
def test_teredo_between_public_addresses_is_allowed(server: IPv4, client: IPv4) -> None:
    assert DENY_ALL.check(None, teredo(server, client)) is None


@given(address_in(PUBLIC_V6))
def test_random_public_ipv6_is_allowed(ip: IPv6) -> None:
    assert DENY_ALL.check("example.com", ip) is None


@given(address_in(NON_UNICAST_V6))
def test_ipv6_outside_global_unicast_is_refused(ip: IPv6) -> None:
    assert DENY_ALL.check("example.com", ip) is not None


@given(st.integers(0, 2**32 - 1).map(IPv4))
def test_policy_never_allows_what_python_calls_non_global(ip: IPv4) -> None:
    if not ip.is_global:
        assert DENY_ALL.check(None, ip) is not None


# -- allow entries ---------------------------------------------------------------------


def test_host_name_allow_is_exact_and_case_insensitive() -> None:
    policy = AddressPolicy(["Images.Internal"])
    private = IPv4("10.0.0.5")
    for host in ("images.internal", "IMAGES.INTERNAL", "images.internal."):
        assert policy.check(host, private) is None, host
    for host in ("evil.images.internal", "images.internal.evil", "images-internal", "internal"):
        assert policy.check(host, private) == "private address 10.0.0.5", host
    assert policy.check(None, private) is not None


def test_host_name_allow_opens_every_address_of_that_name() -> None:
    policy = AddressPolicy(["localhost", "metadata.google.internal"])
    assert policy.check("localhost", IPv4("127.0.0.1")) is None
    assert policy.check("localhost", IPv6("::1")) is None
    assert policy.check("metadata.google.internal", IPv4("169.254.169.254")) is None
    assert policy.check("other", IPv4("127.0.0.1")) is not None


def test_host_name_allow_with_trailing_dot_and_idn() -> None:
    policy = AddressPolicy(["files.example.", "bücher.example"])
    assert policy.check("FILES.example", IPv4("10.0.0.1")) is None
    assert policy.check("xn--bcher-kva.example", IPv4("10.0.0.1")) is None
    assert policy.check("bücher.example", IPv4("10.0.0.1")) is None


def test_single_address_allow_opens_that_address_only() -> None:
    policy = AddressPolicy(["127.0.0.1"])
    assert policy.check("x", IPv4("127.0.0.1")) is None
    assert policy.check("x", IPv4("127.0.0.2")) == "loopback address 127.0.0.2"
    assert policy.check("x", IPv6("::1")) is not None
    assert policy.check("x", IPv6("::ffff:127.0.0.1")) is None  # the same address, mapped
    assert AddressPolicy(["127.0.0.1/32"]).check("x", IPv4("127.0.0.2")) is not None


@pytest.mark.parametrize("entry", ["::1", "[::1]", "::1/128"])
def test_ipv6_loopback_allow(entry: str) -> None:
    policy = AddressPolicy([entry])
    assert policy.check("x", IPv6("::1")) is None
    assert policy.check("x", IPv4("127.0.0.1")) is not None
    assert policy.check("x", IPv6("::2")) is not None


@given(v4_in("10.1.0.0/16"))
def test_cidr_allow_opens_its_addresses(ip: IPv4) -> None:
    policy = AddressPolicy(["10.1.0.0/16"])
    assert policy.check("x", ip) is None
    assert policy.check("x", IPv6((0xFFFF << 32) | int(ip))) is None


@given(blocked_v4())
def test_cidr_allow_opens_nothing_outside(case: tuple[IPv4, str]) -> None:
    ip, _ = case
    assume(ip not in ipaddress.IPv4Network("10.1.0.0/16"))
    assert AddressPolicy(["10.1.0.0/16"]).check("x", ip) is not None


@given(v6_in("fd00::/8"))
def test_ipv6_cidr_allow(ip: IPv6) -> None:
    policy = AddressPolicy(["fd00::/8"])
    if ip in {IPv6("fd00:ec2::254"), IPv6("fd00:ec2::23")}:
        assert (policy.check("x", ip) or "").startswith("cloud metadata endpoint")
    else:
        assert policy.check("x", ip) is None
    assert policy.check("x", IPv6("fc00::1")) is not None


def test_metadata_is_opened_only_by_naming_it() -> None:
    wide = AddressPolicy(["169.254.0.0/16", "100.64.0.0/10", "0.0.0.0/0", "::/0"])
    for address in METADATA:
        reason = wide.check("x", ipaddress.ip_address(address))
        assert reason == f"cloud metadata endpoint {address}"
    assert wide.check("x", IPv4("169.254.1.1")) is None
    assert wide.check("x", IPv4("10.0.0.1")) is None
    exact = AddressPolicy(["169.254.169.254", "fd00:ec2::254/128"])
    assert exact.check("x", IPv4("169.254.169.254")) is None
    assert exact.check("x", IPv6("::ffff:169.254.169.254")) is None
    assert exact.check("x", IPv6("fd00:ec2::254")) is None
    assert exact.check("x", IPv4("100.100.100.200")) is not None


def test_empty_entries_are_ignored() -> None:
    assert AddressPolicy(["", "  "]).check("x", IPv4("127.0.0.1")) is not None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("images.internal:8080", "ports are not supported"),
        ("10.0.0.1:80", "ports are not supported"),
        ("http://images.internal", "is a URL"),
        ("*.internal", "wildcards"),
        ("10.1.2.3/16", "not a valid CIDR"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("10.1", "not a valid IPv4"),
        ("256.1.1.1", "not a valid IPv4"),
        ("bad host", "not a host name"),
        ("-leading.example", "not a host name"),
        ("a..b", "not a host name"),
    ],
)
def test_bad_allow_entries_are_errors(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AddressPolicy([entry])


def test_repr_lists_the_entries() -> None:
    assert repr(AddressPolicy(["B.example", "10.0.0.0/8"])) == (
        "AddressPolicy(['b.example', '10.0.0.0/8'])"
    )
