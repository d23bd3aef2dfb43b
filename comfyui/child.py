"""One ComfyUI child process: spawning it in its own session, its output, its end.

The child runs in its own session (hence its own process group) so that signals reach
everything ComfyUI spawns, and so that a Ctrl-C/SIGTERM aimed at the agent's group does not
hit ComfyUI behind the agent's back: the agent decides when ComfyUI stops. What to do when
a child ends (restart, back-off, readiness) is the supervisor's business, not this module's.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Literal

from .output_lines import LineSplitter

# The supervisor's logger: a child's life is told in one place of the log.
_log = logging.getLogger("comfyui.supervisor")

OUTPUT_PREFIX = "[comfyui] "
# How many output lines are kept to explain a crash, and how much of each.
TAIL_LINES = 20
TAIL_LINE_CHARS = 1000
# After the child died, how long its pipes may stay open (an escaped grandchild holding
# them) before they are closed anyway; bounds how late exit listeners can fire.
DRAIN_TIMEOUT = 0.5
# prctl option: signal sent to this process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

# Why a child ended: it died by itself, was killed as hung, or was ended on request.
ExitReason = Literal["crash", "hang", "restart", "stop"]


class ChildProcess(asyncio.SubprocessProtocol):
    """One spawned ComfyUI process: its output, its exit, its pipes.

    A protocol instead of `create_subprocess_exec`'s StreamReaders on purpose: with those,
    `Process.wait()` only returns once *all pipes* are closed (CPython <= 3.11), so a
    surviving grandchild holding stdout would hide the child's death. `process_exited()`
    fires as soon as the child is reaped, and data is consumed as it arrives, so the child
    never blocks on a full pipe and no reader line limit applies.
    """

    def __init__(self, logger: logging.Logger, max_line_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self._logger = logger
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.spawned_monotonic = time.monotonic()
        self.spawned_at = time.time()
        self.reason: ExitReason = "crash"
        self._splitters = {
            1: LineSplitter(self._on_line, max_line_bytes),
            2: LineSplitter(self._on_line, max_line_bytes),
        }

    @property
    def pid(self) -> int:
        """PID of the child (also its process-group id: it leads its own session)."""
        assert self.transport is not None
        return self.transport.get_pid()

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped (negative = signal number), else None."""
        assert self.transport is not None
        return self.transport.get_returncode()

    @property
    def uptime(self) -> float:
        """Seconds since the child was spawned."""
        return time.monotonic() - self.spawned_monotonic

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio callback)."""
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Split output into lines and log them (asyncio callback)."""
        splitter = self._splitters.get(fd)
        if splitter is not None:
            splitter.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """Log a last unterminated line at end of stream (asyncio callback)."""
        splitter = self._splitters.get(fd)
        if splitter is not None:
            splitter.flush()

    def process_exited(self) -> None:
        """The child was reaped (asyncio callback)."""
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        """Child exited and all its pipes are closed (asyncio callback)."""
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_line(self, text: str) -> None:
        self._logger.info("%s%s", OUTPUT_PREFIX, text)
        self.tail.append(text[:TAIL_LINE_CHARS])

    # -- ending it -----------------------------------------------------------------------

    def kill_group(self) -> None:
        """SIGKILL the child's whole process group (it and whatever it spawned)."""
        signal_group(self.pid, signal.SIGKILL)

    async def terminate(self, grace: float) -> None:
        """TERM the child's group, KILL it after `grace` s, and wait until it is reaped."""
        if self.exited.done():
            return
        _log.info("stopping ComfyUI (pid %d): SIGTERM, SIGKILL after %.1f s", self.pid, grace)
        signal_group(self.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(self.exited)
        except TimeoutError:
            _log.warning("ComfyUI (pid %d) ignored SIGTERM for %.1f s: SIGKILL", self.pid, grace)
            self.kill_group()
            await self.exited

    async def kill_and_reap(self) -> None:
        """Kill and reap the child no matter what (the supervisor's error path)."""
        if self.transport is not None:
            self.kill_group()
            await self.exited
            self.transport.close()

    async def release(self) -> None:
        """After the child was reaped: kill what is left of its group, close its pipes.

        The group may live on (grandchildren ComfyUI spawned, or ones that outlived a TERM):
        they must not keep the GPU or the port. The last lines (often the traceback) get
        a moment to arrive before the pipes are closed.
        """
        self.kill_group()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await asyncio.shield(self.closed)
        except TimeoutError:
            _log.warning("ComfyUI (pid %d) output still open after exit; closing it", self.pid)
        assert self.transport is not None
        self.transport.close()


async def spawn_child(
    command: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str] | None,
    logger: logging.Logger,
    max_line_bytes: int,
) -> ChildProcess:
    """Start `command` in a new session, its output logged; raise OSError when it can't start."""
    child_env = dict(os.environ if env is None else env)
    # A Python child writes to a pipe block-buffered: lines would reach the log late
    # and the last ones before a SIGKILL would be lost.
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    loop = asyncio.get_running_loop()
    _, child = await loop.subprocess_exec(
        lambda: ChildProcess(logger, max_line_bytes),
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=child_env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    return child


def _die_with_parent() -> None:
    """In the forked child: get SIGKILL when the agent dies, however it dies (Linux).

    The child runs in its own session, so a SIGKILLed agent would otherwise leave an
    orphaned ComfyUI holding the GPU and the port, and the restarted agent could not start.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # best effort: the agent still stops its child on every orderly exit
    if os.getppid() != parent:
        os._exit(1)  # the agent died between fork and prctl: the signal will never come


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a whole process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        # Some systems answer EPERM for a group made only of zombies; nothing left to kill.
        _log.debug("killpg(%d, %s): permission denied", pgid, sig.name)


def describe_code(code: int | None) -> str:
    """An exit status in words: `exit code 1`, `signal SIGKILL`."""
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
