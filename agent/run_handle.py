"""A run's handle (live record, change and preview notifications), its options and hooks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from store.records import OutputFile, TaskError, TaskRecord, TaskStatus


def task_log(record: TaskRecord | RunHandle | str) -> dict[str, str | None]:
    """`extra=` for log calls about a task: JSON logs get task_id and prompt_id fields."""
    if isinstance(record, str):
        return {"task_id": record, "prompt_id": None}
    if isinstance(record, RunHandle):
        record = record.record
    return {"task_id": record.task_id, "prompt_id": record.prompt_id}


class RunHooks(Protocol):
    """What happens at the end of every run (output delivery, webhooks): see agent/delivery."""

    async def before_success(self, handle: RunHandle) -> TaskError | None:
        """Deliver a succeeded run's outputs while it still shows running; an error fails it."""
        ...

    def after_end(self, handle: RunHandle) -> None:
        """The run ended and its final record was written (or queued for retry)."""
        ...


@dataclass
class RunOptions:
    """Timing knobs of a run."""

    run_timeout: float = 3600.0
    ready_timeout: float = 120.0
    connect_timeout: float = 5.0
    flush_interval: float = 0.25
    # With no event for this long, ask /history whether the prompt ended unnoticed.
    history_poll_interval: float = 2.0
    # A run renews its claim and record this often (lease/3); readers call a task whose
    # lease ran out `lost`.
    lease: float = 30.0
    # How often a run asks the store whether another instance requested its interrupt.
    cancel_poll_interval: float = 1.0


@dataclass(slots=True)
class ComfyUITime:
    """When ComfyUI had a run (time.perf_counter): from its prompt's POST /prompt starting
    to the run's end (ComfyUI's last event, or the agent's own stop)."""

    posted_at: float | None = None
    ended_at: float | None = None


@dataclass
class RunHandle:
    """A task running on this instance: its live record and change notifications."""

    record: TaskRecord
    workflow: dict[str, dict[str, Any]]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the record turns terminal in memory, before its final write (done follows).
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _preview_queues: list[asyncio.Queue[bytes]] = field(default_factory=list)
    # Set from outside the run (child died, shutdown, interrupt of a queued prompt): the
    # run ends with this status and error at its next wake-up.
    abort: tuple[TaskStatus, TaskError] | None = None
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    # What the run waits on before its prompt is posted (ComfyUI ready, inputs uploaded):
    # an abort cancels it at once.
    waiting: asyncio.Future[Any] | None = None
    submitted: bool = False
    task: asyncio.Task[None] | None = None
    # What the request asked of delivery (agent.delivery.DeliveryPlan); the runner only
    # passes it to its hooks.
    delivery: object = None
    # Another run took the task over (agent.run_claim): this one stopped and wrote nothing;
    # the store holds the task's real state.
    superseded: bool = False
    # Called with each output file as soon as ComfyUI reports it written (see outputs_of).
    output_listeners: list[Callable[[OutputFile], object]] = field(default_factory=list)
    # Set by a caller answered when the run ends, once its answer is sent: the claim is
    # released after that (bounded), so the release's store I/O does not slow the answer.
    answered: asyncio.Event | None = None
    # Filled by the run loop; a sync caller measures the agent's own time around it.
    comfyui: ComfyUITime = field(default_factory=ComfyUITime)

    @property
    def task_id(self) -> str:
        """The task id."""
        return self.record.task_id

    def snapshot(self) -> TaskRecord:
        """A copy of the record that later changes do not touch."""
        return self.record.deep_copy()

    def outputs_of(self, node_id: str | None) -> None:
        """Tell the output listeners about the files node_id reported (its `executed`)."""
        node = self.record.progress.get(node_id) if node_id is not None else None
        if node is None or not self.output_listeners:
            return
        for file in node.images or ():
            for listener in self.output_listeners:
                listener(file)

    def set_abort(self, status: TaskStatus, error: TaskError) -> bool:
        """End the run with status and error at its next wake-up; False if already set."""
        if self.abort is not None:
            return False
        self.abort = (status, error)
        self.aborted.set()
        if self.waiting is not None:
            self.waiting.cancel()
        return True

    async def notify(self) -> None:
        """Wake every watcher of this run."""
        self.version += 1
        async with self._changed:
            self._changed.notify_all()

    async def updates(self) -> AsyncGenerator[TaskRecord, None]:
        """Yield a snapshot now and after every change, ending with the terminal record."""
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(self._newer_than(seen))
                seen = self.version
                snapshot = self.snapshot()
            if self.superseded:
                return  # what this run holds is not the task's state any more
            yield snapshot
            if snapshot.status.is_terminal and self.done.is_set():
                return

    def _newer_than(self, seen: int) -> Callable[[], bool]:
        return lambda: self.version != seen

    def add_preview_listener(self) -> asyncio.Queue[bytes]:
        """A queue of raw preview frames (ComfyUI's binary format) for one client."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._preview_queues.append(queue)
        return queue

    def remove_preview_listener(self, queue: asyncio.Queue[bytes]) -> None:
        """Stop sending previews to queue."""
        with contextlib.suppress(ValueError):
            self._preview_queues.remove(queue)

    def publish_preview(self, frame: bytes) -> None:
        """Give a preview frame to every listener; slow listeners skip frames."""
        for queue in self._preview_queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(frame)
