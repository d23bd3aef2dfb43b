"""Runs tasks on ComfyUI: claims, starts, interrupts and shuts down the runs of this instance.

One run's own course is agent.run_loop; its handle and options agent.run_handle; why a
run could not start agent.run_errors; final records the store refused
agent.unsaved_finals. Their public names are importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.metrics import Metrics
from agent.record_writer import RecordWriter
from agent.run_claim import ClaimReleases, RunClaim
from agent.run_errors import QueueFull, ShuttingDown, StoreUnavailable, TaskAlreadyRunning
from agent.run_handle import RunHandle, RunHooks, RunOptions, task_log
from agent.run_loop import Readiness, RunLoop, WorkflowPreparer
from agent.unsaved_finals import UnsavedFinals
from comfyui.client import ComfyUIClient, ComfyUIUnavailable
from comfyui.event_stream import EventStream
from store.base import Store, StoreError
from store.records import NodeProgress, TaskError, TaskRecord, TaskStatus

__all__ = [
    "QueueFull",
    "Readiness",
    "RunHandle",
    "RunHooks",
    "RunOptions",
    "ShuttingDown",
    "StoreUnavailable",
    "TaskAlreadyRunning",
    "TaskRunner",
    "WorkflowPreparer",
    "task_log",
]

log = logging.getLogger("agent.runner")


class TaskRunner(RunLoop):
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
        self.finals = UnsavedFinals(store, self.metrics, clock)
        self._starting: set[str] = set()
        self._releases = ClaimReleases(self.metrics.store_failure)
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
        fresh_id: bool = False,
    ) -> RunHandle:
        """Claim the task, write its first record and run it in the background.

        app and params (an app run) are kept in the task record; delivery is passed to the
        run hooks as it is. durable_start False: the first record is written while the run
        starts (for callers answered only when it ends; the claim already holds the task).
        fresh_id: the task id was made up here for this run, so nobody else can hold it;
        it is claimed while the prompt is being posted (the run stops if that fails).
        """
        if not self.accepting:
            raise ShuttingDown("the agent is shutting down")
        if task_id in self.active or task_id in self._starting:
            raise TaskAlreadyRunning(task_id, here=True)
        if self._max_queue and len(self.active) + len(self._starting) >= self._max_queue:
            raise QueueFull(f"{len(self.active)} tasks are queued or running on this instance")
        self._starting.add(task_id)
        try:
            await self._releases.wait(task_id)  # the task's last run here gives its claim up
            claim = await self._claim(task_id, fresh_id)
            handle = self._new_handle(task_id, workflow)
            handle.record.app, handle.record.params = app, params
            handle.delivery = delivery
            writer = self._writer(handle, claim)
            if not durable_start:
                writer.start_soon()
            elif not await writer.start():
                await self._releases.release(claim)
                if claim.superseded:  # taken over by another delivery in this instant
                    raise TaskAlreadyRunning(task_id, here=False)
                raise StoreUnavailable("the store refused the task's first record")
        finally:
            self._starting.discard(task_id)
        self.finals.discard(task_id)
        self.active[task_id] = handle
        handle.task = asyncio.create_task(self._run(handle, writer, claim), name=f"run-{task_id}")
        return handle

    async def _claim(self, task_id: str, fresh_id: bool) -> RunClaim:
        lease = self.options.lease
        if fresh_id:
            return RunClaim.taking(self._store, task_id, self._instance, lease)
        try:
            claim = await RunClaim.take(self._store, task_id, self._instance, lease)
        except StoreError as exc:
            self.metrics.store_failure()
            raise StoreUnavailable(str(exc)) from exc
        if claim is None:
            raise TaskAlreadyRunning(task_id, here=False)
        return claim

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

    @property
    def unsaved(self) -> dict[str, TaskRecord]:
        """Final records the store refused, by task id: served from here until stored."""
        return self.finals.records

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
        await self._releases.wait_all()
        await self.finals.store_all()
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
        await self._releases.wait_all()
        await self.finals.stop_retrying()
        await self.finals.store_all()
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
            # Final write first: a reader must never find the task gone from this instance
            # while the store still holds an older state.
            if not await writer.close() and not claim.refused:
                self.finals.add(handle.snapshot(), claim.token)
            if handle.superseded:
                await self._stop_prompt(handle, "superseded")
            # The claim is released after the run is done and its caller answered: the
            # final record is stored, and a new run of the task id waits for the release.
            releasing = self._releases.start(claim, handle.answered)
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
            with contextlib.suppress(asyncio.CancelledError):
                await cancel_watch
            await releasing

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
