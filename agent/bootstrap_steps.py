"""The bootstrap's steps as child processes: run one with its output logged and its last
lines kept for the error, and tell whether torch should be the CUDA or the CPU build."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

# The bootstrap's log: its steps' output lines are part of it.
_log = logging.getLogger("agent.bootstrap")

_TAIL_LINES = 20
_MAX_LINE_CHARS = 2000
_NVIDIA_SMI_TIMEOUT = 30.0


class BootstrapError(RuntimeError):
    """A bootstrap step failed; names the step, the command and its last output lines."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        command: Sequence[str] = (),
        returncode: int | None = None,
        output: Sequence[str] = (),
    ) -> None:
        self.step = step
        self.command = list(command)
        self.returncode = returncode
        self.output = list(output)
        text = f"ComfyUI bootstrap failed at step {step!r}: {message}"
        if self.command:
            text += f"\n  command: {shlex.join(self.command)}"
        if self.output:
            text += "\n  last output:\n" + "\n".join(f"    {line}" for line in self.output)
        super().__init__(text)


async def torch_flavor(torch: str, nvidia_smi: str) -> str:
    """Resolve `auto` to cuda (a working nvidia-smi) or cpu."""
    if torch != "auto":
        return torch
    flavor = "cuda" if await _has_nvidia_gpu(nvidia_smi) else "cpu"
    _log.info(
        "torch=auto: %s",
        "nvidia-smi works, using CUDA" if flavor == "cuda" else "no GPU found, using CPU",
    )
    return flavor


async def _has_nvidia_gpu(nvidia_smi: str) -> bool:
    """True when `nvidia_smi` is on PATH and exits 0 (a driver and a GPU are there)."""
    executable = shutil.which(nvidia_smi)
    if executable is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            executable,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        async with asyncio.timeout(_NVIDIA_SMI_TIMEOUT):
            return await proc.wait() == 0
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def run_step(
    step: str,
    command: Sequence[str],
    *,
    tag: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[str]:
    """Run one step, logging its output as "[tag] line"; return its last lines or raise."""
    prefix = f"[{tag}] "
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            # Own process group, so that cancelling also stops what pip/git spawned.
            start_new_session=True,
        )
    except OSError as exc:
        raise BootstrapError(
            f"cannot run {command[0]!r}: {exc}", step=step, command=command
        ) from exc
    assert proc.stdout is not None
    try:
        buffer = b""
        while chunk := await proc.stdout.read(65536):
            # Lines end at "\n" or "\r" (progress bars); bound the buffer whatever comes.
            lines = re.split(rb"\r\n|\r|\n", buffer + chunk)
            buffer = lines.pop()[: _MAX_LINE_CHARS * 4]
            for line in lines:
                _emit(prefix, line, tail)
        if buffer:
            _emit(prefix, buffer, tail)
        returncode = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    if returncode != 0:
        raise BootstrapError(
            f"exited with status {returncode}",
            step=step,
            command=command,
            returncode=returncode,
            output=list(tail),
        )
    return list(tail)


def _emit(prefix: str, raw: bytes, tail: collections.deque[str]) -> None:
    """Log one output line (skipping blank ones) and remember it for error messages."""
    line = raw.decode("utf-8", errors="replace").rstrip()
    if not line:
        return
    if len(line) > _MAX_LINE_CHARS:
        line = line[:_MAX_LINE_CHARS] + " ..."
    tail.append(line)
    _log.info("%s%s", prefix, line)
