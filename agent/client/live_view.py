"""The terminal view: an overall bar, the current node's bar with its steps and title,
the cached nodes, elapsed time; then a summary. Drawn with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from agent.client.display import Outcome, counts_text, node_label, seconds_text
from agent.client.progress_view import ProgressSnapshot

_SCALE = 1000  # the overall bar counts thousandths


class LiveDisplay:
    """Live bars on a terminal (stdout), the summary after them."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.err = Console(stderr=True)
        self.bars = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            expand=True,
        )
        self.overall: TaskID = self.bars.add_task("Overall", total=_SCALE, info="")
        self.node: TaskID = self.bars.add_task("waiting", total=1, info="")
        self.node_id: str | None = None
        self.node_max = 0
        self.header = Text()
        self.cached = Text()
        self.live = Live(self, console=self.console, refresh_per_second=8, transient=False)

    def __rich__(self) -> Any:
        return Group(self.header, self.bars, self.cached)

    def started(self, task_id: str, url: str) -> None:
        """See Display."""
        self.header = Text.assemble(("task ", "dim"), (task_id, "cyan"), (f" on {url}", "dim"))
        self.live.start()

    def progress(self, snap: ProgressSnapshot) -> None:
        """See Display."""
        self.bars.update(
            self.overall,
            completed=int(snap.fraction * _SCALE),
            info=f"{snap.percent:3d}%  {counts_text(snap)}",
        )
        current = snap.current
        if current is None:
            if self.node_id is None:
                return
            # Between nodes or at the end: the node shown last has finished.
            total = self.node_max or 1
            steps = f"{total}/{total} steps" if total > 1 else ""
            self.bars.update(self.node, completed=total, info=steps)
            self._show_cached(snap)
            return
        self.node_max = max(current.max, 1)
        if current.id != self.node_id:
            self.node_id = current.id
            self.bars.reset(self.node, total=max(current.max, 1), description=node_label(current))
        steps = f"{current.value}/{current.max} steps" if current.max > 1 else ""
        self.bars.update(self.node, total=max(current.max, 1), completed=current.value, info=steps)
        self._show_cached(snap)

    def _show_cached(self, snap: ProgressSnapshot) -> None:
        if snap.cached:
            names = ", ".join(node_label(view) for view in snap.cached)
            self.cached = Text.assemble(("cached: ", "dim"), (names, "dim italic"))

    def note(self, text: str) -> None:
        """See Display."""
        self.console.print(text)

    def pause(self) -> None:
        """See Display."""
        self.live.stop()

    def resume(self) -> None:
        """See Display."""
        self.live.start()

    def finished(self, outcome: Outcome) -> None:
        """See Display."""
        if outcome.error is None:
            self.progress(outcome.snapshot)
            self.bars.update(self.overall, completed=_SCALE)
        self.live.stop()
        took = seconds_text(outcome.elapsed)
        if outcome.error is not None:
            self.err.print(f"[bold red]✗ {outcome.status}[/] after {took}")
            self.err.print(Text(outcome.error))
        else:
            counts = counts_text(outcome.snapshot)
            self.console.print(f"[bold green]✓ succeeded[/] in {took} · {counts}")
        for item in outcome.files:
            if item.path is not None:
                self.console.print(f"  saved [bold]{item.path}[/]", highlight=False)
            else:
                self.console.print(f"  {item.reference}", highlight=False)
            if item.problem:
                self.err.print(f"  [yellow]{item.problem}[/]", highlight=False)
