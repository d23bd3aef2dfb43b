"""Task store: where task records live so that every instance can answer for every task."""

from typing import TYPE_CHECKING, Any

from store.base import ClaimSuperseded, InvalidTaskId, Store, StoreError, validate_task_id
from store.factory import open_store
from store.file import FileStore
from store.memory import MemoryStore
from store.records import (
    NodeProgress,
    OutputFile,
    TaskError,
    TaskRecord,
    TaskStatus,
)

if TYPE_CHECKING:
    from store.redis import RedisStore

__all__ = [
    "ClaimSuperseded",
    "FileStore",
    "InvalidTaskId",
    "MemoryStore",
    "NodeProgress",
    "OutputFile",
    "RedisStore",
    "Store",
    "StoreError",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "open_store",
    "validate_task_id",
]


def __getattr__(name: str) -> Any:
    # RedisStore is imported on first use: redis-py costs ~6 MB of RSS that file and
    # memory deployments do not need.
    if name == "RedisStore":
        from store.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
