"""Fetch a ComfyUI release and a venv for it, once, when nothing says where ComfyUI is.

Layout under the bootstrap directory (``~/.cache/comfyui-agent`` by default)::

    ComfyUI-<ref>/                        the checkout (main.py, requirements.txt, ...)
    ComfyUI-<ref>/.comfyui-agent-ready    JSON marker, written last: present = usable
    venv-<ref>/                           the venv ComfyUI runs in
    .ComfyUI-<ref>.lock                   flock'ed while bootstrapping (never deleted)
    .ComfyUI-<ref>.tmp-*                  a clone in progress (renamed when complete)

The checkout is cloned into a temporary directory and renamed into place only after its
venv is complete, so ``ComfyUI-<ref>`` never appears half-populated. The venv is built at
its final path instead: venvs are not relocatable (pip and other console scripts carry
their absolute path in the shebang). Leftovers of an interrupted bootstrap are removed by
the next one; only the marker makes an install count as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.bootstrap_steps import BootstrapError, run_step, torch_flavor

__all__ = [
    "CPU_TORCH_INDEX",
    "MARKER",
    "TORCH_CHOICES",
    "BootstrapError",
    "InstalledComfyUI",
    "ensure_comfyui",
    "validate_ref",
]

_log = logging.getLogger(__name__)

MARKER = ".comfyui-agent-ready"
TORCH_CHOICES = ("auto", "cpu", "cuda", "skip")
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
_TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")

# Tags and branches only: the ref ends up both on git's command line and in a directory
# name, so no leading "-" (option injection), no "..", nothing a shell or path would mangle.
_REF_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
# Output lines kept to explain a failed step, and how much of each line is logged.
_LOCK_POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class InstalledComfyUI:
    """A ready ComfyUI checkout and the interpreter of the venv made for it."""

    directory: Path
    python: str
    ref: str
    commit: str | None


def validate_ref(ref: str) -> str:
    """Return `ref` if it is a safe tag/branch name, else raise BootstrapError."""
    if not _REF_PATTERN.fullmatch(ref) or ".." in ref or ref.endswith(("/", ".lock")):
        raise BootstrapError(
            f"invalid ref {ref!r}: expected a tag or branch name like v0.3.64", step="validate"
        )
    return ref


def venv_python(venv: Path) -> Path:
    """The interpreter inside a venv directory."""
    return venv / "bin" / "python"


async def ensure_comfyui(
    bootstrap_dir: Path | str,
    *,
    repository: str,
    ref: str,
    torch: str = "auto",
    git: str = "git",
    pip: Sequence[str] | None = None,
    python: str = sys.executable,
    nvidia_smi: str = "nvidia-smi",
    cpu_torch_index: str = CPU_TORCH_INDEX,
) -> InstalledComfyUI:
    """Return the ComfyUI `ref` under `bootstrap_dir`, cloning and installing it first if needed.

    `git` and `pip` (a command prefix; default: the new venv's ``python -m pip``) replace the
    real tools in tests; `python` is the interpreter the venv is created from.
    """
    validate_ref(ref)
    if torch not in TORCH_CHOICES:
        raise BootstrapError(
            f"invalid torch choice {torch!r}: expected one of {', '.join(TORCH_CHOICES)}",
            step="validate",
        )
    if not repository or repository.startswith("-"):
        raise BootstrapError(f"invalid repository {repository!r}", step="validate")

    root = await asyncio.to_thread(_absolute, bootstrap_dir)
    # A branch like release/x must not become a nested directory.
    flat_ref = ref.replace("/", "_")
    name = f"ComfyUI-{flat_ref}"
    target, venv = root / name, root / f"venv-{flat_ref}"

    installed = await asyncio.to_thread(_read_marker, target, venv, ref, repository)
    if installed is not None:
        return installed

    try:
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise BootstrapError(f"cannot create {root}: {exc}", step="prepare") from exc
    async with _file_lock(root / f".{name}.lock"):
        # Another agent may have finished while this one waited for the lock.
        installed = await asyncio.to_thread(_read_marker, target, venv, ref, repository)
        if installed is not None:
            return installed
        return await _bootstrap(
            root,
            name,
            target,
            venv,
            repository=repository,
            ref=ref,
            torch=torch,
            git=git,
            pip=pip,
            python=python,
            nvidia_smi=nvidia_smi,
            cpu_torch_index=cpu_torch_index,
        )


async def _bootstrap(
    root: Path,
    name: str,
    target: Path,
    venv: Path,
    *,
    repository: str,
    ref: str,
    torch: str,
    git: str,
    pip: Sequence[str] | None,
    python: str,
    nvidia_smi: str,
    cpu_torch_index: str,
) -> InstalledComfyUI:
    """Clone, build the venv, install, rename into place, mark ready (lock held)."""
    # Under the lock, anything unmarked is debris of an interrupted bootstrap.
    await asyncio.to_thread(_remove_stale, root, name, target, venv)

    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f".{name}.tmp-", dir=root))
    try:
        _log.info("fetching ComfyUI %s from %s into %s", ref, repository, target)
        git_env = {
            # Never wait for credentials on a terminal: a wrong URL must fail, not hang.
            "GIT_TERMINAL_PROMPT": "0",
        }
        clone = [git, "-c", "advice.detachedHead=false", "clone", "--depth", "1"]
        clone += ["--branch", ref, "--", repository, str(tmp)]
        await run_step("git clone", clone, tag="git", env=git_env)
        rev_parse = [git, "-C", str(tmp), "rev-parse", "HEAD"]
        head = await run_step("git rev-parse", rev_parse, tag="git", env=git_env)
        commit = head[-1].strip() if head else None
        if not await asyncio.to_thread((tmp / "main.py").is_file):
            raise BootstrapError(f"{repository} at {ref} has no main.py", step="git clone")

        _log.info("creating the venv for ComfyUI in %s", venv)
        await run_step("venv", [python, "-m", "venv", str(venv)], tag="venv")
        new_python = str(venv_python(venv))
        pip_cmd = list(pip) if pip is not None else [new_python, "-m", "pip"]
        pip_env = {
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            # Line-by-line progress in the log instead of bursts at exit.
            "PYTHONUNBUFFERED": "1",
        }

        # Torch first, from the right index: requirements.txt lists a bare `torch`, which
        # would otherwise pull the multi-GB CUDA build from PyPI even on CPU-only machines.
        flavor = await torch_flavor(torch, nvidia_smi)
        if flavor != "skip":
            command = [*pip_cmd, "install", *_TORCH_PACKAGES]
            if flavor == "cpu":
                command += ["--index-url", cpu_torch_index]
            _log.info("installing torch (%s) into %s; this can take several minutes", flavor, venv)
            await run_step("pip install torch", command, tag="pip", env=pip_env)

        requirements = tmp / "requirements.txt"
        if await asyncio.to_thread(requirements.is_file):
            _log.info("installing requirements of ComfyUI %s into %s", ref, venv)
            command = [*pip_cmd, "install", "-r", str(requirements)]
            # cwd: relative paths in requirements.txt are meant relative to the checkout.
            await run_step("pip install requirements", command, tag="pip", env=pip_env, cwd=tmp)

        await asyncio.to_thread(os.rename, tmp, target)
        await asyncio.to_thread(
            _write_marker,
            target,
            {
                "ref": ref,
                "commit": commit,
                "repository": repository,
                "torch": flavor,
                "python": new_python,
                "time": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        )
    except BaseException:
        # Also on cancellation: leave nothing that a later start could mistake for done.
        await asyncio.to_thread(_remove, tmp, target, venv)
        raise
    _log.info("ComfyUI %s (commit %s) is ready in %s", ref, commit, target)
    return InstalledComfyUI(directory=target, python=new_python, ref=ref, commit=commit)


def _read_marker(target: Path, venv: Path, ref: str, repository: str) -> InstalledComfyUI | None:
    """The install recorded by the marker, or None if there is no usable one."""
    try:
        data = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    python = venv_python(venv)
    # exists() follows the venv's symlink: a removed or upgraded base Python means rebuild.
    if not isinstance(data, dict) or data.get("ref") != ref or not python.exists():
        return None
    if data.get("repository") not in (None, repository):
        _log.warning(
            "ComfyUI %s in %s was fetched from %s, not %s; delete it to fetch again",
            ref,
            target,
            data.get("repository"),
            repository,
        )
    commit = data.get("commit")
    _log.info("using ComfyUI %s (commit %s) in %s", ref, commit, target)
    return InstalledComfyUI(
        directory=target,
        python=str(python),
        ref=ref,
        commit=commit if isinstance(commit, str) else None,
    )


def _write_marker(target: Path, data: Mapping[str, object]) -> None:
    """Write the marker atomically, so a crash mid-write never leaves a bogus one."""
    partial = target / (MARKER + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, target / MARKER)


def _absolute(bootstrap_dir: Path | str) -> Path:
    """The bootstrap directory as an absolute path."""
    # ComfyUI is started with its checkout as cwd, so relative paths would break.
    return Path(bootstrap_dir).expanduser().absolute()


def _remove_stale(root: Path, name: str, *paths: Path) -> None:
    """Delete temp dirs of interrupted bootstraps of `name`, and `paths`."""
    _remove(*root.glob(f".{name}.tmp-*"), *paths)


def _remove(*paths: Path) -> None:
    """Delete files or directory trees if present (blocking: call in a thread)."""
    for path in paths:
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive flock on `path` for the block, waiting without blocking the loop."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waiting = False
        # Poll with LOCK_NB rather than block in a thread: a thread stuck in flock() cannot
        # be cancelled and would take the lock after its caller is gone.
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not waiting:
                _log.info("waiting for another agent bootstrapping ComfyUI (lock %s)", path)
                waiting = True
            await asyncio.sleep(_LOCK_POLL_INTERVAL)
        yield
    finally:
        # Closing releases the lock. The file stays: unlinking it would let a waiter lock
        # the old inode while a newcomer locks a new file, both "holding" the lock.
        os.close(fd)
