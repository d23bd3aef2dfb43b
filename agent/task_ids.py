"""Which task a request is about: the `task-id` header, FC's async ids, or a new UUID."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from store.base import validate_task_id

# In order of precedence. Header names are case-insensitive (aiohttp's CIMultiDict).
TASK_ID_HEADERS = ("task-id", "x-fc-async-task-id", "x-fc-stateful-async-invocation-id")


def task_id_from_headers(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str:
    """The task id the caller chose (validated), or a fresh UUID."""
    for name in TASK_ID_HEADERS:
        value = headers.get(name)
        if value:
            return validate_task_id(value.strip())
    for name in ("task_id", "task-id"):
        value = (query or {}).get(name)
        if value:
            return validate_task_id(value.strip())
    return str(uuid.uuid4())


def names_task(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> bool:
    """True when the caller chose the task id (else task_id_from_headers makes one up)."""
    return any(headers.get(name) for name in TASK_ID_HEADERS) or any(
        (query or {}).get(name) for name in ("task_id", "task-id")
    )


def is_async_invocation(headers: Mapping[str, str]) -> bool:
    """True when Function Compute delivers this request as an async invocation.

    FC does not document forwarding X-Fc-Invocation-Type to custom containers, so its
    async task id headers count as the signal too.
    """
    if headers.get("x-fc-invocation-type", "").lower() == "async":
        return True
    return any(headers.get(name) for name in TASK_ID_HEADERS[1:])
