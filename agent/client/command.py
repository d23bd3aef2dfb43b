"""`comfyui-agent run | watch | apps`: the client's command line and what each does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from agent.client.assignments import (
    Assignment,
    app_image_params,
    app_params,
    apply_to_workflow,
    bad,
    file_value,
    is_image_input,
    parse_assignment,
)
from agent.client.display import Display, JsonDisplay, PlainDisplay
from agent.client.errors import ClientError, ExitCode
from agent.client.progress_view import node_titles

if TYPE_CHECKING:
    from agent.client.api import AgentClient

DEFAULT_URL = "http://127.0.0.1:9000"


def default_url() -> str:
    """`$COMFYUI_AGENT_URL`, else the local agent's address."""
    return os.environ.get("COMFYUI_AGENT_URL") or DEFAULT_URL


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=default_url(),
        help="the agent [env COMFYUI_AGENT_URL] (default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("COMFYUI_AGENT_TOKEN", ""),
        help="bearer token [env COMFYUI_AGENT_TOKEN]",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("outputs"), help="folder for outputs (default: outputs)"
    )
    parser.add_argument(
        "--results",
        choices=("base64", "none"),
        default="base64",
        help="none: list the output files, do not download them",
    )


def build_parser() -> argparse.ArgumentParser:
    """The client's command line (no prefix guessing: --url is --url)."""
    parser = argparse.ArgumentParser(
        prog="comfyui-agent",
        description="Run workflows and apps on a comfyui-agent, with live progress.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        allow_abbrev=False,
        help="run a workflow file or an app, save its outputs",
        description="Run an API-format workflow (a .json file, or - for stdin) or an app "
        "(by id), show its progress and save its output files. Exit codes: 0 success, "
        "1 the run failed or was interrupted, 2 bad usage or input, 3 agent unreachable "
        "or failing (5xx), 130 Ctrl-C with the task left running.",
    )
    run.add_argument("target", metavar="WORKFLOW.json|APP_ID")
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="set an input (or app parameter): JSON when it parses, else text; "
        "@path reads a file (base64 for image inputs); repeatable",
    )
    run.add_argument("--task-id", help="name the task (default: a new id)")
    run.add_argument("--detach", action="store_true", help="start it in the background")
    _outputs(run)
    _common(run)
    watch = commands.add_parser(
        "watch",
        allow_abbrev=False,
        help="follow a task to its end, save its outputs",
        description="Follow a task (run on any instance) to its end and save its outputs.",
    )
    watch.add_argument("task_id", metavar="TASK_ID")
    _outputs(watch)
    _common(watch)
    apps = commands.add_parser(
        "apps", allow_abbrev=False, help="list the apps and their parameters"
    )
    _common(apps)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run a client subcommand; the exit code."""
    args = build_parser().parse_args(list(argv))
    try:
        return int(asyncio.run(_dispatch(args)))
    except KeyboardInterrupt:  # Ctrl-C before a task was followed: nothing to ask about
        print(f"comfyui-agent {args.command}: stopped", file=sys.stderr)
        return int(ExitCode.LEFT_RUNNING)
    except ClientError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"event": "error", "exit_code": int(exc.code), "error": exc.message}))
        print(f"comfyui-agent {args.command}: {exc.message}", file=sys.stderr)
        return int(exc.code)


async def _dispatch(args: argparse.Namespace) -> ExitCode:
    # aiohttp is most of the client's start-up time: not loaded for --help or usage errors.
    from agent.client.api import AgentClient

    if args.command == "apps":
        from agent.client.apps_table import show_apps

        async with AgentClient(args.url, args.token) as client:
            return await show_apps(client, as_json=args.json)
    display = _display(args.json)
    async with AgentClient(args.url, args.token) as client:
        if args.command == "watch":
            return await _watch(client, display, args)
        return await _run(client, display, args)


def _display(as_json: bool) -> Display:
    if as_json:
        return JsonDisplay()
    if sys.stdout.isatty():
        from agent.client.live_view import LiveDisplay

        return LiveDisplay()
    return PlainDisplay()


def watch_command(task_id: str, url: str) -> str:
    """The command that watches a task again (--url only when the default would not do)."""
    parts = ["comfyui-agent", "watch", task_id]
    if url.rstrip("/") != default_url().rstrip("/"):
        parts += ["--url", url]
    return shlex.join(parts)


def _query(**values: str | None) -> str:
    return urlencode({key: value for key, value in values.items() if value})


async def _run(client: AgentClient, display: Display, args: argparse.Namespace) -> ExitCode:
    assignments = [parse_assignment(text) for text in args.sets]
    task_id = args.task_id or uuid.uuid4().hex
    results = "none" if args.results == "none" else None
    if _is_workflow(args.target):
        workflow = await asyncio.to_thread(load_workflow, args.target)
        values = [
            (a, await _value(a, is_image_input(workflow, a.node, a.input))) for a in assignments
        ]
        workflow = apply_to_workflow(workflow, values)
        titles = node_titles(workflow)
        first: dict[str, Any] = workflow
        submit_path, submit_body = "/api/tasks", first
    else:
        app = await _app(client, args.target)
        images = app_image_params(app)
        values = [(a, await _value(a, a.name in images)) for a in assignments]
        prompt = app.get("prompt")
        titles = node_titles(prompt) if isinstance(prompt, dict) else {}
        first = {"app": args.target, "params": app_params(values)}
        submit_path = f"/api/apps/{args.target}/tasks"
        submit_body = {"params": first["params"]}
    hint = watch_command(task_id, args.url)
    if args.detach:
        _, record = await client.request(
            "POST", submit_path, submit_body, headers={"task-id": task_id}
        )
        status = record.get("status") if isinstance(record, dict) else None
        if args.json:
            print(json.dumps({"event": "submitted", "task_id": task_id, "status": status}))
        else:
            print(task_id)
            print(f"task {task_id} {status}; watch it: {hint}", file=sys.stderr)
        return ExitCode.OK
    from agent.client.follow import Follow

    follow = Follow(client, display, task_id, titles, args.out, args.results, hint)
    return await follow.run(_query(task_id=task_id, results=results), first)


async def _watch(client: AgentClient, display: Display, args: argparse.Namespace) -> ExitCode:
    async def find_titles() -> dict[str, str]:
        _, record = await client.request("GET", f"/api/tasks/{args.task_id}")
        return await _task_titles(client, record)

    from agent.client.follow import Follow

    titles = await find_titles()  # 404 here: exit 2 before any websocket
    hint = watch_command(args.task_id, args.url)
    follow = Follow(
        client, display, args.task_id, titles, args.out, args.results, hint, find_titles
    )
    results = "none" if args.results == "none" else None
    return await follow.run(_query(id=args.task_id, results=results))


def _is_workflow(target: str) -> bool:
    return (
        target == "-"
        or target.endswith(".json")
        or os.path.sep in target
        or (Path(target).is_file())
    )


def load_workflow(target: str) -> dict[str, Any]:
    """The API-format workflow in a file (or stdin for `-`); exit 2 with a reason if not."""
    try:
        text = sys.stdin.read() if target == "-" else Path(target).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read {target}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise bad(f"{target} is not JSON: {exc}") from exc
    if isinstance(body, dict) and isinstance(body.get("prompt"), dict):
        body = body["prompt"]
    if isinstance(body, dict) and isinstance(body.get("nodes"), list):
        raise bad(f"{target} is ComfyUI's UI format; export the workflow with 'Save (API)' instead")
    if (
        not isinstance(body, dict)
        or not body
        or not all(isinstance(node, dict) and "class_type" in node for node in body.values())
    ):
        raise bad(f"{target} is not an API-format workflow (a map of nodes with class_type)")
    return body


async def _value(assignment: Assignment, image: bool) -> Any:
    if assignment.file is None:
        return assignment.value
    try:
        data = await asyncio.to_thread(_read_file, assignment.file)
    except OSError as exc:
        raise bad(f"--set {assignment.name}: cannot read {assignment.file}: {exc}") from exc
    return file_value(data, image=image)


def _read_file(name: str) -> bytes:
    return Path(name).expanduser().read_bytes()


async def _app(client: AgentClient, app_id: str) -> dict[str, Any]:
    try:
        _, app = await client.request("GET", f"/api/apps/{app_id}")
    except ClientError as exc:
        if exc.status == 404:
            raise bad(
                f"{app_id} is neither a workflow file nor an app on {client.url} "
                "(`comfyui-agent apps` lists them)"
            ) from exc
        raise
    if not isinstance(app, dict):
        raise ClientError(ExitCode.UNAVAILABLE, f"app {app_id}: unexpected answer {app!r}")
    return app


async def _task_titles(client: AgentClient, record: Any) -> dict[str, str]:
    """Node titles of a watched task, from ComfyUI's queue or history when this agent
    passes them through (best effort: node ids otherwise)."""
    prompt_id = record.get("prompt_id") if isinstance(record, dict) else None
    if not prompt_id:
        return {}
    for path in (f"/history/{prompt_id}", "/queue"):
        try:
            _, body = await client.request("GET", path, timeout=5.0)
        except ClientError:
            continue
        for entry in _queue_entries(body, prompt_id):
            if len(entry) > 2 and isinstance(entry[2], dict):
                return node_titles(entry[2])
    return {}


def _queue_entries(body: Any, prompt_id: str) -> list[list[Any]]:
    if not isinstance(body, dict):
        return []
    if isinstance(body.get(prompt_id), dict):  # /history/{id}
        prompt = body[prompt_id].get("prompt")
        return [prompt] if isinstance(prompt, list) else []
    entries = [*body.get("queue_running", []), *body.get("queue_pending", [])]
    return [e for e in entries if isinstance(e, list) and len(e) > 1 and e[1] == prompt_id]
