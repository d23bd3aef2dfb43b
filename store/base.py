"""The store protocol every backend implements, and the task id rule they all enforce."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from store.records import TaskRecord

# Task ids end up in file names and Redis keys: letters, digits, '.', '_', '-' only,
# starting with a letter, digit or '_' (Function Compute's async task ids may), never with
# '.' or '-', so no id can climb out of a directory, hide a file or pose as an option.
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


# Names of once-markers (Store.mark_once): they end up in file names and Redis keys too.
MARKER_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")


class StoreError(Exception):
    """The store could not be read or written (unreachable backend, full disk, ...)."""


class ClaimSuperseded(Exception):
    """A write or renewal carried a claim token that is no longer the task's current one.

    Another run took the task over (a newer claim): the old run must stop and write nothing.
    Not a StoreError: retrying can never succeed.
    """

    def __init__(self, task_id: str, token: int, current: int | None) -> None:
        super().__init__(f"task {task_id}: claim token {token} superseded by {current}")
        self.task_id = task_id
        self.token = token
        self.current = current


class InvalidTaskId(ValueError):
    """A task id that does not match TASK_ID_PATTERN."""


def validate_task_id(task_id: str) -> str:
    """Return task_id unchanged if it is a valid task id, else raise InvalidTaskId."""
    if not isinstance(task_id, str) or TASK_ID_PATTERN.fullmatch(task_id) is None:
        raise InvalidTaskId(
            "task id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter,"
            " digit or _"
        )
    return task_id


def validate_marker_name(name: str) -> str:
    """Return name unchanged if it is a valid marker name, else raise ValueError."""
    if not isinstance(name, str) or MARKER_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError("marker name must be 1-32 characters of a-z 0-9 _ starting with a letter")
    return name


@runtime_checkable
class Store(Protocol):
    """Keeps task records; shared by every instance that points at the same backend."""

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Write the record (whole), replacing any earlier version.

        With a claim token (see claim()), the write is fenced: it happens only while token
        is the task's current claim token (or the store remembers none); otherwise nothing
        is written and ClaimSuperseded is raised. Without a token the write is unconditional.
        A terminal record saved with the token of the live claim ends that claim, as
        release() would: the task is free for another run as soon as its outcome is stored.
        (The file store judges that by the files' mtimes, so a final record written within
        the file system's timestamp granularity of its claim leaves it to release().)
        """
        ...

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record, or None when the task is unknown or expired."""
        ...

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if it exists) and on every later change, until it is terminal."""
        ...

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for `lease` s: its new claim token, or None.

        None while another owner holds a live claim. Otherwise (free, lapsed, released, or
        held by `owner` itself: a new run fences the old one) the claim is taken with a new
        token, larger than every earlier token of the task (see store.fencing), and any
        earlier cancel request is cleared, so re-running a task id starts clean. From this
        instant, fenced writes and renewals carrying an older token are refused.
        """
        ...

    async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
        """Extend the claim holding token for `lease` s; False once a newer claim superseded it.

        A claim whose lease lapsed but that nobody took over is taken again (same token):
        its owner was merely slow or frozen, and goes on. A cancel request stands.
        """
        ...

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token (no effect once superseded); the token stays current
        until the next claim, so the run's own late final write still passes the fence."""
        ...

    async def request_cancel(self, task_id: str) -> None:
        """Ask whichever instance runs task_id to interrupt it (kept for the task TTL)."""
        ...

    async def cancel_requested(self, task_id: str) -> bool:
        """True when an interrupt of task_id was requested since it was last claimed anew."""
        ...

    async def mark_once(self, task_id: str, name: str) -> bool:
        """Set marker `name` of task_id unless it is set; True only for the one call that set it.

        Set-if-absent across every instance sharing the store, kept for the task TTL (a day
        when there is none): "deliver this task's webhook" happens once however often the
        task's request is delivered. Independent of claims. `name` matches
        MARKER_NAME_PATTERN.
        """
        ...

    async def close(self) -> None:
        """Release connections and background work."""
        ...
