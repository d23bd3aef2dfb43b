"""What a progress map means to a person: overall fraction, current node and its steps,
cached nodes. Pure: the map and the workflow's titles in, a snapshot out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.client.assignments import node_order


@dataclass(frozen=True)
class NodeView:
    """One node as shown: its id, title, steps and state."""

    id: str
    title: str
    value: int
    max: int
    cached: bool

    @property
    def done(self) -> bool:
        """value == max > 0: the node finished (or was cached)."""
        return self.max > 0 and self.value >= self.max

    @property
    def fraction(self) -> float:
        """How far this node is, 0..1."""
        return min(self.value / self.max, 1.0) if self.max > 0 else 0.0


@dataclass(frozen=True)
class ProgressSnapshot:
    """The whole run at one moment."""

    total: int
    done: int
    cached: tuple[NodeView, ...]
    current: NodeView | None
    fraction: float

    @property
    def percent(self) -> int:
        """Overall percentage, rounded down (100 only when all is done)."""
        return int(self.fraction * 100)


def node_titles(workflow: dict[str, Any]) -> dict[str, str]:
    """Each node's title: `_meta.title`, else its class type, else its id."""
    titles: dict[str, str] = {}
    for node_id, entry in workflow.items():
        title = ""
        if isinstance(entry, dict):
            meta = entry.get("_meta")
            if isinstance(meta, dict) and isinstance(meta.get("title"), str):
                title = meta["title"].strip()
            if not title and isinstance(entry.get("class_type"), str):
                title = entry["class_type"]
        titles[str(node_id)] = title or f"#{node_id}"
    return titles


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def snapshot(progress: dict[str, Any], titles: dict[str, str]) -> ProgressSnapshot:
    """Fold a progress map: a node counts 1 when value == max > 0, a running node adds
    value/max (the web page's rule); the current node is the latest started unfinished one."""
    views: list[NodeView] = []
    started: dict[str, tuple[float, float]] = {}
    for node_id in sorted(progress, key=node_order):
        node = progress[node_id]
        if not isinstance(node, dict):
            continue
        view = NodeView(
            id=node_id,
            title=titles.get(node_id, f"#{node_id}"),
            value=max(_int(node.get("value")), 0),
            max=max(_int(node.get("max")), 0),
            cached=node.get("cached") is True,
        )
        views.append(view)
        start = _number(node.get("start"))
        if start > 0:
            started[node_id] = (start, _number(node.get("last_updated")))
    running = [view for view in views if view.id in started and not view.done]
    current = max(running, key=lambda view: started[view.id], default=None)
    total = len(views)
    progressed = sum(1.0 if view.done else view.fraction for view in views)
    return ProgressSnapshot(
        total=total,
        done=sum(1 for view in views if view.done),
        cached=tuple(view for view in views if view.cached and view.done),
        current=current,
        fraction=progressed / total if total else 0.0,
    )


def line_key(snap: ProgressSnapshot) -> tuple[str, int] | None:
    """What a plain-text display prints a new line for: another current node, or its
    steps passing another tenth (so a 1000-step node prints at most ~10 lines)."""
    current = snap.current
    if current is None:
        return None
    return current.id, int(current.fraction * 10)
