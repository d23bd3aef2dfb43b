"""Runs tasks on ComfyUI: submit, follow events, keep the record, store it coalesced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.metrics import Metrics
from agent.node_timing import NodeTimer
from agent.progress import Outcome, ProgressTracker
from agent.record_writer import RecordWriter
from agent.run_claim import RunClaim
from agent.submission import ChildBackend, submit_prompt
from agent.workflow import PreparationError, PreparedWorkflow
from comfyui.client import ComfyUIClient, ComfyUIUnavailable, PromptRejected
from comfyui.event_stream import ConnectionGap, EventStream, Subscription
from comfyui.events import BinaryFrame
from store.base import ClaimSuperseded, Store, StoreError
from store.records import NodeProgress, TaskError, TaskRecord, TaskStatus

log = logging.getLogger("agent.runner")

# Prepares a workflow before it is posted (uploads inline images, fills random seeds).
WorkflowPreparer = Callable[[dict[str, dict[str, Any]]], Awaitable[PreparedWorkflow]]

_OUTCOME_STATUS = {
    Outcome.SUCCEEDED: TaskStatus.SUCCEEDED,
    Outcome.FAILED: TaskStatus.FAILED,
    Outcome.INTERRUPTED: TaskStatus.INTERRUPTED,
}


def task_log(record: TaskRecord | RunHandle | str) -> dict[str, str | None]:
    """`extra=` for log calls about a task: JSON logs get task_id and prompt_id fields."""
    if isinstance(record, str):
        return {"task_id": record, "prompt_id": None}
    if isinstance(record, RunHandle):
        record = record.record
    return {"task_id": record.task_id, "prompt_id": record.prompt_id}


# What the runner needs of the ComfyUI backend (child supervisor or attached server).
Readiness = ChildBackend


class RunHooks(Protocol):
    """What happens at the end of every run (output delivery, webhooks): see agent/delivery."""

    async def before_success(self, handle: RunHandle) -> TaskError | None:
        """Deliver a succeeded run's outputs while it still shows running; an error fails it."""
        ...

    def after_end(self, handle: RunHandle) -> None:
        """The run ended and its final record was written (or queued for retry)."""
        ...


class TaskAlreadyRunning(Exception):
    """A task with this id runs already: here, or on the instance holding its claim."""

    def __init__(self, task_id: str, *, here: bool) -> None:
        where = "on this instance" if here else "on another instance"
        super().__init__(f"task {task_id} is already running {where}")
        self.here = here


class StoreUnavailable(Exception):
    """The store could not be reached to claim the task."""


class QueueFull(Exception):
    """--max-queue tasks are queued or running here already."""


class ShuttingDown(Exception):
    """The agent stopped accepting work."""


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
    submitted: bool = False
    task: asyncio.Task[None] | None = None
    # What the request asked of delivery (agent.delivery.DeliveryPlan); the runner only
    # passes it to its hooks.
    delivery: object = None
    # Another run took the task over (agent.run_claim): this one stopped and wrote nothing;
    # the store holds the task's real state.
    superseded: bool = False

    @property
    def task_id(self) -> str:
        """The task id."""
        return self.record.task_id

    def snapshot(self) -> TaskRecord:
        """A copy of the record that later changes do not touch."""
        return self.record.model_copy(deep=True)

    def set_abort(self, status: TaskStatus, error: TaskError) -> bool:
        """End the run with status and error at its next wake-up; False if already set."""
        if self.abort is not None:
            return False
        self.abort = (status, error)
        self.aborted.set()
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
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        hooks: RunHooks | None = None,
    ) -> None:
        self._client = client
        self._events = events
        self._store = store
        self._backend = backend
        self._instance = instance
        self.options = options or RunOptions()
        self._prepare = prepare
        self._max_queue = max_queue
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.hooks = hooks
        self.active: dict[str, RunHandle] = {}
        # Final records the store refused (outage): served from here and retried until stored.
        self.unsaved: dict[str, TaskRecord] = {}
        # The claim token each of those final records is written with (the fence).
        self.unsaved_tokens: dict[str, int] = {}
        self._retrier: asyncio.Task[None] | None = None
        self._starting: set[str] = set()
        self.accepting = True
        # Runs that ended here (final record written): readers' caches check it.
        self.finished_runs = 0

    async def start(
        self,
        task_id: str,
        workflow: dict[str, dict[str, Any]],
        *,
        app: str | None = None,
        params: dict[str, Any] | None = None,
        delivery: object = None,
        durable_start: bool = True,
    ) -> RunHandle:
        """Claim the task, write its first record and run it in the background.

        app and params (an app run) are kept in the task record; delivery is passed to the
        run hooks as it is. durable_start False: the first record is written while the run
        starts (for callers answered only when it ends; the claim already holds the task).
        """
        if not self.accepting:
            raise ShuttingDown("the agent is shutting down")
        if task_id in self.active or task_id in self._starting:
            raise TaskAlreadyRunning(task_id, here=True)
        if self._max_queue and len(self.active) + len(self._starting) >= self._max_queue:
            raise QueueFull(f"{len(self.active)} tasks are queued or running on this instance")
        self._starting.add(task_id)
        try:
            try:
                claim = await RunClaim.take(
                    self._store, task_id, self._instance, self.options.lease
                )
            except StoreError as exc:
                self.metrics.store_failure()
                raise StoreUnavailable(str(exc)) from exc
            if claim is None:
                raise TaskAlreadyRunning(task_id, here=False)
            handle = self._new_handle(task_id, workflow)
            handle.record.app, handle.record.params = app, params
            handle.delivery = delivery
            writer = self._writer(handle, claim)
            if not durable_start:
                writer.start_soon()
            elif not await writer.start():
                await self._release(claim)
                if claim.superseded:  # taken over by another delivery in this instant
                    raise TaskAlreadyRunning(task_id, here=False)
                raise StoreUnavailable("the store refused the task's first record")
        finally:
            self._starting.discard(task_id)
        self.unsaved.pop(task_id, None)
        self.unsaved_tokens.pop(task_id, None)
        self.active[task_id] = handle
        handle.task = asyncio.create_task(self._run(handle, writer, claim), name=f"run-{task_id}")
        return handle

    def _new_handle(self, task_id: str, workflow: dict[str, dict[str, Any]]) -> RunHandle:
        now = self._clock()
        record = TaskRecord(
            task_id=task_id,
            status=TaskStatus.QUEUED,
            created_at=now,
            updated_at=now,
            instance=self._instance,
        )
        record.progress = {node_id: NodeProgress() for node_id in workflow}
        return RunHandle(record=record, workflow=workflow)

    def _writer(self, handle: RunHandle, claim: RunClaim) -> RecordWriter:
        def failed(exc: Exception) -> None:
            self.metrics.store_failure()

        async def superseded() -> None:
            # Stop at once: the run loop wakes and ends, _run interrupts the prompt.
            handle.superseded = True
            handle.set_abort(
                TaskStatus.FAILED,
                TaskError(type="superseded", message="another run took the task over"),
            )
            self._wake(handle)

        claim.on_superseded = superseded
        claim.on_failure = failed
        return RecordWriter(
            claim,
            handle.snapshot,
            interval=self.options.flush_interval,
            clock=self._clock,
            on_failure=failed,
            on_write=self.metrics.store_write,
        )

    def get(self, task_id: str) -> RunHandle | None:
        """The handle of a task running here, if any."""
        return self.active.get(task_id)

    def local_record(self, task_id: str) -> TaskRecord | None:
        """The freshest record this instance holds: a live run, or a final not yet stored."""
        handle = self.active.get(task_id)
        if handle is not None and not handle.superseded:
            return handle.snapshot()
        return self.unsaved.get(task_id)

    def abort_all(self, error: TaskError) -> int:
        """Fail every run whose prompt was handed to ComfyUI (the child died); return count."""
        count = 0
        for handle in self.active.values():
            if handle.submitted and handle.set_abort(TaskStatus.FAILED, error):
                count += 1
                self._wake(handle)
        return count

    async def interrupt(self, task_id: str) -> bool:
        """Interrupt a run of this instance; False when it does not run here."""
        handle = self.active.get(task_id)
        if handle is None:
            return False
        prompt_id = handle.record.prompt_id
        if handle.record.status is TaskStatus.QUEUED:
            # Not started: drop it from ComfyUI's queue (if posted) and end it right here,
            # since a deleted prompt never sends an event.
            handle.set_abort(
                TaskStatus.INTERRUPTED,
                TaskError(type="interrupted", message="interrupted before it started"),
            )
        if prompt_id is not None:
            with contextlib.suppress(ComfyUIUnavailable):
                await self._client.delete_queued([prompt_id])
                await self._client.interrupt(prompt_id)
        self._wake(handle)
        return True

    async def drain(self, grace: float) -> int:
        """Wait up to `grace` s for the runs of this instance to end; return how many still run."""
        pending = [h.task for h in self.active.values() if h.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        await self._store_unsaved()
        return len(self.active)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; give running tasks `grace` seconds, then interrupt the rest."""
        self.accepting = False
        pending = [h.task for h in self.active.values() if h.task is not None]
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for handle in list(self.active.values()):
                handle.set_abort(
                    TaskStatus.FAILED,
                    TaskError(
                        type="shutting_down",
                        message=f"the agent stopped before the task finished (grace {grace:g} s)",
                    ),
                )
                await self.interrupt(handle.task_id)
            if still:
                await asyncio.wait(still, timeout=5.0)
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
        await self._store_unsaved()
        for task_id in self.unsaved:
            log.error(
                "task %s: final state could not be stored before exit",
                task_id,
                extra=task_log(task_id),
            )

    # -- one run -----------------------------------------------------------------------

    async def _run(self, handle: RunHandle, writer: RecordWriter, claim: RunClaim) -> None:
        run_ended = asyncio.Event()
        cancel_watch = asyncio.create_task(self._watch_cancel(handle, run_ended))
        try:
            await self._execute(handle, writer)
        except asyncio.CancelledError:
            cancelled = TaskError(type="shutting_down", message="run cancelled")
            self._finish(handle, TaskStatus.FAILED, cancelled)
            raise
        except Exception as exc:  # the record must end terminal whatever happened
            log.exception("task %s: unexpected error", handle.task_id, extra=task_log(handle))
            self._finish(
                handle,
                TaskStatus.FAILED,
                TaskError(type="agent_error", message=f"unexpected agent error: {exc!r}"),
            )
        finally:
            run_ended.set()
            cancel_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cancel_watch
            # Final write first: a reader must never find the task gone from this instance
            # while the store still holds an older state.
            if not await writer.close():
                self.unsaved[handle.task_id] = handle.snapshot()
                self.unsaved_tokens[handle.task_id] = claim.token
                self._ensure_retrier()
            if handle.superseded:
                await self._stop_superseded(handle)
            await self._release(claim)
            self.active.pop(handle.task_id, None)
            record = handle.record
            outcome = "superseded" if handle.superseded else record.status.value
            self.metrics.run_finished(outcome, self._clock() - record.created_at)
            self.finished_runs += 1
            # A superseded run delivers nothing: the run that took the task over does.
            if self.hooks is not None and not handle.superseded:
                self.hooks.after_end(handle)
            handle.ended.set()
            handle.done.set()
            await handle.notify()

    async def _release(self, claim: RunClaim) -> None:
        try:
            await claim.release()
        except StoreError:
            self.metrics.store_failure()  # the claim expires with its lease anyway

    async def _stop_superseded(self, handle: RunHandle) -> None:
        """Interrupt the prompt of a run another run took over (it must not finish twice)."""
        prompt_id = handle.record.prompt_id
        if prompt_id is None:
            return
        try:
            await self._client.delete_queued([prompt_id])
            await self._client.interrupt(prompt_id)
        except ComfyUIUnavailable as exc:
            log.warning(
                "task %s: could not interrupt superseded prompt %s: %s",
                handle.task_id,
                prompt_id,
                exc,
                extra=task_log(handle),
            )
            return
        log.info(
            "task %s: interrupted prompt %s of the superseded run",
            handle.task_id,
            prompt_id,
            extra=task_log(handle),
        )

    async def _watch_cancel(self, handle: RunHandle, run_ended: asyncio.Event) -> None:
        """Interrupt the run when another instance asked for it through the store."""
        # Ends on run_ended, not only on cancel(): redis-py may swallow a cancellation that
        # lands as its command completes, and this loop would then poll forever.
        while not run_ended.is_set():
            await asyncio.sleep(self.options.cancel_poll_interval)
            try:
                requested = await self._store.cancel_requested(handle.task_id)
            except StoreError:
                self.metrics.store_failure()
                continue
            if requested:
                log.info(
                    "task %s: interrupt requested through the store",
                    handle.task_id,
                    extra=task_log(handle),
                )
                await self.interrupt(handle.task_id)
                return

    def _ensure_retrier(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry_unsaved(), name="store-retrier")

    async def _retry_unsaved(self) -> None:
        delay = 1.0
        while self.unsaved:
            await asyncio.sleep(delay)
            await self._store_unsaved()
            delay = min(delay * 2, 30.0)

    async def _store_unsaved(self) -> None:
        for task_id, record in list(self.unsaved.items()):
            started = self._clock()
            try:
                await self._store.save(record, token=self.unsaved_tokens.get(task_id))
            except ClaimSuperseded:
                # Another run took the task over meanwhile: its state is the task's now.
                log.warning(
                    "task %s: final state dropped: the task was taken over meanwhile",
                    task_id,
                    extra=task_log(record),
                )
                self._forget_unsaved(task_id, record)
                continue
            except Exception as exc:  # still down: keep it for the next round
                self.metrics.store_failure()
                log.warning(
                    "task %s: final state still not stored: %r",
                    task_id,
                    exc,
                    extra=task_log(record),
                )
                continue
            self.metrics.store_write(self._clock() - started)
            log.info(
                "task %s: final state stored after a store outage", task_id, extra=task_log(record)
            )
            self._forget_unsaved(task_id, record)

    def _forget_unsaved(self, task_id: str, record: TaskRecord) -> None:
        if self.unsaved.get(task_id) is record:
            del self.unsaved[task_id]
            self.unsaved_tokens.pop(task_id, None)

    async def _before_submit(self, handle: RunHandle) -> dict[str, dict[str, Any]] | None:
        """Wait for ComfyUI and prepare the workflow; None after finishing with an error."""
        options = self.options
        if not await self._backend.wait_ready(min(options.ready_timeout, options.run_timeout)):
            self._finish(
                handle,
                TaskStatus.FAILED,
                TaskError(
                    type="comfyui_unavailable",
                    message=f"ComfyUI did not become ready within {options.ready_timeout:g} s",
                ),
            )
            return None
        workflow = handle.workflow
        if self._prepare is not None:
            try:
                prepared = await self._prepare(workflow)
            except PreparationError as exc:
                error = TaskError(
                    type="input_error",
                    message=str(exc),
                    node_id=exc.node_id,
                    node_type=exc.node_type,
                    details=exc.details,
                )
                self._finish(handle, TaskStatus.FAILED, error)
                return None
            except ComfyUIUnavailable as exc:
                error = TaskError(type="comfyui_unavailable", message=str(exc))
                self._finish(handle, TaskStatus.FAILED, error)
                return None
            workflow = prepared.workflow
            handle.record.seeds = prepared.seeds
        await self._events.wait_connected(options.connect_timeout)
        return workflow

    async def _execute(self, handle: RunHandle, writer: RecordWriter) -> None:
        options = self.options
        deadline = self._clock() + options.run_timeout
        # Waiting for ComfyUI, uploading inputs: an interrupt or a shutdown ends this at once.
        waiting = asyncio.ensure_future(self._before_submit(handle))
        aborted = asyncio.ensure_future(handle.aborted.wait())
        try:
            await asyncio.wait({waiting, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        workflow = waiting.result() if not waiting.cancelled() else None
        if handle.abort is not None:
            self._finish(handle, *handle.abort)
            return
        if workflow is None:
            return  # _before_submit finished the task with its error
        prompt_id = str(uuid.uuid4())
        tracker = ProgressTracker(handle.workflow.keys(), prompt_id)
        tracker.nodes = handle.record.progress
        with self._events.subscribe(prompt_id) as subscription:
            try:
                await submit_prompt(
                    self._client,
                    self._backend,
                    self._events,
                    workflow,
                    prompt_id,
                    ready_timeout=min(options.ready_timeout, max(deadline - self._clock(), 0)),
                    connect_timeout=options.connect_timeout,
                    stop=handle.aborted,
                    log_extra=task_log(handle),
                )
            except PromptRejected as exc:
                self._finish(handle, TaskStatus.FAILED, _validation_error(exc))
                return
            except ComfyUIUnavailable as exc:
                if handle.abort is not None:  # stopped while waiting to post it again
                    self._finish(handle, *handle.abort)
                    return
                self._finish(
                    handle,
                    TaskStatus.FAILED,
                    TaskError(type="comfyui_unavailable", message=str(exc)),
                )
                return
            handle.submitted = True
            handle.record.prompt_id = prompt_id
            writer.mark_dirty(urgent=True)
            log.info(
                "task %s: submitted as prompt %s", handle.task_id, prompt_id, extra=task_log(handle)
            )
            await self._follow(handle, tracker, subscription, writer, deadline)

    async def _follow(
        self,
        handle: RunHandle,
        tracker: ProgressTracker,
        subscription: Subscription,
        writer: RecordWriter,
        deadline: float,
    ) -> None:
        options = self.options
        record = handle.record
        last_event = self._clock()
        timer = NodeTimer(handle.workflow, tracker.prompt_id)
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
                for node_type, seconds in timer.apply(item, now):
                    self.metrics.node_executed(node_type, seconds)
            if not changed:
                continue
            became_running = tracker.started and record.status is TaskStatus.QUEUED
            if became_running:
                record.status = TaskStatus.RUNNING
                record.started_at = now
                self.metrics.run_started(now - record.created_at)
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
        status = _OUTCOME_STATUS[tracker.outcome]
        if status is TaskStatus.SUCCEEDED and self.hooks is not None:
            failure = await self.hooks.before_success(handle)
            if failure is not None:
                self._finish(handle, TaskStatus.FAILED, failure)
                return
        self._finish(handle, status, tracker.error)

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
                message=f"the run took longer than {self.options.run_timeout:g} s",
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
        handle.ended.set()
        log.info(
            "task %s: %s%s",
            handle.task_id,
            status.value,
            f" ({error.type}: {error.message})" if error else "",
            extra=task_log(handle),
        )

    def _wake(self, handle: RunHandle) -> None:
        # Wake the run's loop so it notices an abort/interrupt without waiting for an event.
        prompt_id = handle.record.prompt_id
        if prompt_id is not None:
            self._events.deliver(prompt_id, ConnectionGap(connected=self._events.connected))


def _validation_error(exc: PromptRejected) -> TaskError:
    body = exc.body if isinstance(exc.body, dict) else {"error": exc.body}
    error = body.get("error")
    message = "ComfyUI rejected the workflow"
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    return TaskError(type="prompt_validation", message=message, details=body)
