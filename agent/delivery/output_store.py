"""The output store protocol: where a task's output files are uploaded after it succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


class OutputStoreError(Exception):
    """An upload or a signing failed; the message names the object and says why."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        # False when another attempt cannot help (access denied, no such bucket).
        self.retryable = retryable


class OutputStoreConfigError(ValueError):
    """An output store URL or its credentials are unusable; the message says what is wrong."""


@runtime_checkable
class OutputStore(Protocol):
    """An object storage bucket (and key prefix) that output files are uploaded to."""

    @property
    def location(self) -> str:
        """The store as a URL without credentials or endpoint, e.g. `s3://bucket/prefix`."""
        ...

    def key_for(self, task_id: str, file_name: str) -> str:
        """The object key of one output file of a task: `<prefix>/<task id>/<file name>`."""
        ...

    def uri(self, key: str) -> str:
        """The permanent address of the object at key (`s3://bucket/key`); no I/O."""
        ...

    async def upload(self, key: str, path: Path, content_type: str) -> None:
        """Upload the local file at path as key, replacing any object there.

        Streams from disk: memory use is bounded by the store's part size times its part
        concurrency, never by the file's size. One call makes the object appear whole or
        not at all. Raises OutputStoreError (with `retryable` set) on failure; it retries
        nothing itself beyond what its client does per request.
        """
        ...

    async def presign(self, key: str, expires_in: float) -> str:
        """A URL anyone may GET the object at key with for expires_in seconds; no I/O."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used after."""
        ...
