"""Following a task over /api/run/ws to its end: progress to the display, Ctrl-C asks
whether to interrupt the task or leave it running, outputs saved, the exit code chosen."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.client.api import AgentClient
from agent.client.display import Display, Outcome, SavedFile
from agent.client.errors import ClientError, ExitCode
from agent.client.outputs import OutputFile, output_files, save_new_file
from agent.client.progress_view import snapshot
from agent.client.words import describe_error

# Errors of a task that ran and failed (exit 1); other errors go by HTTP status.
RUN_FAILURES = frozenset(
    {"ExecutionError", "ExecutionInterrupted", "ComfyUICrashed", "RunTimeout", "TaskLost"}
)
# Refusals before a task exists come without a status on the websocket; these say "not
# now" (exit 3), the others are about the request (exit 2).
UNAVAILABLE = frozenset({"ComfyUIUnavailable", "ShuttingDown", "QueueFull", "StoreError"})
_INTERRUPT = object()
_CLOSED = object()


def error_exit_code(status: Any, message: Any) -> ExitCode:
    """Exit code for an `error` message: 1 the run failed, 2 refused input, 3 unavailable."""
    if message in RUN_FAILURES:
        return ExitCode.RUN_FAILED
    if message in UNAVAILABLE:
        return ExitCode.UNAVAILABLE
    if isinstance(status, int) and status >= 500:
        return ExitCode.UNAVAILABLE
    if status == 429:
        return ExitCode.UNAVAILABLE
    return ExitCode.BAD_INPUT


def reference(item: OutputFile) -> str:
    """ComfyUI's annotated file name, as LoadImage accepts it: `sub/name.png [output]`."""
    path = f"{item.subfolder}/{item.filename}" if item.subfolder else item.filename
    return f"{path} [{item.type}]"


@dataclass
class Follow:
    """One task followed to its end."""

    client: AgentClient
    display: Display
    task_id: str
    titles: dict[str, str]
    out: Path
    results: str  # "base64": save files; "none": list them
    watch_hint: str  # the command that watches the task again
    # Finds the titles later when they are not known yet (a watched task still queued).
    find_titles: Callable[[], Awaitable[dict[str, str]]] | None = None
    _titles_tried: float = field(default=float("-inf"), init=False)
    _asking: asyncio.Future[str] | None = field(default=None, init=False)

    async def run(self, query: str, first: Any = None) -> ExitCode:
        """Follow the websocket at `query` (sending `first`) until the task ends."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def on_sigint() -> None:
            if self._asking is not None and not self._asking.done():
                self._asking.set_result("")  # a second Ctrl-C while asking: leave it running
            else:
                queue.put_nowait(_INTERRUPT)

        async def pump() -> None:
            try:
                async for message in self.client.messages(query, first):
                    queue.put_nowait(message)
                queue.put_nowait(_CLOSED)
            except ClientError as exc:
                queue.put_nowait(exc)

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        reader = asyncio.create_task(pump())
        started = time.monotonic()
        progress: dict[str, Any] = {}
        try:
            while True:
                item = await queue.get()
                if item is _INTERRUPT:
                    code = await self._interrupt()
                    if code is not None:
                        return code
                    continue
                if item is _CLOSED:
                    raise ClientError(
                        ExitCode.UNAVAILABLE,
                        "the agent closed the connection before the task ended; "
                        f"it may still run: {self.watch_hint}",
                    )
                if isinstance(item, ClientError):
                    raise item
                kind, data = item.get("type"), item.get("data")
                if kind == "connected":
                    self.display.started(self.task_id, self.client.url)
                elif kind == "progress" and isinstance(data, dict):
                    progress = data
                    await self._look_for_titles()
                    self.display.progress(snapshot(progress, self.titles))
                elif kind == "result" and isinstance(data, dict):
                    return await self._succeeded(data, time.monotonic() - started)
                elif kind == "error":
                    body = data if isinstance(data, dict) else {"error": data}
                    if isinstance(body.get("progress"), dict):
                        progress = body["progress"]
                    code = error_exit_code(item.get("status"), body.get("message"))
                    outcome = Outcome(
                        task_id=self.task_id,
                        code=code,
                        elapsed=time.monotonic() - started,
                        snapshot=snapshot(progress, self.titles),
                        error=describe_error(body),
                        status=_status_word(body.get("message"), code),
                    )
                    self.display.finished(outcome)
                    return code
        finally:
            self.display.pause()  # a live view stops drawing (and shows the cursor) on any exit
            loop.remove_signal_handler(signal.SIGINT)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _look_for_titles(self) -> None:
        if self.titles or self.find_titles is None:
            return
        now = time.monotonic()
        if now - self._titles_tried >= 1.0:  # at most once a second
            self._titles_tried = now
            self.titles = await self.find_titles()

    async def _interrupt(self) -> ExitCode | None:
        """Ctrl-C: ask; interrupt the task (None: keep following to its end) or leave it."""
        self.display.pause()
        answer = ""
        if sys.stdin.isatty():
            prompt = f"Interrupt task {self.task_id} on the agent? [y/N] "
            print(prompt, end="", file=sys.stderr, flush=True)
            self._asking = asyncio.get_running_loop().create_future()
            _read_line_into(self._asking)
            answer = await self._asking
            self._asking = None
        if answer.strip().lower() in ("y", "yes"):
            await self.client.request("DELETE", f"/api/tasks/{self.task_id}")
            self.display.note(f"interrupting task {self.task_id} ...")
            self.display.resume()
            return None
        self.display.note(f"Left running. Watch it again: {self.watch_hint}")
        return ExitCode.LEFT_RUNNING

    async def _succeeded(self, data: dict[str, Any], elapsed: float) -> ExitCode:
        files: list[SavedFile] = []
        code = ExitCode.OK
        for item in output_files(data):
            name = reference(item)
            if self.results == "none":
                files.append(SavedFile(item.node, name, None))
                continue
            try:
                content = item.data
                if content is None:
                    content = await self.client.read_file(item.filename, item.subfolder, item.type)
                path = await asyncio.to_thread(save_new_file, self.out, item.filename, content)
            except (ClientError, OSError) as exc:
                code = ExitCode.UNAVAILABLE
                problem = exc.message if isinstance(exc, ClientError) else str(exc)
                files.append(SavedFile(item.node, name, None, f"not saved: {problem}"))
                continue
            files.append(SavedFile(item.node, name, path))
        outcome = Outcome(self.task_id, code, elapsed, snapshot(data, self.titles), files)
        self.display.finished(outcome)
        return code


def _status_word(message: Any, code: ExitCode) -> str:
    if message == "ExecutionInterrupted":
        return "interrupted"
    return {ExitCode.RUN_FAILED: "failed", ExitCode.BAD_INPUT: "refused"}.get(code, "unavailable")


def _read_line_into(future: asyncio.Future[str]) -> None:
    # input() blocks: read in a daemon thread, so an unanswered question never keeps the
    # process alive once the answer came another way (a second Ctrl-C).
    loop = future.get_loop()

    def read() -> None:
        try:
            line = sys.stdin.readline()
        except (OSError, ValueError):
            line = ""

        def deliver() -> None:
            if not future.done():
                future.set_result(line)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=read, daemon=True).start()
