"""Task store: where task records live so that every instance can answer for every task."""

from store.base import InvalidTaskId, Store, StoreError, validate_task_id
from store.records import (
    NodeProgress,
    OutputFile,
    TaskError,
    TaskRecord,
    TaskStatus,
)

__all__ = [
    "InvalidTaskId",
    "NodeProgress",
    "OutputFile",
    "Store",
    "StoreError",
    "TaskError",
    "TaskRecord",
    "TaskStatus",
    "validate_task_id",
]
