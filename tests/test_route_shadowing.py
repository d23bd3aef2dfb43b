"""The agent's own routes never shadow a route of ComfyUI 0.3.64 (tests/data/...routes.json).

The agent's routes are read from its aiohttp router, so routes added later are checked too.
Every ComfyUI route, bare and under /api/, and every static folder of the web page must
reach the pass-through; every agent route must be a path ComfyUI does not serve.
With COMFYUI_DIR set, the data file itself is checked against ComfyUI's own router.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from agent.app import create_app
from agent.cli import make_backend
from agent.proxy import proxy
from agent.settings import parse_settings

DATA = Path(__file__).resolve().parent / "data" / "comfyui_0.3.64_routes.json"
COMFYUI = json.loads(DATA.read_text())
ROUTES: list[tuple[str, str]] = [(m, p) for m, p in COMFYUI["routes"]]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def sample_path(template: str) -> str:
    """A concrete path that a route template matches ({name:.*} may span segments)."""
    spanning = re.sub(r"\{[^}:]+:\.\*\}", "sub/dir/file.png", template)
    return re.sub(r"\{[^}]+\}", "sample", spanning)


def static_samples() -> list[str]:
    """Paths the page loads from ComfyUI's static folders and its web root."""
    samples = [f"{prefix}x/y.js" for prefix in COMFYUI["static"] if prefix != "/"]
    for entry in COMFYUI["web_root"]:
        samples.append(f"/{entry}" if "." in entry else f"/{entry}/index-Cx1.js")
    return samples


@pytest.fixture
async def agent_app() -> web.Application:
    settings = parse_settings(["--comfyui-url", "http://127.0.0.1:9", "--store", "memory://"])
    return create_app(settings, await make_backend(settings))


async def handler_for(app: web.Application, method: str, path: str) -> Any:
    match = await app.router.resolve(make_mocked_request(method, path, app=app))
    return inspect.unwrap(match.handler)  # behind the front door (agent.http.front_door)


def agent_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, template) of every route the agent answers itself."""
    own = []
    for route in app.router.routes():
        if inspect.unwrap(route.handler) is proxy or route.resource is None:
            continue
        info = route.resource.get_info()
        template = info.get("formatter") or info.get("path") or info.get("prefix") or ""
        own.append((route.method, template))
    return own


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_comfyui_route_reaches_comfyui(
    agent_app: web.Application, method: str, template: str
) -> None:
    path = sample_path(template)
    methods = (method, "HEAD") if method == "GET" else (method,)
    for each in methods:
        assert await handler_for(agent_app, each, path) is proxy, f"{each} {path} is shadowed"


@pytest.mark.parametrize("path", static_samples())
async def test_the_pages_static_files_reach_comfyui(agent_app: web.Application, path: str) -> None:
    for method in ("GET", "HEAD"):
        assert await handler_for(agent_app, method, path) is proxy, f"{path} is shadowed"


async def test_no_agent_route_is_a_comfyui_path(agent_app: web.Application) -> None:
    comfyui = web.Application()

    async def comfyui_route(_request: web.Request) -> web.Response:
        return web.Response()

    for method, template in ROUTES:
        comfyui.router.add_route(method, template, comfyui_route)
    own = agent_routes(agent_app)
    assert ("POST", "/api/run") in own and ("GET", "/api/tasks/{task_id}") in own
    top_level = {entry for entry in COMFYUI["web_root"]}
    prefixes = [p for p in COMFYUI["static"] if p != "/"]
    for _method, template in own:
        path = sample_path(template)
        for method in METHODS:
            match = await comfyui.router.resolve(make_mocked_request(method, path, app=comfyui))
            # 404: no ComfyUI resource has this path; 405 would mean one has, for another method.
            assert match.http_exception is not None and match.http_exception.status == 404, (
                f"the agent's {template} shadows ComfyUI's {method} {path}"
            )
        assert not any(path.startswith(prefix) for prefix in prefixes), template
        assert path.strip("/").split("/")[0] not in top_level, template


@pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="COMFYUI_DIR is not set")
def test_the_route_list_is_comfyuis_own() -> None:
    """Build ComfyUI's PromptServer in its own Python and compare its router with the file."""
    script = """
import asyncio, json, sys
sys.argv = ["main.py", "--cpu", "--disable-api-nodes"]
import comfy.options
comfy.options.enable_args_parsing()
import utils.install_util, utils.extra_config
import server
async def main():
    s = server.PromptServer(asyncio.get_running_loop())
    s.add_routes()
    print(json.dumps([[r.method, r.resource.get_info().get("formatter")
        or r.resource.get_info().get("path"), type(r.resource).__name__]
        for r in s.app.router.routes() if r.resource is not None]))
asyncio.run(main())
"""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run(
        [python, "-c", script],
        cwd=os.environ["COMFYUI_DIR"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    real = json.loads(done.stdout.strip().splitlines()[-1])
    dynamic = {
        (method, template)
        for method, template, kind in real
        if method != "HEAD" and kind != "StaticResource"
    }
    # aiohttp's formatter drops a parameter's pattern ({filename:.*} -> {filename}).
    assert dynamic == {(method, re.sub(r":[^}]*\}", "}", path)) for method, path in ROUTES}
