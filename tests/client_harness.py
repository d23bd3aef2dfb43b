"""A `comfyui-agent` server process (fake ComfyUI child) for the client tests, and the
client run as the console script, as a person or a script would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from tests.agent_harness import agent_argv
from tests.fake_comfyui.fixtures import free_port

AGENT_SCRIPT = Path(sys.executable).with_name("comfyui-agent")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves, to read a screen


@dataclass
class AgentServer:
    """A running agent process: its URL, its fake ComfyUI's folders and its log."""

    url: str
    process: subprocess.Popen[bytes]
    fake_dir: Path
    log_path: Path

    def get(self, path: str, token: str = "") -> tuple[int, Any]:
        """GET a JSON answer from the agent."""
        request = urllib.request.Request(self.url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the agent's log, for assertion messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def agent_server(
    tmp_path: Path,
    flags: Sequence[str] = (),
    fake_args: Sequence[str] = ("--slow-delay", "0.02"),
    wait_for: str = "/readyz",
) -> Iterator[AgentServer]:
    """Start the console script as a server with the fake ComfyUI as its child."""
    port = free_port()
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    argv = agent_argv(tmp_path, free_port(), flags=[*listen, *flags], fake_args=fake_args)
    with spawned_server(tmp_path, port, argv, wait_for=wait_for) as server:
        yield server


@contextmanager
def real_agent_server(tmp_path: Path, comfyui_dir: str, python: str) -> Iterator[AgentServer]:
    """Start the console script as a server with a real ComfyUI checkout as its child
    (CPU, its own folders under tmp_path)."""
    port = free_port()
    folders = []
    for flag in ("output", "input", "temp", "user"):
        (tmp_path / "comfyui" / flag).mkdir(parents=True)
        folders += [f"--{flag}-directory", str(tmp_path / "comfyui" / flag)]
    args = ["--cpu", "--disable-api-nodes", "--disable-auto-launch", *folders]
    argv = [
        "--host", "127.0.0.1",
        "--port", str(port),
        "--comfyui-port", str(free_port()),
        "--comfyui-dir", comfyui_dir,
        "--comfyui-python", python,
        "--store", f"file://{tmp_path / 'tasks'}",
    ]  # fmt: skip
    env = {**os.environ, "COMFYUI_ARGS": shlex.join(args)}
    with spawned_server(tmp_path, port, argv, env=env, ready_timeout=180) as server:
        yield server


@contextmanager
def spawned_server(
    tmp_path: Path,
    port: int,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    wait_for: str = "/readyz",
    ready_timeout: float = 60,
) -> Iterator[AgentServer]:
    """Run `comfyui-agent ARGV` in its own session; wait until `wait_for` answers 200;
    stop it with SIGTERM (SIGKILL if it lingers) at the end."""
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(AGENT_SCRIPT), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    server = AgentServer(f"http://127.0.0.1:{port}", process, tmp_path / "fake", log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            assert process.poll() is None, server.log_tail()
            with contextlib.suppress(OSError):
                urllib.request.urlopen(server.url + wait_for, timeout=2).close()
                break
            assert time.monotonic() < deadline, f"agent not ready:\n{server.log_tail()}"
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def client_env(url: str, **extra: str) -> dict[str, str]:
    """The client's environment: the agent's URL, no token unless given, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYUI_AGENT_")}
    return {**env, "COMFYUI_AGENT_URL": url, **extra}


def run_client(
    url: str, *args: str, cwd: Path, timeout: float = 90, **env: str
) -> subprocess.CompletedProcess[str]:
    """`comfyui-agent ARGS` to its end, stdout not a terminal; output captured."""
    return subprocess.run(
        [str(AGENT_SCRIPT), *args],
        cwd=cwd,
        env=client_env(url, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_in_terminal(url: str, cwd: Path, *args: str, timeout: float = 60) -> pexpect.spawn:
    """`comfyui-agent ARGS` in a pseudo-terminal (110 columns), as a person runs it."""
    return pexpect.spawn(
        str(AGENT_SCRIPT),
        list(args),
        cwd=str(cwd),
        env={**client_env(url), "TERM": "xterm-256color"},
        dimensions=(40, 110),
        encoding="utf-8",
        timeout=timeout,
    )
