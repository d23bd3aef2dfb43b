"""Runs tasks on ComfyUI: submit, follow events, keep the record, store it coalesced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.progress import Outcome, ProgressTracker
from comfyui.client import ComfyUIClient, ComfyUIUnavailable, PromptRejected
from comfyui.event_stream import ConnectionGap, EventStream
from comfyui.events import BinaryFrame
from store.base import Store
from store.records import NodeProgress, TaskError, TaskRecord, TaskStatus

log = logging.getLogger("agent.runner")

# Prepares a workflow before it is posted (uploads inline images, fills random seeds).
WorkflowPreparer = Callable[[dict[str, dict[str, Any]]], Awaitable[dict[str, dict[str, Any]]]]

_OUTCOME_STATUS = {
    Outcome.SUCCEEDED: TaskStatus.SUCCEEDED,
    Outcome.FAILED: TaskStatus.FAILED,
    Outcome.INTERRUPTED: TaskStatus.INTERRUPTED,
}


class Readiness(Protocol):
    """What the runner needs of the ComfyUI backend (child supervisor or attached server)."""

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until ComfyUI answers; False on timeout."""
        ...


class TaskAlreadyRunning(Exception):
    """A task with this id runs on this instance already."""


class QueueFull(Exception):
    """--max-queue tasks are queued or running here already."""


class ShuttingDown(Exception):
    """The agent stopped accepting work."""


