"""Warm-up: run one workflow after ComfyUI is ready and before the agent says it is ready,
so the first caller does not pay for loading models. A failing or slow warm-up is logged
and readiness goes on (after at most `timeout` s of running it).

The warm-up is a workflow file, or the id of an app (run as saved, with its defaults) when
no such file exists."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from agent.apps.registry import AppRegistry
from agent.delivery.metrics import DeliveryMetrics
from agent.runner import Readiness, TaskRunner
from agent.workflow import WorkflowError, extract_workflow

log = logging.getLogger("agent.warmup")


class Warmup:
    """Runs the warm-up workflow once; `done` is set when readiness may be reported."""

    def __init__(
        self,
        path: Path | None,
        *,
        runner: TaskRunner,
        backend: Readiness,
        metrics: DeliveryMetrics,
        timeout: float,
        apps: AppRegistry | None = None,
    ) -> None:
        self._path = path
        self._apps = apps
        self._runner = runner
        self._backend = backend
        self._metrics = metrics
        self._timeout = timeout
        self.done = asyncio.Event()
        self.task_id: str | None = None
        self._task: asyncio.Task[None] | None = None
        if path is None:
            self.done.set()
        else:
            metrics.warmup_status = "pending"

    def start(self) -> None:
        """Start the warm-up in the background (nothing to do without a warm-up file)."""
        if self._path is not None and self._task is None:
            self._task = asyncio.create_task(self._run(self._path), name="warmup")

    async def stop(self) -> None:
        """Cancel a warm-up still running (the agent stops)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _workflow(self, path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
        """The workflow to run and the app it comes from (None for a workflow file)."""
        if self._apps is not None and not await asyncio.to_thread(path.exists):
            app = await self._apps.get(str(path))
            if app is not None:
                return copy.deepcopy(app.prompt), app.id
        return await asyncio.to_thread(_read_workflow, path), None

    async def _run(self, path: Path) -> None:
        try:
            workflow, app_id = await self._workflow(path)
        except (OSError, ValueError, WorkflowError) as exc:
            log.error("warm-up %s not run: %s (neither a workflow file nor an app id)", path, exc)
            self._end("failed", 0.0)
            return
        while not await self._backend.wait_ready(60):
            log.info("warm-up waits for ComfyUI to become ready")
        self.task_id = f"warmup-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        log.info("warm-up: running %s as task %s", path, self.task_id)
        try:
            handle = await self._runner.start(self.task_id, workflow, app=app_id)
        except Exception as exc:  # refused (store down, shutting down): readiness goes on
            log.error("warm-up could not start: %s", exc)
            self._end("failed", time.monotonic() - started)
            return
        try:
            await asyncio.wait_for(asyncio.shield(handle.done.wait()), self._timeout)
        except TimeoutError:
            log.error(
                "warm-up still running after %g s; reporting ready anyway (it goes on)",
                self._timeout,
            )
            self._end("timeout", time.monotonic() - started)
            return
        seconds = time.monotonic() - started
        record = handle.snapshot()
        if record.status.value == "succeeded":
            log.info("warm-up succeeded in %.2f s", seconds)
            self._end("succeeded", seconds)
        else:
            error = record.error.message if record.error else record.status.value
            log.error("warm-up %s after %.2f s: %s", record.status.value, seconds, error)
            self._end("failed", seconds)

    def _end(self, status: str, seconds: float) -> None:
        self._metrics.warmup_status = status
        self._metrics.warmup_seconds = seconds
        self.done.set()


def _read_workflow(path: Path) -> dict[str, dict[str, Any]]:
    """The API-format workflow in a JSON file (bare node map or {"prompt": ...})."""
    return extract_workflow(json.loads(path.read_text()))
