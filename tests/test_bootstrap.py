"""Bootstrap of a ComfyUI checkout and venv, against a local git repository (no network).

The repository is built at test time: a stand-in ComfyUI whose main.py is a tiny standard
library HTTP server, tagged v0.3.64, plus a `broken-reqs` tag whose requirements.txt
cannot be installed. torch is always "skip" or goes to a recording fake pip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.bootstrap import (
    CPU_TORCH_INDEX,
    MARKER,
    BootstrapError,
    InstalledComfyUI,
    ensure_comfyui,
)
from agent.cli import make_backend
from agent.settings import parse_settings

REF = "v0.3.64"

FAKE_MAIN = r"""
import argparse, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--listen", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8188)
args, _unknown = parser.parse_known_args()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/system_stats":
            self.send_error(404)
            return
        body = json.dumps({"prefix": sys.prefix, "cwd": os.getcwd()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


HTTPServer((args.listen, args.port), Handler).serve_forever()
"""

# Records its arguments (one JSON list per line) instead of installing anything.
FAKE_PIP = """
import json, os, sys
with open(os.environ["FAKE_PIP_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@dataclass(frozen=True)
class Repo:
    path: Path
    tag_commit: str

    @property
    def url(self) -> str:
        # file:// so that --depth is honoured, as with the real remote.
        return self.path.as_uri()


def _git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    command += ["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args]
    done = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    path = tmp_path_factory.mktemp("repo") / "ComfyUI"
    path.mkdir()
    _git(path, "init", "-q")
    (path / "main.py").write_text(FAKE_MAIN)
    (path / "requirements.txt").write_text("# nothing to install\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "release")
    _git(path, "tag", REF)
    tag_commit = _git(path, "rev-parse", f"{REF}^{{commit}}")
    (path / "requirements.txt").write_text("./does-not-exist.whl\n")
    _git(path, "commit", "-q", "-am", "broken requirements")
    _git(path, "tag", "broken-reqs")
    return Repo(path, tag_commit)


@pytest.fixture(scope="module")
def first(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> InstalledComfyUI:
    """One real bootstrap shared by the tests that only inspect its result."""
    root = tmp_path_factory.mktemp("boot")
    return asyncio.run(ensure_comfyui(root, repository=repo.url, ref=REF, torch="skip"))


@pytest.fixture
def fast_python(tmp_path: Path) -> str:
    """A `python` for the venv step that skips ensurepip (seconds) when pip is faked."""
    script = tmp_path / "fast-python"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m venv --without-pip "$3"\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected subprocess {args}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse)
    yield


def _contents(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_first_call_clones_the_tag_into_a_working_venv(first: InstalledComfyUI, repo: Repo) -> None:
    root = first.directory.parent
    assert first.directory == root / f"ComfyUI-{REF}"
    assert first.ref == REF
    assert first.commit == repo.tag_commit
    assert _git(first.directory, "rev-parse", "HEAD") == repo.tag_commit
    assert (first.directory / "main.py").read_text() == FAKE_MAIN

    code = "import sys; print(sys.prefix)"
    out = subprocess.run([first.python, "-c", code], check=True, capture_output=True, text=True)
    assert Path(out.stdout.strip()) == root / f"venv-{REF}"
    assert Path(first.python).is_absolute()

    marker = json.loads((first.directory / MARKER).read_text())
    assert marker["ref"] == REF
    assert marker["commit"] == repo.tag_commit
    assert marker["time"]
    # No temp dir left behind: just the checkout, its venv and the lock file.
    assert _contents(root) == {f"ComfyUI-{REF}", f"venv-{REF}", f".ComfyUI-{REF}.lock"}


async def test_second_call_returns_at_once_without_git_or_pip(
    first: InstalledComfyUI, repo: Repo, no_subprocess: None
) -> None:
    again = await ensure_comfyui(
        first.directory.parent,
        repository=repo.url,
        ref=REF,
        torch="skip",
        git="/nonexistent/git",
        pip=["/nonexistent/pip"],
        python="/nonexistent/python",
    )
    assert again == first


async def test_unknown_ref_fails_at_git_and_leaves_nothing(
    tmp_path: Path, repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.bootstrap")
    with pytest.raises(BootstrapError) as info:
        await ensure_comfyui(tmp_path, repository=repo.url, ref="v9.9.9", torch="skip")
    assert info.value.step == "git clone"
    assert info.value.command[0] == "git"
    assert info.value.returncode not in (None, 0)
    assert "v9.9.9" in str(info.value)
    assert info.value.output  # git's complaint, for the error message
    assert _contents(tmp_path) == {".ComfyUI-v9.9.9.lock"}
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("fetching ComfyUI v9.9.9") for m in messages)
    assert any(m.startswith("[git] ") for m in messages)


@pytest.mark.parametrize(
    "ref", ["--upload-pack=x", "-b", "a..b", "", "v1 2", "/etc", "x;id", "v1/", "x.lock"]
)
async def test_unsafe_ref_is_refused_before_any_subprocess(
    tmp_path: Path, repo: Repo, ref: str, no_subprocess: None
) -> None:
    root = tmp_path / "boot"
    with pytest.raises(BootstrapError) as info:
        await ensure_comfyui(root, repository=repo.url, ref=ref, torch="skip")
    assert info.value.step == "validate"
    assert not root.exists()


async def test_unknown_torch_choice_is_refused(
    tmp_path: Path, repo: Repo, no_subprocess: None
) -> None:
    with pytest.raises(BootstrapError, match="rocm"):
        await ensure_comfyui(tmp_path / "boot", repository=repo.url, ref=REF, torch="rocm")


async def test_failing_requirements_name_pip_and_nothing_is_marked_ready(
    tmp_path: Path, repo: Repo
) -> None:
    with pytest.raises(BootstrapError) as info:
        await ensure_comfyui(tmp_path, repository=repo.url, ref="broken-reqs", torch="skip")
    assert info.value.step == "pip install requirements"
    assert "pip" in info.value.command
    assert "does-not-exist" in str(info.value)
    # Nothing marked ready, nor anything else: temp clone and venv are gone.
    assert _contents(tmp_path) == {".ComfyUI-broken-reqs.lock"}


async def test_concurrent_calls_clone_once_and_clean_stale_leftovers(
    tmp_path: Path, repo: Repo
) -> None:
    root = tmp_path / "boot"
    # Debris of a bootstrap killed mid-way: a temp clone and a half-built venv.
    (root / f".ComfyUI-{REF}.tmp-killed").mkdir(parents=True)
    (root / f"venv-{REF}").mkdir()
    (root / f"venv-{REF}" / "junk").write_text("x")

    log = tmp_path / "git.log"
    git = tmp_path / "counting-git"
    git.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("git")} "$@"\n')
    git.chmod(0o755)

    a, b = await asyncio.gather(
        *(
            ensure_comfyui(root, repository=repo.url, ref=REF, torch="skip", git=str(git))
            for _ in range(2)
        )
    )
    assert a == b
    assert a.commit == repo.tag_commit
    clones = [line for line in log.read_text().splitlines() if " clone " in line]
    assert len(clones) == 1
    assert _contents(root) == {f"ComfyUI-{REF}", f"venv-{REF}", f".ComfyUI-{REF}.lock"}
    assert not (root / f"venv-{REF}" / "junk").exists()


TORCH = ["install", "torch", "torchvision", "torchaudio"]


@pytest.mark.parametrize(
    ("torch", "nvidia_smi", "flavor"),
    [
        ("cpu", "true", "cpu"),
        ("cuda", "false", "cuda"),
        ("auto", "true", "cuda"),  # nvidia-smi on PATH and exits 0
        ("auto", "false", "cpu"),  # present but failing: no usable GPU
        ("auto", "/nonexistent/nvidia-smi", "cpu"),
        ("skip", "true", "skip"),
    ],
)
async def test_torch_is_installed_first_from_the_chosen_index(
    tmp_path: Path,
    repo: Repo,
    fast_python: str,
    monkeypatch: pytest.MonkeyPatch,
    torch: str,
    nvidia_smi: str,
    flavor: str,
) -> None:
    pip_log = tmp_path / "pip.log"
    monkeypatch.setenv("FAKE_PIP_LOG", str(pip_log))
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(FAKE_PIP)

    installed = await ensure_comfyui(
        tmp_path / "boot",
        repository=repo.url,
        ref=REF,
        torch=torch,
        pip=[sys.executable, str(fake_pip)],
        python=fast_python,
        nvidia_smi=nvidia_smi,
    )
    calls = [json.loads(line) for line in pip_log.read_text().splitlines()]
    expected = {
        "cpu": [[*TORCH, "--index-url", CPU_TORCH_INDEX]],
        "cuda": [TORCH],
        "skip": [],
    }[flavor]
    assert calls[:-1] == expected
    # Requirements last, from the temp clone that is renamed afterwards.
    assert calls[-1][:2] == ["install", "-r"]
    assert calls[-1][2].endswith("/requirements.txt")
    assert json.loads((installed.directory / MARKER).read_text())["torch"] == flavor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_make_backend_bootstraps_and_starts_comfyui(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in list(os.environ):
        if name.startswith("AGENT_") or name.startswith("COMFYUI_"):
            monkeypatch.delenv(name)
    caplog.set_level(logging.INFO, logger="agent.bootstrap")
    root = tmp_path / "boot"
    port = _free_port()
    settings = parse_settings(
        [
            "--bootstrap-dir",
            str(root),
            "--bootstrap-repository",
            str(repo.path),  # a plain path works too
            "--bootstrap-torch",
            "skip",
            "--comfyui-port",
            str(port),
        ]
    )
    backend = await make_backend(settings)
    try:
        await backend.start()
        assert await backend.wait_ready(30)
        url = f"http://127.0.0.1:{port}/system_stats"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            stats = await resp.json()
    finally:
        await backend.stop()
    # ComfyUI ran in the bootstrapped venv, from its checkout.
    assert Path(stats["prefix"]) == root / f"venv-{REF}"
    assert Path(stats["cwd"]) == root / f"ComfyUI-{REF}"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"fetching ComfyUI {REF}") for m in messages)
    assert any(m.startswith("installing requirements") for m in messages)


async def test_missing_git_is_a_clear_error(tmp_path: Path, repo: Repo) -> None:
    with pytest.raises(BootstrapError, match="cannot run '/nonexistent/git'") as info:
        await ensure_comfyui(
            tmp_path, repository=repo.url, ref=REF, torch="skip", git="/nonexistent/git"
        )
    assert info.value.step == "git clone"
    assert _contents(tmp_path) == {f".ComfyUI-{REF}.lock"}


async def test_cancelling_kills_the_step_and_leaves_nothing(tmp_path: Path, repo: Repo) -> None:
    pid_file = tmp_path / "git.pid"
    git = tmp_path / "slow-git"
    git.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    git.chmod(0o755)
    root = tmp_path / "boot"
    task = asyncio.create_task(
        ensure_comfyui(root, repository=repo.url, ref=REF, torch="skip", git=str(git))
    )
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.025)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    assert _contents(root) == {f".ComfyUI-{REF}.lock"}


async def test_a_marker_without_its_venv_is_rebuilt(
    tmp_path: Path, repo: Repo, fast_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PIP_LOG", str(tmp_path / "pip.log"))
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(FAKE_PIP)
    root = tmp_path / "boot"

    async def bootstrap() -> InstalledComfyUI:
        return await ensure_comfyui(
            root,
            repository=repo.url,
            ref=REF,
            torch="skip",
            pip=[sys.executable, str(fake_pip)],
            python=fast_python,
        )

    first = await bootstrap()
    shutil.rmtree(root / f"venv-{REF}")  # e.g. someone cleaned up, or Python was upgraded
    again = await bootstrap()
    assert again == first
    assert os.access(again.python, os.X_OK)