class InputError(Exception):
    """A workflow input could not be prepared (unfetchable or undecodable image, ...)."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


@dataclass
class RunOptions:
    """Timing knobs of a run."""

    run_timeout: float = 3600.0
    ready_timeout: float = 120.0
    connect_timeout: float = 5.0
    flush_interval: float = 0.25
    # With no event for this long, ask /history whether the prompt ended unnoticed.
    history_poll_interval: float = 2.0


@dataclass
class RunHandle:
    """A task running on this instance: its live record and change notifications."""

    record: TaskRecord
    workflow: dict[str, dict[str, Any]]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _preview_queues: list[asyncio.Queue[bytes]] = field(default_factory=list)
    # Set from outside the run (child died, shutdown, interrupt of a queued prompt): the
    # run ends with this status and error at its next wake-up.
    abort: tuple[TaskStatus, TaskError] | None = None
    submitted: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def task_id(self) -> str:
        """The task id."""
        return self.record.task_id

    def snapshot(self) -> TaskRecord:
        """A copy of the record that later changes do not touch."""
        return self.record.model_copy(deep=True)

    async def notify(self) -> None:
        """Wake every watcher of this run."""
        self.version += 1
        async with self._changed:
            self._changed.notify_all()

    async def updates(self) -> AsyncIterator[TaskRecord]:
        """Yield a snapshot now and after every change, ending with the terminal record."""
        seen = -1
        while True:
            async with self._changed:
                await self._changed.wait_for(self._newer_than(seen))
                seen = self.version
                snapshot = self.snapshot()
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


class TaskRunner:
    """Starts runs on this instance and keeps each one's record in the store."""

    def __init__(
        self,
        *,
        client: ComfyUIClient,
        events: EventStream,
        store: Store,
        backend: Readiness,
        instance: str,
        options: RunOptions | None = None,
        prepare: WorkflowPreparer | None = None,
        max_queue: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._events = events
        self._store = store
        self._backend = backend
        self._instance = instance
        self._options = options or RunOptions()
        self._prepare = prepare
        self._max_queue = max_queue
        self._clock = clock
        self.active: dict[str, RunHandle] = {}
        self.accepting = True
        self.store_failures = 0

    def start(self, task_id: str, workflow: dict[str, dict[str, Any]]) -> RunHandle:
        """Begin a run in the background and return its handle at once."""
        if not self.accepting:
            raise ShuttingDown("the agent is shutting down")
        if task_id in self.active:
            raise TaskAlreadyRunning(task_id)
        if self._max_queue and len(self.active) >= self._max_queue:
            raise QueueFull(f"{len(self.active)} tasks are queued or running on this instance")
        now = self._clock()
        record = TaskRecord(
            task_id=task_id,
            status=TaskStatus.QUEUED,
            created_at=now,
            updated_at=now,
            instance=self._instance,
        )
        record.progress = {node_id: NodeProgress() for node_id in workflow}
        handle = RunHandle(record=record, workflow=workflow)
        self.active[task_id] = handle
        handle.task = asyncio.create_task(self._run(handle), name=f"run-{task_id}")
        return handle

    def get(self, task_id: str) -> RunHandle | None:
        """The handle of a task running here, if any."""
        return self.active.get(task_id)

    def abort_all(self, error: TaskError) -> int:
        """Fail every run whose prompt was handed to ComfyUI (the child died); return count."""
        count = 0
        for handle in self.active.values():
            if handle.submitted and handle.abort is None:
                handle.abort = (TaskStatus.FAILED, error)
                count += 1
                self._wake(handle)
        return count

    async def interrupt(self, task_id: str) -> bool:
        """Interrupt a run of this instance; False when it does not run here."""
        handle = self.active.get(task_id)
        if handle is None:
            return False
        prompt_id = handle.record.prompt_id
        if handle.record.status is TaskStatus.QUEUED and handle.abort is None:
            # Not started: drop it from ComfyUI's queue (if posted) and end it right here,
            # since a deleted prompt never sends an event.
            handle.abort = (
                TaskStatus.INTERRUPTED,
                TaskError(type="interrupted", message="interrupted before it started"),
            )
        if prompt_id is not None:
            with contextlib.suppress(ComfyUIUnavailable):
                await self._client.delete_queued([prompt_id])
                await self._client.interrupt(prompt_id)
        self._wake(handle)
        return True

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; give running tasks `grace` seconds, then interrupt the rest."""
        self.accepting = False
        pending = [h.task for h in self.active.values() if h.task is not None]
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for handle in list(self.active.values()):
                handle.abort = (
                    TaskStatus.FAILED,
                    TaskError(
                        type="shutting_down",
                        message=f"the agent stopped before the task finished (grace {grace:g} s)",
                    ),
                )
                await self.interrupt(handle.task_id)
            if still:
                await asyncio.wait(still, timeout=5.0)

    # -- one run -----------------------------------------------------------------------

    async def _run(self, handle: RunHandle) -> None:
        writer = _CoalescingWriter(self._store, handle, self._options.flush_interval, self)
        try:
            await writer.write_now()
            await self._execute(handle, writer)
        except asyncio.CancelledError:
            cancelled = TaskError(type="shutting_down", message="run cancelled")
            self._finish(handle, TaskStatus.FAILED, cancelled)
            raise
        except Exception as exc:  # the record must end terminal whatever happened
            log.exception("task %s: unexpected error", handle.task_id)
            self._finish(
                handle,
                TaskStatus.FAILED,
                TaskError(type="agent_error", message=f"unexpected agent error: {exc!r}"),
            )
        finally:
            # Final write first: a reader must never find the task gone from this instance
            # while the store still holds an older state.
            await writer.close()
            self.active.pop(handle.task_id, None)
            handle.done.set()
            await handle.notify()

    async def _execute(self, handle: RunHandle, writer: _CoalescingWriter) -> None:
        options = self._options
        deadline = self._clock() + options.run_timeout
        if not await self._backend.wait_ready(min(options.ready_timeout, options.run_timeout)):
            self._finish(
                handle,
                TaskStatus.FAILED,
                TaskError(
                    type="comfyui_unavailable",
                    message=f"ComfyUI did not become ready within {options.ready_timeout:g} s",
                ),
            )
            return
        workflow = handle.workflow
        if self._prepare is not None:
            try:
                workflow = await self._prepare(workflow)
            except InputError as exc:
                self._finish(
                    handle,
                    TaskStatus.FAILED,
                    TaskError(type="input_error", message=str(exc), details=exc.details),
                )
                return
        await self._events.wait_connected(options.connect_timeout)
        prompt_id = str(uuid.uuid4())
        tracker = ProgressTracker(handle.workflow.keys(), prompt_id)
        tracker.nodes = handle.record.progress
        with self._events.subscribe(prompt_id) as subscription:
            try:
                await self._client.submit(
                    workflow, prompt_id=prompt_id, client_id=self._events.client_id
                )
            except PromptRejected as exc:
                self._finish(handle, TaskStatus.FAILED, _validation_error(exc))
                return
            except ComfyUIUnavailable as exc:
                self._finish(
                    handle,
                    TaskStatus.FAILED,
                    TaskError(type="comfyui_unavailable", message=str(exc)),
                )
                return
            handle.submitted = True
            handle.record.prompt_id = prompt_id
            writer.mark_dirty(urgent=True)
            log.info("task %s: submitted as prompt %s", handle.task_id, prompt_id)
            await self._follow(handle, tracker, subscription, writer, deadline)

    async def _follow(
        self,
        handle: RunHandle,
        tracker: ProgressTracker,
        subscription: Any,
        writer: _CoalescingWriter,
        deadline: float,
    ) -> None:
        options = self._options
        record = handle.record
        last_event = self._clock()
        while not tracker.finished:
            if handle.abort is not None:
                self._finish(handle, *handle.abort)
                return
            now = self._clock()
            if now >= deadline:
                await self._time_out(handle)
                return
            wait = min(options.history_poll_interval, deadline - now)
            item = await subscription.get(timeout=max(wait, 0.01))
            now = self._clock()
            if isinstance(item, BinaryFrame):
                handle.publish_preview(item.data)
                continue
            if item is None or isinstance(item, ConnectionGap):
                if handle.abort is not None:
                    continue
                if item is None and now - last_event < options.history_poll_interval:
                    continue
                changed = await self._catch_up(tracker, now)
            else:
                last_event = now
                changed = tracker.apply(item, now)
            if not changed:
                continue
            became_running = tracker.started and record.status is TaskStatus.QUEUED
            if became_running:
                record.status = TaskStatus.RUNNING
                record.started_at = now
            record.outputs = tracker.outputs
            record.updated_at = now
            if tracker.finished:
                break
            await handle.notify()
            writer.mark_dirty(urgent=became_running)
        assert tracker.outcome is not None
        if tracker.outcome is Outcome.INTERRUPTED and handle.abort is not None:
            # Interrupted by us (shutdown, timeout): report why, not just "interrupted".
            self._finish(handle, *handle.abort)
            return
        record.outputs = tracker.outputs
        self._finish(handle, _OUTCOME_STATUS[tracker.outcome], tracker.error)

    async def _catch_up(self, tracker: ProgressTracker, now: float) -> bool:
        """Ask /history whether the prompt ended while its events were not seen."""
        try:
            entry = await self._client.history(tracker.prompt_id)
        except ComfyUIUnavailable:
            return False
        if entry is None:
            return False
        return tracker.apply_history(entry, now)

    async def _time_out(self, handle: RunHandle) -> None:
        prompt_id = handle.record.prompt_id
        if prompt_id is not None:
            with contextlib.suppress(ComfyUIUnavailable):
                await self._client.delete_queued([prompt_id])
                await self._client.interrupt(prompt_id)
        self._finish(
            handle,
            TaskStatus.FAILED,
            TaskError(
                type="timeout",
                message=f"the run took longer than {self._options.run_timeout:g} s",
            ),
        )

    def _finish(self, handle: RunHandle, status: TaskStatus, error: TaskError | None) -> None:
        record = handle.record
        if record.status.is_terminal:
            return
        now = self._clock()
        record.status = status
        record.error = error
        record.finished_at = now
        record.updated_at = now
        if record.started_at is None and status is TaskStatus.SUCCEEDED:
            record.started_at = now
        log.info(
            "task %s: %s%s",
            handle.task_id,
            status.value,
            f" ({error.type}: {error.message})" if error else "",
        )

    def _wake(self, handle: RunHandle) -> None:
        # Wake the run's loop so it notices an abort/interrupt without waiting for an event.
        prompt_id = handle.record.prompt_id
        if prompt_id is not None:
            self._events.deliver(prompt_id, ConnectionGap(connected=self._events.connected))


class _CoalescingWriter:
    """Writes a run's record: soon after state changes, else at most every `interval`.

    Writes happen in the background, so a slow store (fsync on a NAS) never delays event
    handling; only the first and the final write are awaited by the run.
    """

    def __init__(self, store: Store, handle: RunHandle, interval: float, runner: TaskRunner):
        self._store = store
        self._handle = handle
        self._interval = interval
        self._runner = runner
        self._dirty = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closing = False
        self._lock = asyncio.Lock()
        self._flusher = asyncio.create_task(self._flush_loop())
        self.writes = 0

    def mark_dirty(self, *, urgent: bool = False) -> None:
        """The record changed; write it within `interval` (urgent: as soon as possible)."""
        self._dirty.set()
        if urgent:
            self._urgent.set()

    async def write_now(self) -> None:
        """Write the record now."""
        self._dirty.clear()
        async with self._lock:
            await self._save()

    async def close(self) -> None:
        """Stop the flusher and write the final record (retrying while the store fails)."""
        # The flusher is told to stop, never cancelled: a file write finishing in its
        # thread after the final one would put an older state back.
        self._closing = True
        self._dirty.set()
        self._urgent.set()
        await self._flusher
        delay = 0.1
        for _ in range(8):
            async with self._lock:
                if await self._save():
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        log.error("task %s: final state could not be stored", self._handle.task_id)

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            self._urgent.clear()
            async with self._lock:
                if not await self._save():
                    self._dirty.set()
            # Coalesce progress for `interval`, unless a state change wants out sooner.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._urgent.wait()

    async def _save(self) -> bool:
        try:
            await self._store.save(self._handle.snapshot())
        except Exception as exc:  # a store outage must not kill the run
            self._runner.store_failures += 1
            log.warning("task %s: store write failed: %r", self._handle.task_id, exc)
            return False
        self.writes += 1
        return True


def _validation_error(exc: PromptRejected) -> TaskError:
    body = exc.body if isinstance(exc.body, dict) else {"error": exc.body}
    error = body.get("error")
    message = "ComfyUI rejected the workflow"
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    return TaskError(type="prompt_validation", message=message, details=body)
