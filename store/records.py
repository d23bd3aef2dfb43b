"""The task record: what the store keeps for each task."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


class TaskStatus(StrEnum):
    """Lifecycle of a task: queued -> running -> succeeded | failed | interrupted.

    `lost` is a suspicion, not an end: the owner stopped renewing the task's lease (it died,
    or is frozen and may come back), so the task may still change, or be taken over by a
    new run (which fences the old owner out).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    # Never written by an owner: a reader reports it when the owner's lease ran out.
    # Not terminal: the owner may resume (and renew), or a new run may take over.
    LOST = "lost"

    @property
    def is_terminal(self) -> bool:
        """True when the task will not change any more (`lost` may still change)."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.INTERRUPTED})


# Keys of a ComfyUI node output whose entries are files (SaveImage, PreviewImage,
# SaveAnimated*, VideoHelperSuite's Video Combine, SaveVideo, SaveAudio, ...).
FILE_OUTPUT_KEYS = ("images", "gifs", "video", "videos", "audio")


class OutputFile(BaseModel):
    """A file an output node wrote, as ComfyUI names it (the Go agent's image entry)."""

    model_config = ConfigDict(extra="ignore")

    filename: str
    subfolder: str = ""
    type: str = "output"


class NodeProgress(BaseModel):
    """Progress of one workflow node, field for field the Go agent's record (plus `cached`)."""

    model_config = ConfigDict(extra="ignore")

    max: int = 0
    value: int = 0
    start: int = 0
    last_updated: int = 0
    images: list[OutputFile] | None = None
    cached: bool = False
    # Where each of `images` was delivered (same order): s3://bucket/key or a presigned
    # https URL; None (and left out of the JSON) when nothing was uploaded.
    urls: list[str] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_urls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The Go agent's node, unchanged when no output store is used.
        data: dict[str, Any] = handler(self)
        if data.get("urls", ()) is None:
            del data["urls"]
        return data

    @property
    def done(self) -> bool:
        """True when the node finished (value reached a non-zero max)."""
        return self.max > 0 and self.value >= self.max


class TaskError(BaseModel):
    """Why a task failed or was interrupted."""

    model_config = ConfigDict(extra="ignore")

    type: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    details: Any = None


class TaskRecord(BaseModel):
    """Everything known about one task; serialised as JSON by every store."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    prompt_id: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = Field(default_factory=time.time)
    instance: str | None = None
    # The owner renews this while it works on the task; a reader that finds a task not
    # terminal past this time reports it `lost` (its instance died or was frozen: suspected).
    lease_expires_at: float | None = None
    error: TaskError | None = None
    progress: dict[str, NodeProgress] = Field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Seeds the run used (node id -> input -> value), -1 replaced by the random pick.
    seeds: dict[str, dict[str, int]] = Field(default_factory=dict)
    # The app the task ran (None for a plain workflow) and the parameters it was given.
    app: str | None = None
    params: dict[str, Any] | None = None

    def to_json(self) -> str:
        """Serialise for storage."""
        return self.model_dump_json()

    def deep_copy(self) -> TaskRecord:
        """A copy later changes to this record do not touch."""
        # Dump and validate: about 3x faster than model_copy(deep=True)'s copy.deepcopy,
        # which mattered with a copy per store write and per answer of big workflows.
        return TaskRecord.model_validate(self.model_dump())

    @classmethod
    def from_json(cls, data: str | bytes) -> TaskRecord:
        """Parse a stored record."""
        return cls.model_validate_json(data)

    def effective_status(self, now: float) -> TaskStatus:
        """The status a reader reports: `lost` once an unfinished task's lease ran out."""
        if (
            not self.status.is_terminal
            and self.lease_expires_at is not None
            and now > self.lease_expires_at
        ):
            return TaskStatus.LOST
        return self.status

    def as_seen_at(self, now: float) -> TaskRecord:
        """This record with its effective status (a copy when it is lost)."""
        status = self.effective_status(now)
        if status is self.status:
            return self
        return self.model_copy(update={"status": status})

    def progress_map(self) -> dict[str, dict[str, Any]]:
        """The Go agent's progress map: node id -> node progress.

        A node whose output has more than files (text, flags, numbers) also gets that
        under `outputs`, so sync answers carry e.g. a text node's text.
        """
        result = {node_id: node.model_dump(mode="json") for node_id, node in self.progress.items()}
        for node_id, output in self.outputs.items():
            other = {key: value for key, value in output.items() if key not in FILE_OUTPUT_KEYS}
            if other and node_id in result:
                result[node_id]["outputs"] = other
        return result
