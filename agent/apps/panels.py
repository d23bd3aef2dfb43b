"""The parameter panel of an app, in the seed front end's format, and the app it belongs to.

A panel entry is `{"type": image|select|number|string|group, "id": node id, "key": input
name, "title", "description"?, "options"?, "min"?, "max"?, "step"?, "hidden"?,
"children"?}`; a group has children instead of id/key. Panels sit in the app's `params`
list or in a node's `_meta.edit` list (where `id` defaults to that node).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PanelType = Literal["image", "select", "number", "string", "group"]
Option = str | int | float


class Panel(BaseModel):
    """One entry of a parameter panel (a group holds more of them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: PanelType
    id: str | None = None
    key: str | None = None
    title: str = ""
    description: str | None = None
    options: list[Option] | None = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    hidden: bool = False
    children: list[Panel] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _node_id_text(cls, value: Any) -> Any:
        # Node ids are JSON object keys (text); authors often write them as numbers.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("options")
    @classmethod
    def _options_not_empty(cls, value: list[Option] | None) -> list[Option] | None:
        if value is not None and not value:
            raise ValueError("options must not be empty")
        return value

    @field_validator("min", "max", "step")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Panel:
        if self.type == "group":
            if self.children is None:
                raise ValueError("a group needs children")
            return self
        if self.children is not None:
            raise ValueError(f"a {self.type} panel cannot have children")
        if not self.key:
            raise ValueError(f"a {self.type} panel needs a key (the input name)")
        if self.type == "select" and not self.options:
            raise ValueError("a select panel needs options")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be greater than 0")
        return self

    @property
    def name(self) -> str:
        """The parameter name, `<node id>.<input>` (empty for groups)."""
        if self.type == "group":
            return ""
        return f"{self.id}.{self.key}"

    def leaves(self) -> list[Panel]:
        """This panel, or for a group every non-group panel inside it, in order."""
        if self.type != "group":
            return [self]
        return [leaf for child in self.children or [] for leaf in child.leaves()]

    def with_node(self, node_id: str) -> Panel:
        """This panel with id defaulted to node_id (a `_meta.edit` entry), children too."""
        children = [child.with_node(node_id) for child in self.children or []]
        update: dict[str, Any] = {"children": children if self.children is not None else None}
        if self.type != "group" and self.id is None:
            update["id"] = node_id
        return self.model_copy(update=update)


Panel.model_rebuild()


class AppFileEntry(BaseModel):
    """An app object as written in an app file (the seed front end's prompt-list entry)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    title: str | None = None
    description: str | None = None
    prompt: dict[str, Any]
    params: list[Panel] = Field(default_factory=list)


@dataclass(frozen=True)
class App:
    """A loaded app: its workflow and the parameters callers may set."""

    id: str
    title: str
    description: str | None
    prompt: dict[str, dict[str, Any]]
    # Top-level panels, then `_meta.edit` panels in node order (ids filled in).
    panels: tuple[Panel, ...]
    # Every settable or hidden parameter by name (`<node id>.<input>`), groups flattened.
    parameters: dict[str, Panel] = field(default_factory=dict)
    source: str = ""

    def describe(self) -> dict[str, Any]:
        """The app as `GET /api/apps` lists it (a superset of the seed front end's entry)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "params": [self._panel_json(panel) for panel in self.panels],
            "prompt": self.prompt,
        }

    def _panel_json(self, panel: Panel) -> dict[str, Any]:
        body = panel.model_dump(mode="json", exclude_none=True, exclude={"children"})
        if panel.type == "group":
            body["children"] = [self._panel_json(child) for child in panel.children or []]
            return body
        body["name"] = panel.name
        current = self.current_value(panel)
        if current is not None:
            body["default"] = current
        return body

    def current_value(self, panel: Panel) -> Any:
        """The workflow's own value of a parameter (None when unset or a link)."""
        inputs = self.prompt.get(panel.id or "", {}).get("inputs", {})
        value = inputs.get(panel.key) if isinstance(inputs, dict) else None
        if _is_link(value):
            return None
        return value


def _is_link(value: Any) -> bool:
    """A `[node id, output index]` link to another node's output."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )
