"""How a run is shown: live bars on a terminal (rich), plain lines when stdout is not a
terminal, or one JSON object per line (--json). All three take the same calls."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from agent.client.errors import ExitCode
from agent.client.progress_view import NodeView, ProgressSnapshot, line_key


@dataclass(frozen=True)
class SavedFile:
    """An output of the run: where it was saved (None when only listed or not fetched)."""

    node: str
    reference: str  # ComfyUI's annotated name: `sub/name.png [output]`
    path: Path | None
    problem: str | None = None


@dataclass
class Outcome:
    """How the task ended, for the summary."""

    task_id: str
    code: ExitCode
    elapsed: float
    snapshot: ProgressSnapshot
    files: list[SavedFile] = field(default_factory=list)
    error: str | None = None
    status: str = "succeeded"


class Display(Protocol):
    """What the run loop tells the person (or the script) watching."""

    def started(self, task_id: str, url: str) -> None:
        """The task is running (or being watched)."""

    def progress(self, snap: ProgressSnapshot) -> None:
        """A new progress map arrived."""

    def note(self, text: str) -> None:
        """A message on the side (Ctrl-C answers, hints)."""

    def pause(self) -> None:
        """Stop drawing (before a question)."""

    def resume(self) -> None:
        """Draw again."""

    def finished(self, outcome: Outcome) -> None:
        """The summary: files saved, or the error in words."""


def node_label(view: NodeView) -> str:
    return f"{view.title} #{view.id}"


def seconds_text(value: float) -> str:
    return f"{value:.1f} s"


def counts_text(snap: ProgressSnapshot) -> str:
    cached = f", {len(snap.cached)} cached" if snap.cached else ""
    return f"{snap.done}/{snap.total} nodes{cached}"


class PlainDisplay:
    """Lines on stderr as the run goes (a new node, every tenth of its steps), the saved
    paths on stdout: `comfyui-agent run w.json | xargs ...` gets only paths."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._last_key: tuple[str, int] | None = None
        self._cached_seen: set[str] = set()

    def _say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def started(self, task_id: str, url: str) -> None:
        """See Display."""
        self._say(f"task {task_id} on {url}")

    def progress(self, snap: ProgressSnapshot) -> None:
        """See Display."""
        for view in snap.cached:
            if view.id not in self._cached_seen:
                self._cached_seen.add(view.id)
                self._say(f"[{snap.percent:3d}%] {node_label(view)} cached")
        key = line_key(snap)
        if key is None or key == self._last_key or snap.current is None:
            return
        self._last_key = key
        current = snap.current
        steps = f" {current.value}/{current.max}" if current.max > 1 else ""
        self._say(f"[{snap.percent:3d}%] {node_label(current)}{steps}")

    def note(self, text: str) -> None:
        """See Display."""
        self._say(text)

    def pause(self) -> None:
        """See Display."""

    def resume(self) -> None:
        """See Display."""

    def finished(self, outcome: Outcome) -> None:
        """See Display."""
        took = seconds_text(outcome.elapsed)
        if outcome.error is not None:
            self._say(f"{outcome.status} after {took}: {outcome.error}")
        else:
            self._say(f"succeeded in {took} ({counts_text(outcome.snapshot)})")
        for item in outcome.files:
            if item.problem:
                self._say(f"{item.reference}: {item.problem}")
            print(item.path if item.path else item.reference, file=self.out, flush=True)


class JsonDisplay:
    """One JSON object per line on stdout, for scripts."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.task_id = ""

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line."""
        line = json.dumps({"event": event, "task_id": self.task_id, **fields})
        print(line, file=self.out, flush=True)

    def started(self, task_id: str, url: str) -> None:
        """See Display."""
        self.task_id = task_id
        self.emit("started", url=url)

    def progress(self, snap: ProgressSnapshot) -> None:
        """See Display."""
        current = snap.current
        node = None
        if current is not None:
            node = {
                "id": current.id,
                "title": current.title,
                "value": current.value,
                "max": current.max,
            }
        self.emit(
            "progress",
            percent=round(snap.fraction * 100, 1),
            nodes_done=snap.done,
            nodes_total=snap.total,
            cached=[view.id for view in snap.cached],
            node=node,
        )

    def note(self, text: str) -> None:
        """See Display."""
        self.emit("note", message=text)

    def pause(self) -> None:
        """See Display."""

    def resume(self) -> None:
        """See Display."""

    def finished(self, outcome: Outcome) -> None:
        """See Display."""
        files = [
            {
                "node": item.node,
                "file": item.reference,
                "path": str(item.path) if item.path else None,
                **({"problem": item.problem} if item.problem else {}),
            }
            for item in outcome.files
        ]
        self.emit(
            outcome.status,
            exit_code=int(outcome.code),
            elapsed=round(outcome.elapsed, 3),
            error=outcome.error,
            files=files,
        )
