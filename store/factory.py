"""Open the store a URL names (the --store option / STORE_URL setting)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from store.base import Store
from store.file import FileStore
from store.memory import MemoryStore

if TYPE_CHECKING:
    # Imported when a redis:// URL is opened: redis-py costs ~6 MB of every process.
    from store.redis import RedisStore

ACCEPTED_URLS = (
    "memory://",
    "file:///absolute/dir",
    "file://./relative/dir",
    "redis://host:port/db",
    "rediss://host:port/db",
)

# Query parameters a file:// URL may carry, passed to FileStore as floats.
_FILE_OPTIONS = ("poll_interval", "sweep_interval", "temp_max_age")
# Query parameters a redis:// URL may carry: RedisStore keywords (positive numbers)...
_REDIS_SECONDS = ("socket_timeout", "connect_timeout", "reconnect_limit", "keepalive")
# ...and redis-py TLS settings, for rediss:// only.
_REDIS_TLS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")
_REDIS_OPTIONS = ("prefix", *_REDIS_SECONDS, "retries", *_REDIS_TLS)
_CERT_REQS = ("none", "optional", "required")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def open_store(url: str, *, ttl: float | None, instance: str | None = None) -> Store:
    """Build (without I/O) the store for url; ttl in seconds, 0/None keeps records forever."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ValueError(f"store URL {url!r} has no scheme; accepted: {', '.join(ACCEPTED_URLS)}")
    if scheme == "memory":
        if rest not in ("", "/"):
            raise ValueError(f"memory:// takes no path or options, got {url!r}")
        return MemoryStore(ttl=ttl)
    if scheme == "file":
        return _open_file_store(url, rest, ttl)
    if scheme in ("redis", "rediss"):
        return _open_redis_store(url, ttl, instance)
    raise ValueError(
        f"unknown store scheme {scheme!r} in {url!r}; accepted: {', '.join(ACCEPTED_URLS)}"
    )


def _open_file_store(url: str, rest: str, ttl: float | None) -> FileStore:
    location, _, query = rest.partition("?")
    return FileStore(_file_directory(url, unquote(location)), ttl=ttl, **_file_options(url, query))


def _file_directory(url: str, location: str) -> Path:
    if location.startswith("localhost/"):
        location = location[len("localhost") :]
    if location.startswith("/") and location != "/":
        return Path(location)
    if location == "." or location.startswith(("./", "../")) or location == "..":
        # Resolved now, so a later chdir does not move the store.
        return Path.cwd() / location
    raise ValueError(
        f"file store URL {url!r} must be file:///absolute/dir or file://./relative/dir"
        " (remote hosts are not supported: mount the share and use its path)"
    )


def _file_options(url: str, query: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if name not in _FILE_OPTIONS:
            raise ValueError(
                f"unknown option {name!r} in {url!r}; accepted: {', '.join(_FILE_OPTIONS)}"
            )
        try:
            options[name] = float(value)
        except ValueError:
            raise ValueError(f"option {name} in {url!r} must be a number, got {value!r}") from None
    return options


def _open_redis_store(url: str, ttl: float | None, instance: str | None) -> RedisStore:
    try:
        parts = urlsplit(url)
        # Reading .port validates it.
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError as exc:
        raise ValueError(f"bad redis store URL {url!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"redis store URL {url!r} names no host; expected redis://host:port/db")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"redis store URL {url!r}: the path must be a database number")
    if parts.fragment:
        raise ValueError(f"redis store URL {url!r} must not have a #fragment")
    scheme = parts.scheme.lower()
    options = _redis_options(url, scheme, parts.query)
    # The query is ours (validated above), so redis-py gets the URL without it.
    base = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    from store.redis import RedisStore

    return RedisStore(base, ttl=ttl, instance=instance, **options)


def _redis_options(url: str, scheme: str, query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    client_options: dict[str, Any] = {}
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    for name, value in pairs:
        if name not in _REDIS_OPTIONS or (name in _REDIS_TLS and scheme != "rediss"):
            accepted = [o for o in _REDIS_OPTIONS if scheme == "rediss" or o not in _REDIS_TLS]
            raise ValueError(f"unknown option {name!r} in {url!r}; accepted: {', '.join(accepted)}")
        if name in options or name in client_options:
            raise ValueError(f"option {name} given twice in {url!r}")
        if name == "prefix":
            options[name] = value
        elif name in _REDIS_SECONDS:
            options[name] = _number(url, name, value, float)
        elif name == "retries":
            options[name] = _number(url, name, value, int)
        elif name == "ssl_cert_reqs":
            if value not in _CERT_REQS:
                raise ValueError(f"{name} in {url!r} must be one of {', '.join(_CERT_REQS)}")
            client_options[name] = value
        elif name == "ssl_check_hostname":
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"{name} in {url!r} must be true or false, got {value!r}")
            client_options[name] = _BOOLEANS[value.lower()]
        else:
            client_options[name] = value
    if client_options:
        options["client_options"] = client_options
    return options


def _number(url: str, name: str, value: str, kind: type[float] | type[int]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"option {name} in {url!r} must be a number, got {value!r}") from None
    if number < 0 or (kind is float and number == 0):
        raise ValueError(f"option {name} in {url!r} is out of range: {value!r}")
    return number
