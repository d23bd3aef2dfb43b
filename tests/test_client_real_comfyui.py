"""`comfyui-agent run` against an agent whose child is a real ComfyUI (set COMFYUI_DIR;
COMFYUI_PYTHON for its venv): outputs saved, a node that raises (exit 1) and a validation
error (exit 2) said in words, the terminal view in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.agent_harness import trace_prompt
from tests.client_harness import (
    ANSI,
    AgentServer,
    real_agent_server,
    run_client,
    spawn_in_terminal,
)

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no real ComfyUI checkout to test against"
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with real_agent_server(tmp_path_factory.mktemp("real"), COMFYUI_DIR, COMFYUI_PYTHON) as server:
        yield server


def workflow_file(tmp_path: Path, name: str) -> Path:
    prompt = trace_prompt(name)
    prompt["1"]["inputs"]["color"] = int(time.time() * 1000) % 0xFFFFFF  # never cached
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(prompt))
    return path


def test_run_saves_the_png_comfyui_wrote(agent: AgentServer, tmp_path: Path) -> None:
    workflow = workflow_file(tmp_path, "success")
    result = run_client(agent.url, "run", str(workflow), "--set", "3.filename_prefix=real_cli",
                        cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = result.stdout.split()
    assert re.fullmatch(r"outputs/real_cli_\d{5}_\.png", path)
    assert (tmp_path / path).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_node_that_raises_exits_1_in_words(agent: AgentServer, tmp_path: Path) -> None:
    result = run_client(agent.url, "run", str(workflow_file(tmp_path, "runtime_error")),
                        cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "ExecutionError: node 2 (Canny): " in result.stderr


def test_a_validation_error_exits_2_naming_the_input(agent: AgentServer, tmp_path: Path) -> None:
    workflow = workflow_file(tmp_path, "success")
    result = run_client(agent.url, "run", str(workflow), "--set", "1.height=abc", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "node 1 (EmptyImage)" in result.stderr and "height" in result.stderr


def test_terminal_view(agent: AgentServer, tmp_path: Path) -> None:
    workflow = workflow_file(tmp_path, "success")
    child = spawn_in_terminal(agent.url, tmp_path, "run", str(workflow), timeout=300)
    child.expect(pexpect.EOF)
    child.close()
    screen = ANSI.sub("", child.before or "")
    assert child.exitstatus == 0, screen
    assert re.search(r"Overall +━+ 100%\s+3/3 nodes", screen), screen
    assert re.search(r"✓ succeeded in \d+\.\d s · 3/3 nodes", screen), screen
    assert re.search(r"saved outputs/cref_success_\d{5}_\.png", screen), screen
