"""Pure reading of app files: JSON text in, apps (and what is wrong with the rest) out.

A file holds one app object or a list of them. Ids: the object's `"id"`, else the file's
stem for a one-app file, `<stem>-<n>` (n from 1, in list order) for a list file. An entry
that is broken is reported and left out; the file's other entries still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.apps.panels import App, AppFileEntry, Panel
from agent.workflow import WorkflowError, extract_workflow
from store.base import InvalidTaskId, validate_task_id


@dataclass(frozen=True)
class AppProblem:
    """Why an app file, or one entry of it, could not be loaded."""

    source: str
    message: str
    app_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source} ({self.app_id})" if self.app_id else self.source
        return f"{where}: {self.message}"


class AppDefinitionError(ValueError):
    """An app entry that cannot be served; the message says why."""


def parse_app_file(stem: str, source: str, raw: bytes) -> tuple[list[App], list[AppProblem]]:
    """The apps a file defines and the problems of its broken entries (or of the file)."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return [], [AppProblem(source, f"not valid JSON: {exc}")]
    if isinstance(document, dict):
        entries, ids = [document], [stem]
    elif isinstance(document, list):
        entries, ids = document, [f"{stem}-{n}" for n in range(1, len(document) + 1)]
    else:
        return [], [AppProblem(source, "must hold an app object or a list of them")]
    apps: list[App] = []
    problems: list[AppProblem] = []
    for entry, default_id in zip(entries, ids, strict=True):
        explicit = entry.get("id") if isinstance(entry, dict) else None
        app_id = explicit if isinstance(explicit, str) else default_id
        try:
            apps.append(build_app(entry, default_id, source))
        except AppDefinitionError as exc:
            problems.append(AppProblem(source, str(exc), app_id))
    return apps, problems


def build_app(entry: Any, default_id: str, source: str = "") -> App:
    """One app from its object; raises AppDefinitionError saying what is wrong."""
    try:
        spec = AppFileEntry.model_validate(entry)
    except ValidationError as exc:
        raise AppDefinitionError(_validation_message(exc)) from exc
    app_id = spec.id if spec.id is not None else default_id
    try:
        validate_task_id(app_id)
    except InvalidTaskId as exc:
        raise AppDefinitionError(
            f"app id {app_id!r} must be 1-128 of A-Za-z0-9._- starting with a letter, digit or _"
        ) from exc
    try:
        workflow = extract_workflow(spec.prompt)
    except WorkflowError as exc:
        raise AppDefinitionError(f"prompt: {exc.detail}") from exc
    panels = [*spec.params, *_meta_panels(workflow)]
    parameters: dict[str, Panel] = {}
    for leaf in (leaf for panel in panels for leaf in panel.leaves()):
        if leaf.id is None:
            raise AppDefinitionError(f"{leaf.type} panel {leaf.key!r} has no id (its node id)")
        if leaf.id not in workflow:
            raise AppDefinitionError(f"parameter {leaf.name}: the prompt has no node {leaf.id}")
        if leaf.name in parameters:
            raise AppDefinitionError(f"parameter {leaf.name} is declared twice")
        parameters[leaf.name] = leaf
    return App(
        id=app_id,
        title=spec.title or app_id,
        description=spec.description,
        prompt=workflow,
        panels=tuple(panels),
        parameters=parameters,
        source=source,
    )


def _meta_panels(workflow: dict[str, dict[str, Any]]) -> list[Panel]:
    """Panels declared in nodes' `_meta.edit` lists, their id defaulting to the node."""
    panels: list[Panel] = []
    for node_id, node in workflow.items():
        meta = node.get("_meta")
        edit = meta.get("edit") if isinstance(meta, dict) else None
        if edit is None:
            continue
        if not isinstance(edit, list):
            raise AppDefinitionError(f"node {node_id}: _meta.edit must be a list of panels")
        for index, item in enumerate(edit):
            try:
                panel = Panel.model_validate(item)
            except ValidationError as exc:
                message = _validation_message(exc)
                raise AppDefinitionError(f"node {node_id} _meta.edit[{index}]: {message}") from exc
            panels.append(panel.with_node(node_id))
    return panels


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)
