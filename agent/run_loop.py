"""One run on ComfyUI: wait until ready, prepare, submit, follow its events to the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from agent.metrics import Metrics
from agent.node_timing import NodeTimer
from agent.progress import Outcome, ProgressTracker
from agent.record_writer import RecordWriter
from agent.run_handle import RunHandle, RunHooks, RunOptions, task_log
from agent.submission import ChildBackend, submit_prompt
from agent.workflow import PreparationError, PreparedWorkflow
from comfyui.client import ComfyUIClient, ComfyUIUnavailable, PromptRejected
from comfyui.event_stream import ConnectionGap, EventStream, Subscription
from comfyui.events import BinaryFrame, Executed
from store.records import TaskError, TaskStatus

log = logging.getLogger("agent.runner")

# Prepares a workflow before it is posted (uploads inline images, fills random seeds).
WorkflowPreparer = Callable[[dict[str, dict[str, Any]]], Awaitable[PreparedWorkflow]]

_OUTCOME_STATUS = {
    Outcome.SUCCEEDED: TaskStatus.SUCCEEDED,
    Outcome.FAILED: TaskStatus.FAILED,
    Outcome.INTERRUPTED: TaskStatus.INTERRUPTED,
}


# What the runner needs of the ComfyUI backend (child supervisor or attached server).
Readiness = ChildBackend


class RunLoop:
    """The part of the task runner that drives one run from start to its final state.

    A base class of agent.runner.TaskRunner, which sets the attributes declared here.
    """

    _client: ComfyUIClient
    _events: EventStream
    _backend: Readiness
    _prepare: WorkflowPreparer | None
    _clock: Callable[[], float]
    options: RunOptions
    metrics: Metrics
    hooks: RunHooks | None

    async def _stop_prompt(self, handle: RunHandle, why: str) -> None:
        """Drop or interrupt the run's prompt on ComfyUI (a run that must not go on)."""
        prompt_id = handle.record.prompt_id
        if prompt_id is None:
            return
        try:
            await self._client.delete_queued([prompt_id])
            await self._client.interrupt(prompt_id)
        except ComfyUIUnavailable as exc:
            log.warning(
                "task %s: could not interrupt %s prompt %s: %s",
                handle.task_id,
                why,
                prompt_id,
                exc,
                extra=task_log(handle),
            )
            return
        log.info(
            "task %s: interrupted prompt %s of the %s run",
            handle.task_id,
            prompt_id,
            why,
            extra=task_log(handle),
        )

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
        # Waiting for ComfyUI, uploading inputs: an interrupt or a shutdown ends this at once
        # (set_abort cancels it), without racing a second task against it on every run.
        if handle.abort is not None:  # stopped before it began
            self._finish(handle, *handle.abort)
            return
        waiting = asyncio.ensure_future(self._before_submit(handle))
        handle.waiting = waiting
        try:
            workflow = await waiting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not waiting.cancelled() or (current is not None and current.cancelling()):
                raise  # this run itself is cancelled, not just its wait
            workflow = None
        finally:
            handle.waiting = None
        if handle.abort is not None:
            self._finish(handle, *handle.abort)
            return
        if workflow is None:
            return  # _before_submit finished the task with its error
        if writer.claim.refused:  # claimed in the background (a fresh id), and refused
            self._finish(handle, TaskStatus.FAILED, _unclaimed(writer.claim.refusal))
            return
        prompt_id = str(uuid.uuid4())
        tracker = ProgressTracker(handle.workflow.keys(), prompt_id)
        tracker.nodes = handle.record.progress
        with self._events.subscribe(prompt_id) as subscription:
            handle.comfyui.posted_at = time.perf_counter()
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
            if not await writer.claim.held():
                await self._stop_prompt(handle, "unclaimed")
                self._finish(handle, TaskStatus.FAILED, _unclaimed(writer.claim.refusal))
                return
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
                if changed and isinstance(item, Executed):
                    handle.outputs_of(item.node)  # its files are written: readers may start
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
        if handle.comfyui.posted_at is not None:
            handle.comfyui.ended_at = time.perf_counter()
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


def _unclaimed(refusal: str | None) -> TaskError:
    return TaskError(type="store_error", message=f"the task could not be claimed: {refusal}")


def _validation_error(exc: PromptRejected) -> TaskError:
    body = exc.body if isinstance(exc.body, dict) else {"error": exc.body}
    error = body.get("error")
    message = "ComfyUI rejected the workflow"
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    return TaskError(type="prompt_validation", message=message, details=body)
