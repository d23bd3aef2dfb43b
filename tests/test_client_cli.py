"""`comfyui-agent run | watch` against a real agent process with the fake ComfyUI:
outputs saved, --set applied, --detach + watch, --json lines, --results none, every exit
code, Ctrl-C, and the terminal view in a pseudo-terminal."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.agent_harness import trace_prompt
from tests.client_harness import (
    AGENT_SCRIPT,
    ANSI,
    AgentServer,
    agent_server,
    client_env,
    run_client,
    spawn_in_terminal,
)
from tests.fake_comfyui.fixtures import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACES = Path(__file__).resolve().parents[2] / "shared" / "comfyui-traces"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("agent")) as server:
        yield server


def slow_workflow(tmp_path: Path, steps: int = 4, title: str | None = None) -> Path:
    """EmptyImage -> SlowCounter(steps x 0.02 s) -> SaveImage, never cached, in a file."""
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    prompt["9"]["inputs"]["filename_prefix"] = f"cli_{uuid.uuid4().hex[:8]}"
    if title:
        prompt["2"]["_meta"] = {"title": title}
    path = tmp_path / f"w_{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(prompt))
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- success: outputs, --set, --json, --results none ------------------------------------


def test_run_saves_outputs_with_set_applied(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path)
    result = run_client(
        agent.url,
        "run",
        str(workflow),
        "--set",
        "2.steps=6",
        "--set",
        "9.filename_prefix=set_by_cli",
        "--task-id",
        "cli-set",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    saved = [tmp_path / line for line in lines(result.stdout)]
    assert len(saved) == 1
    assert saved[0].parent == tmp_path / "outputs"
    assert re.fullmatch(r"set_by_cli_\d{5}_\.png", saved[0].name)
    assert saved[0].read_bytes().startswith(PNG_MAGIC)
    # The agent ran the changed workflow: 6 steps, as --set said.
    status, record = agent.get("/api/tasks/cli-set")
    assert status == 200 and record["status"] == "succeeded"
    assert record["progress"]["2"]["max"] == 6
    assert "task cli-set" in result.stderr and "succeeded in" in result.stderr
    assert "SlowCounter #2" in result.stderr  # plain progress lines, on stderr


def test_outputs_are_never_overwritten(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path)
    first = run_client(agent.url, "run", str(workflow), "--task-id", "cli-twice", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Watching the finished task saves the same ComfyUI file again: it gets a suffix.
    again = run_client(agent.url, "watch", "cli-twice", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    (one,), (two,) = lines(first.stdout), lines(again.stdout)
    assert Path(two).name == Path(one).stem + "-1.png"
    assert (tmp_path / one).read_bytes() == (tmp_path / two).read_bytes()


def test_out_folder_and_results_none(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path)
    out = tmp_path / "deep" / "folder"
    result = run_client(agent.url, "run", str(workflow), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (path,) = lines(result.stdout)
    assert Path(path).parent == out and Path(path).is_file()
    listed = run_client(agent.url, "run", str(workflow), "--results", "none", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (reference,) = lines(listed.stdout)
    assert re.fullmatch(r"cli_\w+_\d{5}_\.png \[output\]", reference)
    assert not (tmp_path / "outputs").exists()


def test_an_output_the_agent_cannot_deliver_exits_3(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path)
    listed = run_client(
        agent.url, "run", str(workflow), "--results", "none", "--task-id", "cli-gone", cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    name = lines(listed.stdout)[0].split(" [")[0]
    (agent.fake_dir / "output" / name).unlink()  # ComfyUI's file is gone
    # The watch answer cannot inline it; the client then asks /view, which has nothing.
    result = run_client(agent.url, "watch", "cli-gone", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert f"{name} [output]: not saved: {name}: /view answered 404" in result.stderr
    assert result.stdout == f"{name} [output]\n"


def test_image_input_from_a_file_and_stdin_workflow(agent: AgentServer, tmp_path: Path) -> None:
    workflow = trace_prompt("load_image")
    workflow["2"]["inputs"]["filename_prefix"] = "cli_loaded"
    del workflow["3"]  # the PreviewImage: one output is enough here
    picture = tmp_path / "cat.png"
    picture.write_bytes((TRACES / "load_image.upload.png").read_bytes())
    result = subprocess.run(
        [str(AGENT_SCRIPT), "run", "-", "--set", f"1.image=@{picture}"],
        input=json.dumps(workflow),
        cwd=tmp_path,
        env=client_env(agent.url),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (path,) = lines(result.stdout)
    assert Path(path).name.startswith("cli_loaded_")
    # A file that is not an image, for an image input: the agent's 422, naming the input.
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture, only words. " * 20 + "\n")
    wrong = tmp_path / "load.json"
    wrong.write_text(json.dumps(workflow))
    refused = run_client(
        agent.url, "run", str(wrong), "--set", f"1.image=@{text_file}", cwd=tmp_path
    )
    assert refused.returncode == 2, refused.stderr
    assert "InputError: node 1 (LoadImage) input 'image'" in refused.stderr


def test_json_lines(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path, steps=5, title="Counting")
    result = run_client(
        agent.url, "run", str(workflow), "--json", "--task-id", "cli-json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in lines(result.stdout)]
    assert all(event["task_id"] == "cli-json" for event in events)
    assert events[0]["event"] == "started"
    progress = [event for event in events if event["event"] == "progress"]
    assert progress and all(0 <= event["percent"] <= 100 for event in progress)
    percents = [event["percent"] for event in progress]
    assert percents == sorted(percents)
    steps = [event["node"] for event in progress if event["node"] and event["node"]["id"] == "2"]
    assert steps and steps[-1]["title"] == "Counting" and steps[-1]["max"] == 5
    final = events[-1]
    assert final["event"] == "succeeded" and final["exit_code"] == 0 and final["error"] is None
    (file,) = final["files"]
    assert file["node"] == "9" and file["file"].endswith(".png [output]")
    assert (tmp_path / file["path"]).read_bytes().startswith(PNG_MAGIC)


# -- exit codes ------------------------------------------------------------------------


def test_failed_run_exits_1_with_the_error_in_words(agent: AgentServer, tmp_path: Path) -> None:
    workflow = tmp_path / "fail.json"
    workflow.write_text(json.dumps(trace_prompt("runtime_error")))
    result = run_client(agent.url, "run", str(workflow), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    # The trace's Canny raises (thresholds the wrong way round), as in real ComfyUI.
    assert "failed after" in result.stderr
    assert "ExecutionError: node 2 (Canny): " in result.stderr
    assert result.stdout == ""
    as_json = run_client(agent.url, "run", str(workflow), "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    final = json.loads(lines(as_json.stdout)[-1])
    assert final["event"] == "failed" and final["exit_code"] == 1
    assert final["error"].startswith("ExecutionError: node 2 (Canny): ")


def test_validation_error_exits_2_naming_the_input(agent: AgentServer, tmp_path: Path) -> None:
    workflow = tmp_path / "bad.json"
    workflow.write_text((TRACES / "validation_bad_value.prompt.json").read_text())
    result = run_client(agent.url, "run", str(workflow), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "CallComfyUIPromptError" in result.stderr
    assert "node 1 (EmptyImage)" in result.stderr and "height" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "{w}", "--ur", "http://x"], "unrecognized arguments: --ur"),
        (["run", "{w}", "--set", "2.steps"], "expected NODE.INPUT=VALUE"),
        (["run", "{w}", "--set", "5.steps=1"], "no node '5' (nodes: 1, 2, 9)"),
        (["run", "{w}", "--set", "2.stepz=1"], "node 2 (SlowCounter) has no input 'stepz'"),
        (["run", "{w}", "--set", "2.steps=@missing.txt"], "cannot read missing.txt"),
        (["run", "missing.json"], "cannot read missing.json"),
        (["run", "{ui}"], "UI format"),
        (["run", "{w}", "--task-id", "../etc"], "InvalidTaskId"),
        (["run", "no-such-app"], "neither a workflow file nor an app"),
        (["watch", "no-such-task"], "TaskNotFound"),
        (["frobnicate"], "unrecognized arguments: frobnicate"),
    ],
)
def test_bad_usage_and_input_exit_2(
    agent: AgentServer, tmp_path: Path, args: list[str], said: str
) -> None:
    workflow = slow_workflow(tmp_path)
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    argv = [arg.format(w=workflow, ui=ui) for arg in args]
    result = run_client(agent.url, *argv, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert said in result.stderr


def test_unreachable_agent_exits_3(tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["run", str(workflow)], ["run", str(workflow), "--detach"], ["watch", "x"]):
        result = run_client(url, *args, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert f"cannot reach the agent at {url}" in result.stderr


def test_unavailable_comfyui_exits_3_and_the_token_is_sent(tmp_path: Path) -> None:
    """An agent whose ComfyUI never gets ready answers 503 (exit 3); a missing token is
    a 401 (exit 2). The token comes from --token or $COMFYUI_AGENT_TOKEN."""
    flags = ["--token", "s3cret", "--ready-timeout", "0.3"]
    fake = ["--startup-delay", "600"]
    with agent_server(tmp_path, flags, fake, wait_for="/healthz") as server:
        workflow = slow_workflow(tmp_path)
        no_token = run_client(server.url, "run", str(workflow), cwd=tmp_path)
        assert no_token.returncode == 2, no_token.stderr
        assert "401" in no_token.stderr
        for args, env in (
            (["--token", "s3cret"], {}),
            ([], {"COMFYUI_AGENT_TOKEN": "s3cret"}),
        ):
            result = run_client(server.url, "run", str(workflow), *args, cwd=tmp_path, **env)
            assert result.returncode == 3, result.stderr
            assert "ComfyUIUnavailable" in result.stderr


# -- detach, watch, Ctrl-C ------------------------------------------------------------


def test_detach_then_watch(agent: AgentServer, tmp_path: Path) -> None:
    workflow = slow_workflow(tmp_path, steps=400)  # 8 s: still running when watched
    started = run_client(
        agent.url, "run", str(workflow), "--detach", "--task-id", "cli-bg", cwd=tmp_path
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout == "cli-bg\n"
    assert "watch it: comfyui-agent watch cli-bg\n" in started.stderr  # $COMFYUI_AGENT_URL
    watched = run_client(agent.url, "watch", "cli-bg", "--json", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in lines(watched.stdout)]
    titles = {e["node"]["title"] for e in events if e["event"] == "progress" and e["node"]}
    assert "SlowCounter" in titles  # titles found for a task this client did not start
    (file,) = events[-1]["files"]
    assert (tmp_path / file["path"]).read_bytes().startswith(PNG_MAGIC)
    quick = slow_workflow(tmp_path, steps=1)
    other = run_client(
        agent.url,
        "run",
        str(quick),
        "--detach",
        "--url",
        agent.url + "/",
        "--task-id",
        "cli-bg3",
        cwd=tmp_path,
        COMFYUI_AGENT_URL="http://x",
    )
    assert f"watch it: comfyui-agent watch cli-bg3 --url {agent.url}/\n" in other.stderr
    as_json = run_client(
        agent.url, "run", str(quick), "--detach", "--json", "--task-id", "cli-bg2", cwd=tmp_path
    )
    assert json.loads(as_json.stdout) == {
        "event": "submitted",
        "task_id": "cli-bg2",
        "status": "queued",
    }


def test_ctrl_c_without_a_terminal_leaves_the_task_running(
    agent: AgentServer, tmp_path: Path
) -> None:
    workflow = slow_workflow(tmp_path, steps=400)  # 8 s: still running after the Ctrl-C
    process = subprocess.Popen(
        [str(AGENT_SCRIPT), "run", str(workflow), "--task-id", "cli-left"],
        cwd=tmp_path,
        env=client_env(agent.url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "SlowCounter #2 " in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Left running. Watch it again: comfyui-agent watch cli-left" in err
    _, record = agent.get("/api/tasks/cli-left")
    assert record["status"] in ("queued", "running")
    watched = run_client(agent.url, "watch", "cli-left", cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr


# -- the terminal view ----------------------------------------------------------------


def test_terminal_view_shows_bars_cached_nodes_and_a_summary(
    agent: AgentServer, tmp_path: Path
) -> None:
    workflow = slow_workflow(tmp_path, steps=30, title="Counter")
    assert run_client(agent.url, "run", str(workflow), cwd=tmp_path).returncode == 0
    # Again: ComfyUI reuses the first node (cached); the rest reruns.
    prompt = json.loads(workflow.read_text())
    prompt["2"]["inputs"]["steps"] = 31
    workflow.write_text(json.dumps(prompt))
    child = spawn_in_terminal(agent.url, tmp_path, "run", str(workflow))
    child.expect(pexpect.EOF)
    child.close()
    screen = ANSI.sub("", child.before or "")
    assert child.exitstatus == 0, screen
    # Drawn while it ran: the overall bar and the node's bar with its title and steps.
    assert re.search(r"Overall +━+.* \d+%\s+1/3 nodes, 1 cached", screen), screen
    assert re.search(r"Counter #2 +━+.* \d+/31 steps", screen), screen
    assert re.search(r"Overall .*100%\s+3/3 nodes, 1 cached\s+\d:\d\d:\d\d", screen), screen
    assert "cached: EmptyImage #1" in screen
    assert re.search(r"✓ succeeded in \d+\.\d s · 3/3 nodes, 1 cached", screen), screen
    assert re.search(r"saved outputs/cli_\w+_\d{5}_\.png", screen), screen


def ctrl_c_in_terminal(agent: AgentServer, tmp_path: Path, task_id: str, answer: str) -> Any:
    """Start a long run in a terminal, press Ctrl-C once it shows steps, answer the question."""
    workflow = slow_workflow(tmp_path, steps=500)  # 10 s: time to ask and answer
    child = spawn_in_terminal(agent.url, tmp_path, "run", str(workflow), "--task-id", task_id)
    child.expect(r"\d+/500 steps")
    child.sendintr()
    child.expect(rf"Interrupt task {task_id} on the agent\? \[y/N\]")
    child.sendline(answer)
    return child


def test_terminal_ctrl_c_asks_then_interrupts(agent: AgentServer, tmp_path: Path) -> None:
    child = ctrl_c_in_terminal(agent, tmp_path, "cli-stop", "y")
    child.expect(pexpect.EOF)
    child.close()
    screen = ANSI.sub("", child.before or "")
    assert child.exitstatus == 1, screen
    assert "✗ interrupted" in screen
    assert "ExecutionInterrupted: node 2 (SlowCounter)" in screen
    _, record = agent.get("/api/tasks/cli-stop")
    assert record["status"] == "interrupted"


def test_terminal_ctrl_c_can_leave_the_task_running(agent: AgentServer, tmp_path: Path) -> None:
    child = ctrl_c_in_terminal(agent, tmp_path, "cli-keep", "")
    child.expect("Left running. Watch it again: comfyui-agent watch cli-keep")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    # It did go on, and watching it again in a terminal shows it to its end.
    again = spawn_in_terminal(agent.url, tmp_path, "watch", "cli-keep")
    again.expect("✓ succeeded")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 0


def test_the_client_does_not_load_the_server() -> None:
    code = (
        "import sys, agent.cli, agent.client.command, agent.client.live_view;"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"agent.server", "agent.app", "agent.settings", "pydantic", "redis", "store", "comfyui"}
    assert heavy.isdisjoint(loaded)
    assert "aiohttp.web" not in loaded


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["serve", "--help"], 0, "--comfyui-port"),
        (["--help"], 0, "comfyui-agent run|watch|apps --help"),
        (["--url", "http://x"], 2, "unrecognized arguments: --url"),
        (["serve", "--url-fetch", "x"], 2, "unrecognized arguments: --url-fetch"),
        (["run", "--help"], 0, "--set NODE.INPUT=VALUE"),
        (["watch", "--help"], 0, "TASK_ID"),
        (["apps", "--help"], 0, "--json"),
    ],
)
def test_server_and_client_command_lines(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    result = run_client("http://127.0.0.1:9", *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert said in result.stdout + result.stderr
