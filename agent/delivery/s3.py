"""Output store on S3-compatible object storage (AWS S3, Alibaba OSS, MinIO, ...) via obstore.

URL: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]`.
- `endpoint`: the service's base URL (`https://oss-cn-hangzhou.aliyuncs.com`); AWS when absent.
- `region`: the signing region (`cn-hangzhou`; default `us-east-1`).
- `path_style`: `https://host/bucket/key` instead of `https://bucket.host/key`. By default
  path style is used only for IP-literal and `localhost` endpoints (MinIO, moto), since
  OSS accepts virtual-hosted requests only.
Credentials: `AGENT_OUTPUT_STORE_ACCESS_KEY_ID`, `AGENT_OUTPUT_STORE_SECRET_ACCESS_KEY`,
`AGENT_OUTPUT_STORE_SESSION_TOKEN`, else the standard `AWS_*` variables of the same names.
Never in the URL: URLs end up in logs and request headers.

obstore was chosen over aiobotocore and opendal by tests/benchmarks/bench_s3_clients.py:
equal throughput against the same server (the server was the limit), presigning ~5x
faster than aiobotocore, multipart uploads straight from a file path with bounded memory
(part size x part concurrency), one self-contained wheel, and no botocore default
checksum headers that S3-compatible services such as OSS refuse.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import obstore
from obstore.exceptions import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store
from pydantic import BaseModel, ConfigDict, Field

from agent.delivery.output_store import OutputStoreConfigError, OutputStoreError

if TYPE_CHECKING:
    from obstore.store import S3Config

# Multipart part size and parts in flight per file: the memory an upload may take.
PART_SIZE = 8 * 1024 * 1024
PART_CONCURRENCY = 2
_QUERY_KEYS = frozenset({"endpoint", "region", "path_style"})
_CREDENTIAL_NAMES = ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN")
# Read from the environment by the store itself (credentials are never settings or URLs).
CREDENTIAL_VARIABLES = tuple(f"AGENT_OUTPUT_STORE_{name}" for name in _CREDENTIAL_NAMES)
# obstore raises the builtin FileNotFoundError / PermissionError for 404 / 403 too.
_NOT_RETRYABLE = (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    FileNotFoundError,
    PermissionError,
)


class S3Location(BaseModel):
    """Where outputs go, as an `s3://` URL names it (credentials come from the environment)."""

    model_config = ConfigDict(frozen=True)

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool = False

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Read an `s3://` URL; OutputStoreConfigError says what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname:
            raise OutputStoreConfigError(f"output store must be s3://BUCKET/PREFIX, not {url!r}")
        if parts.username or parts.password:
            raise OutputStoreConfigError(
                "credentials do not go in the output store URL: set AGENT_OUTPUT_STORE_* "
                "or AWS_* variables"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(query) - _QUERY_KEYS
        if unknown:
            raise OutputStoreConfigError(
                f"unknown output store option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_QUERY_KEYS))}"
            )
        endpoint = query.get("endpoint") or None
        if endpoint is not None:
            endpoint_parts = urlsplit(endpoint)
            if endpoint_parts.scheme not in ("http", "https") or not endpoint_parts.hostname:
                raise OutputStoreConfigError(f"endpoint must be an http(s) URL, not {endpoint!r}")
            endpoint = endpoint.rstrip("/")
        path_style = query.get("path_style")
        if path_style is None:
            style = endpoint is not None and _is_local_or_ip(urlsplit(endpoint).hostname or "")
        elif path_style.lower() in ("1", "true", "yes"):
            style = True
        elif path_style.lower() in ("0", "false", "no"):
            style = False
        else:
            raise OutputStoreConfigError(f"path_style must be true or false, not {path_style!r}")
        try:
            return cls(
                bucket=parts.hostname,
                prefix=parts.path.strip("/"),
                endpoint=endpoint,
                region=query.get("region") or "us-east-1",
                path_style=style,
            )
        except ValueError as exc:
            raise OutputStoreConfigError(f"bad output store URL {url!r}: {exc}") from None

    @property
    def endpoint_host(self) -> str | None:
        """The endpoint's host name, if an endpoint is given."""
        return urlsplit(self.endpoint).hostname if self.endpoint else None


def _is_local_or_ip(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def credentials_from(env: Mapping[str, str]) -> dict[str, str]:
    """obstore credential options from AGENT_OUTPUT_STORE_* or else AWS_* variables."""
    own = {name: env.get(f"AGENT_OUTPUT_STORE_{name}") for name in _CREDENTIAL_NAMES}
    source = own if own["ACCESS_KEY_ID"] else {n: env.get(f"AWS_{n}") for n in _CREDENTIAL_NAMES}
    return {name.lower(): value for name, value in source.items() if value}


class S3OutputStore:
    """An S3-compatible bucket and prefix; uploads are multipart from disk when large."""

    def __init__(
        self,
        location: S3Location,
        *,
        env: Mapping[str, str] | None = None,
        request_timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        self._where = location
        config: dict[str, Any] = {
            "region": location.region,
            "virtual_hosted_style_request": not location.path_style,
            **credentials_from(os.environ if env is None else env),
        }
        if location.endpoint:
            endpoint = location.endpoint
            if not location.path_style:
                # obstore wants the bucket in a virtual-hosted endpoint already.
                scheme, _, host = endpoint.partition("://")
                endpoint = f"{scheme}://{location.bucket}.{host}"
            config["endpoint"] = endpoint
        client_options: dict[str, Any] = {
            "allow_http": True,
            "connect_timeout": timedelta(seconds=10),
            "timeout": timedelta(seconds=request_timeout),
        }
        s3_config: S3Config = config  # type: ignore[assignment]
        self._store = S3Store(
            location.bucket,
            config=s3_config,
            client_options=client_options,  # type: ignore[arg-type]
            retry_config={"max_retries": max_retries},
        )

    @property
    def location(self) -> str:
        """`s3://bucket/prefix`."""
        suffix = f"/{self._where.prefix}" if self._where.prefix else ""
        return f"s3://{self._where.bucket}{suffix}"

    def key_for(self, task_id: str, file_name: str) -> str:
        """`<prefix>/<task id>/<file name>` (no leading slash)."""
        parts = [self._where.prefix, task_id, file_name]
        return "/".join(part for part in parts if part)

    def uri(self, key: str) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self._where.bucket}/{key}"

    async def upload(self, key: str, path: Path, content_type: str) -> None:
        """Upload path as key, multipart (PART_SIZE parts, PART_CONCURRENCY at once) if large."""
        try:
            await obstore.put_async(
                self._store,
                key,
                path,
                attributes={"Content-Type": content_type},
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        except _NOT_RETRYABLE as exc:
            raise OutputStoreError(_short(exc), retryable=False) from None
        except Exception as exc:  # obstore's errors for network, 5xx, I/O
            raise OutputStoreError(_short(exc)) from None

    async def presign(self, key: str, expires_in: float) -> str:
        """A presigned GET URL valid for expires_in seconds."""
        try:
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=expires_in))
        except Exception as exc:
            raise OutputStoreError(f"cannot sign {key}: {_short(exc)}", retryable=False) from None

    async def close(self) -> None:
        """obstore keeps no connection that needs closing."""


def _short(exc: Exception) -> str:
    """obstore's message without its multi-line debug dump."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:500]
