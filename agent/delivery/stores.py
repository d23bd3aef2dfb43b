"""Output store kinds by URL scheme, tried in order (S3-compatible first; more may follow)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from agent.delivery.output_store import OutputStore, OutputStoreConfigError

# agent.delivery.s3 is imported only when an s3:// URL is used: obstore costs ~4.5 MB of
# every process that stores no outputs.


def _s3(url: str, env: Mapping[str, str] | None) -> OutputStore:
    from agent.delivery.s3 import S3Location, S3OutputStore

    return S3OutputStore(S3Location.parse(url), env=env)


# scheme -> factory(url, env); env None means the process environment.
OUTPUT_STORE_KINDS: dict[str, Callable[[str, Mapping[str, str] | None], OutputStore]] = {
    "s3": _s3,
}


def endpoint_host(url: str) -> str | None:
    """The host an output store URL sends requests to, when it names one (`endpoint=`)."""
    if urlsplit(url).scheme == "s3":
        from agent.delivery.s3 import S3Location

        return S3Location.parse(url).endpoint_host
    return None


def open_output_store(url: str, env: Mapping[str, str] | None = None) -> OutputStore:
    """The output store a URL names; OutputStoreConfigError for unknown or bad URLs."""
    scheme = urlsplit(url).scheme
    factory = OUTPUT_STORE_KINDS.get(scheme)
    if factory is None:
        known = ", ".join(f"{name}://" for name in OUTPUT_STORE_KINDS)
        raise OutputStoreConfigError(f"unknown output store {url!r}; known kinds: {known}")
    return factory(url, env)
