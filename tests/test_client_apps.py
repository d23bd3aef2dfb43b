"""`comfyui-agent apps` and `comfyui-agent run APP_ID` against a real agent process with
`--apps DIR` and the fake ComfyUI: the table, parameters set with --set (an image from a
file), the agent's 422 ParamError naming the parameter, --detach + watch."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings import AgentSettings
from tests.client_harness import AgentServer, agent_server, run_client

pytestmark = pytest.mark.skipif(
    "apps" not in AgentSettings.model_fields,
    reason="this build of the agent has no apps API (--apps, GET /api/apps) yet",
)

TRACES = Path(__file__).resolve().parents[2] / "shared" / "comfyui-traces"


def copy_app() -> dict[str, Any]:
    """LoadImage -> SlowCounter -> SaveImage: a photo, a step count, a hidden delay."""
    return {
        "title": "Photo copy",
        "description": "Counts, then saves the photo.",
        "prompt": {
            "1": {
                "class_type": "LoadImage",
                "inputs": {"image": "missing.png"},
                "_meta": {"title": "Photo", "edit": [{"type": "image", "key": "image"}]},
            },
            "2": {
                "class_type": "SlowCounter",
                "inputs": {"image": ["1", 0], "steps": 5, "delay": 0.02},
                "_meta": {"title": "Counting"},
            },
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "app_copy"},
            },
        },
        "params": [
            {"type": "number", "id": "2", "key": "steps", "title": "Steps", "min": 1, "max": 200},
            {
                "type": "group",
                "title": "Output",
                "children": [
                    {"type": "select", "id": "3", "key": "filename_prefix",
                     "options": "app_copy,app_other"},
                    {"type": "number", "id": "2", "key": "delay", "hidden": True},
                ],
            },
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    tmp = tmp_path_factory.mktemp("apps-agent")
    apps = tmp / "apps"
    apps.mkdir()
    (apps / "copy.json").write_text(json.dumps(copy_app()))
    with agent_server(tmp, ["--apps", str(apps)]) as server:
        yield server


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes((TRACES / "load_image.upload.png").read_bytes())
    return path


def test_apps_table_lists_apps_and_their_parameters(agent: AgentServer, tmp_path: Path) -> None:
    result = run_client(agent.url, "apps", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for text in ("copy", "Photo copy", "Counts, then saves the photo.", "1.image image",
                 "2.steps number [1..200] (Steps)", "3.filename_prefix select",
                 "[app_copy|app_other]", "(Output)"):  # fmt: skip
        assert text in table, table
    assert "2.delay" not in table  # hidden
    as_json = run_client(agent.url, "apps", "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout) == agent.get("/api/apps")[1]


def test_run_an_app_with_parameters(agent: AgentServer, tmp_path: Path, photo: Path) -> None:
    result = run_client(
        agent.url,
        "run",
        "copy",
        "--set",
        "2.steps=7",
        "--set",
        f"1.image=@{photo}",
        "--set",
        "3.filename_prefix=app_other",
        "--task-id",
        "app-run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (path,) = result.stdout.split()
    assert re.fullmatch(r"outputs/app_other_\d{5}_\.png", path)
    assert "Counting #2" in result.stderr  # titles from the app's workflow
    _, record = agent.get("/api/tasks/app-run")
    assert record["app"] == "copy"
    assert record["params"]["2.steps"] == 7
    assert record["progress"]["2"]["max"] == 7


@pytest.mark.parametrize(
    ("assignment", "param"),
    [("2.steps=500", "2.steps"), ("2.delay=1", "2.delay"), ("9.text=x", "9.text")],
)
def test_bad_parameters_exit_2_naming_them(
    agent: AgentServer, tmp_path: Path, assignment: str, param: str
) -> None:
    result = run_client(agent.url, "run", "copy", "--set", assignment, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "ParamError" in result.stderr and param in result.stderr


def test_detach_an_app_then_watch(agent: AgentServer, tmp_path: Path, photo: Path) -> None:
    started = run_client(
        agent.url, "run", "copy", "--detach", "--task-id", "app-bg",
        "--set", f"1.image=@{photo}", "--set", "2.steps=60", cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout == "app-bg\n"
    watched = run_client(agent.url, "watch", "app-bg", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    (path,) = watched.stdout.split()
    assert (tmp_path / path).is_file()


def test_unknown_app_exits_2(agent: AgentServer, tmp_path: Path) -> None:
    result = run_client(agent.url, "run", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope is neither a workflow file nor an app" in result.stderr
