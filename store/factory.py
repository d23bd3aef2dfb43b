"""Open the store a URL names (the --store option / STORE_URL setting)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote

from store.base import Store, StoreError
from store.file import FileStore
from store.memory import MemoryStore

ACCEPTED_URLS = (
    "memory://",
    "file:///absolute/dir",
    "file://./relative/dir",
    "redis://host:port/db",
    "rediss://host:port/db",
)

# Query parameters a file:// URL may carry, passed to FileStore as floats.
_FILE_OPTIONS = ("poll_interval", "sweep_interval", "temp_max_age")


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
        # `instance` is for the Redis store (client name, lease owner); unused until then.
        raise StoreError("redis store not available yet; use memory:// or file://")
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
