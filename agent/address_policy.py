"""Which network addresses image URLs may reach: a pure check, no I/O.

Everything that is not a public unicast address is refused (loopback, private, link-local,
carrier-grade NAT, cloud metadata, multicast, reserved, documentation ranges, ...), unless
the operator allows it with `--url-fetch-allow`. Allow entries (comma-separated in the
setting) are:

- a host name, e.g. `images.internal`: matched exactly (case-insensitive, a trailing dot
  ignored, IDN names compared in their punycode form); every address it resolves to is
  allowed, so list only names whose DNS you trust.
- an IP address, e.g. `10.1.2.3` or `::1` (`[::1]` too): that one address.
- a CIDR network, e.g. `10.1.0.0/16` or `fd00::/8`: every address in it (host bits must
  be zero, so a typo like `10.1.2.3/16` is an error, not a silent widening).

Entries name no port and no scheme: an allowed host is allowed on every port. Wildcards
are not supported. A cloud metadata endpoint (169.254.169.254, 100.100.100.200,
fd00:ec2::254, ...) is opened only by an entry naming that very address (or by a host name
entry), never by a wider network such as `169.254.0.0/16` or `0.0.0.0/0`, because handing
instance credentials to whoever submits a workflow is never what a wide allow meant.

IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
`::a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002::/16`,
Teredo `2001::/32`) are judged by the IPv4 address they carry, with the same rules and the
same allow entries.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services: they hand out cloud credentials, so a wide allow entry never
# opens them. 100.100.100.200 is Alibaba Cloud's (this agent's first platform).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean, Huawei
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS pod identity agent
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity agent over IPv6
    )
)


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in rows)


# Most specific first: the first match names the reason.
_BLOCKED_V4 = _table(
    ("0.0.0.0/8", "unspecified address"),  # connecting to 0.0.0.0 reaches this host on Linux
    ("127.0.0.0/8", "loopback address"),
    ("10.0.0.0/8", "private address"),
    ("172.16.0.0/12", "private address"),
    ("192.168.0.0/16", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT address"),
    ("169.254.0.0/16", "link-local address"),
    ("192.0.0.0/24", "IETF protocol assignment address"),
    ("192.0.2.0/24", "documentation address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("224.0.0.0/4", "multicast address"),
    ("255.255.255.255/32", "broadcast address"),
    ("240.0.0.0/4", "reserved address"),
)
_BLOCKED_V6 = _table(
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("fc00::/7", "private address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("ff00::/8", "multicast address"),
    ("100::/64", "discard-only address"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("2001:db8::/32", "documentation address"),
    ("3fff::/20", "documentation address"),
    ("2001:2::/48", "benchmarking address"),
    ("2001::/23", "IETF protocol assignment address"),
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOW32 = 0xFFFFFFFF

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _normalize_host(host: str) -> str:
    """The form host names are compared in: lower case, no trailing dot, punycode."""
    name = host.strip().rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of the form."""
    if ip in _MAPPED:
        return [(ipaddress.IPv4Address(int(ip) & _LOW32), "IPv4-mapped")]
    if ip in _TRANSLATED:
        return [(ipaddress.IPv4Address(int(ip) & _LOW32), "IPv4-translated")]
    if ip in _NAT64:
        return [(ipaddress.IPv4Address(int(ip) & _LOW32), "NAT64")]
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not IPv4 carriers
        return [(ipaddress.IPv4Address(int(ip) & _LOW32), "IPv4-compatible")]
    if ip.sixtofour is not None:
        return [(ip.sixtofour, "6to4")]
    if ip.teredo is not None:
        server, client = ip.teredo
        return [(server, "Teredo server"), (client, "Teredo client")]
    return []


def _parse_entry(entry: str) -> IPNetwork | str:
    """One allow entry as a network or a normalized host name; ValueError says what's wrong."""
    text = entry.strip()
    if "://" in text:
        raise ValueError(f"allow entry {entry!r} is a URL; give a host name, IP or CIDR")
    if "*" in text:
        raise ValueError(
            f"allow entry {entry!r}: wildcards are not supported; list each host name or use a CIDR"
        )
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ValueError(f"allow entry {entry!r} is not a valid CIDR network: {exc}") from None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return ipaddress.ip_network(address)
    if ":" in text:
        raise ValueError(
            f"allow entry {entry!r}: ports are not supported (an allowed host is allowed on"
            " every port) and it is not an IPv6 address"
        )
    name = _normalize_host(text)
    labels = name.split(".")
    if not name or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"allow entry {entry!r} is not a host name, IP address or CIDR")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"allow entry {entry!r} is not a valid IPv4 address")
    return name


class AddressPolicy:
    """Decides whether a host and one of its addresses may be fetched from."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allow:
            if not entry.strip():
                continue
            parsed = _parse_entry(entry)
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        self._hosts = frozenset(hosts)
        self._networks = tuple(networks)
        self._exact = frozenset(
            net.network_address for net in networks if net.prefixlen == net.max_prefixlen
        )

    def __repr__(self) -> str:
        entries = sorted(self._hosts) + [str(net) for net in self._networks]
        return f"AddressPolicy({entries!r})"

    def allows_host(self, host: str) -> bool:
        """Whether `host` is allow-listed by name (then any address it resolves to is)."""
        return bool(self._hosts) and _normalize_host(host) in self._hosts

    def check(self, host: str | None, ip: IPAddress) -> str | None:
        """None when `host` may be reached at `ip`, else a short reason naming the address."""
        if host is not None and self.allows_host(host):
            return None
        return self._check_ip(ip)

    def _check_ip(self, ip: IPAddress) -> str | None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(int(ip))  # fe80::1%eth0 is judged as fe80::1
        if ip in self._exact:
            return None
        if ip in METADATA_ADDRESSES:
            return f"cloud metadata endpoint {ip}"
        if any(ip in net for net in self._networks):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded:
                for inner, form in embedded:
                    reason = self._check_ip(inner)
                    if reason is not None:
                        return f"{reason} ({form} in {ip})"
                return None
            table = _BLOCKED_V6
        else:
            table = _BLOCKED_V4
        for net, kind in table:
            if ip in net:
                return f"{kind} {ip}"
        # A backstop for ranges the tables miss (e.g. IPv6 space IANA has not allocated).
        if ip.is_reserved:
            return f"reserved address {ip}"
        if not ip.is_global:
            return f"non-public address {ip}"
        return None
