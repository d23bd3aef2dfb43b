"""Task store: where task records live so that every instance can answer for every task."""

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
