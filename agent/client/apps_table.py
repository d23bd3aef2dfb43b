"""`comfyui-agent apps`: the agent's apps and the parameters each one takes."""

from __future__ import annotations

import json
from typing import Any

from agent.client.api import AgentClient
from agent.client.errors import ClientError, ExitCode


def parameter_lines(app: dict[str, Any]) -> list[str]:
    """One line per settable parameter: `6.text string (Prompt)`, with its limits; a
    parameter listed both in `params` and in a node's `_meta.edit` shows once."""
    lines: list[str] = []
    seen: set[str] = set()

    def visit(panels: Any, default_id: str | None, group: str) -> None:
        for panel in panels if isinstance(panels, list) else []:
            if not isinstance(panel, dict) or panel.get("hidden"):
                continue
            kind = panel.get("type", "?")
            if kind == "group":
                visit(panel.get("children"), default_id, str(panel.get("title") or ""))
                continue
            if not panel.get("key"):
                continue
            name = f"{panel.get('id', default_id)}.{panel['key']}"
            if name in seen:
                continue
            seen.add(name)
            limits = _limits(panel)
            title = panel.get("title") or ""
            where = f"{group} / {title}" if group and title else group or title
            label = f"({where})" if where else ""
            lines.append(" ".join(part for part in (name, kind, limits, label) if part))

    visit(app.get("params"), None, "")
    prompt = app.get("prompt")
    if isinstance(prompt, dict):
        for node_id, entry in prompt.items():
            meta = entry.get("_meta") if isinstance(entry, dict) else None
            if isinstance(meta, dict):
                visit(meta.get("edit"), str(node_id), "")
    return lines


def _limits(panel: dict[str, Any]) -> str:
    options = panel.get("options")
    if isinstance(options, str):
        options = [item.strip() for item in options.split(",") if item.strip()]
    if isinstance(options, list) and options:
        shown = "|".join(str(item) for item in options[:6])
        return f"[{shown}{'|...' if len(options) > 6 else ''}]"
    low, high = panel.get("min"), panel.get("max")
    if low is not None or high is not None:
        return f"[{'' if low is None else low}..{'' if high is None else high}]"
    return ""


async def show_apps(client: AgentClient, *, as_json: bool) -> ExitCode:
    """Print the apps as a table (or their JSON list)."""
    try:
        _, apps = await client.request("GET", "/api/apps")
    except ClientError as exc:
        if exc.status == 404:
            raise ClientError(
                ExitCode.BAD_INPUT, f"{client.url} has no apps API (GET /api/apps: 404)"
            ) from exc
        raise
    if not isinstance(apps, list):
        raise ClientError(ExitCode.UNAVAILABLE, f"/api/apps answered {apps!r}, not a list")
    if as_json:
        print(json.dumps(apps))
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not apps:
        console.print(f"no apps on {client.url}")
        return ExitCode.OK
    table = Table("ID", "Title", "Parameters", show_lines=True)
    for app in apps:
        if not isinstance(app, dict):
            continue
        # Text, not markup: `[a|b]` and app titles are shown as they are.
        params = Text("\n".join(parameter_lines(app)) or "-")
        title = Text(str(app.get("title") or ""))
        if app.get("description"):
            title.append(f"\n{app['description']}", style="dim")
        table.add_row(Text(str(app.get("id", ""))), title, params)
    console.print(table)
    return ExitCode.OK
