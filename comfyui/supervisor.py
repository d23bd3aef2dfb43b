"""Supervision of the ComfyUI child process: spawn, log forwarding, readiness, restarts.

The child runs in its own session (hence its own process group) so that signals reach
everything ComfyUI spawns, and so that a Ctrl-C/SIGTERM aimed at the agent's group does not
hit ComfyUI behind the agent's back: the agent decides when ComfyUI stops.

All process control (terminate, kill, respawn) happens in one monitor task; `stop()` and
`restart()` only post a request and wake it. That keeps every transition in one place and
free of races between concurrent callers.

State names: see `comfyui.backend` ("idle", "starting", "ready", "restarting", "stopping",
"stopped").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from .backend import BackendState, ExitListener, ReadyListener, RemoveListener
from .readiness import Listeners, StateNotifier, check_base_url, probe

__all__ = ["ComfyUIProcess"]

_log = logging.getLogger(__name__)

_OUTPUT_PREFIX = "[comfyui] "
# How many output lines are kept to explain a crash, and how much of each.
_TAIL_LINES = 20
_TAIL_LINE_CHARS = 1000
# After the child died, how long its pipes may stay open (an escaped grandchild holding
# them) before they are closed anyway; bounds how late exit listeners can fire.
_DRAIN_TIMEOUT = 0.5
# Grace for the TERM sent by restart(): a quick replacement matters more than a tidy exit.
_RESTART_GRACE = 5.0
# prctl option: signal sent to this process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1

_ExitReason = Literal["crash", "hang", "restart", "stop"]


class _LineSplitter:
    """Turns a byte stream into text lines, bounded in memory whatever the child writes.

    Terminal semantics for carriage returns: tqdm-style progress bars rewrite one line
    with "\\r"; only what a terminal would finally show (text after the last "\\r") is
    logged, instead of one enormous line or a flood of near-identical ones.
    """

    def __init__(self, emit: Callable[[str], None], max_bytes: int) -> None:
        self._emit = emit
        self._max = max_bytes
        self._buf = bytearray()
        self._dropped = 0  # bytes cut from the current line because it was too long

    def feed(self, data: bytes) -> None:
        """Add bytes; emit every complete line."""
        self._buf += data
        while (nl := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._emit_line(line)
        # A trailing "\r" may be the first half of "\r\n": only rewind on an earlier one.
        cr = self._buf.rfind(b"\r", 0, len(self._buf) - 1)
        if cr >= 0:
            del self._buf[: cr + 1]
            self._dropped = 0
        if len(self._buf) > self._max:
            # Never buffer an unbounded line: keep its head, count and drop the rest.
            self._dropped += len(self._buf) - self._max
            del self._buf[self._max :]

    def flush(self) -> None:
        """Emit a final unterminated line, if any (end of stream)."""
        if self._buf or self._dropped:
            line = bytes(self._buf)
            self._buf.clear()
            self._emit_line(line)

    def _emit_line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        cr = line.rfind(b"\r")
        if cr >= 0:
            line = line[cr + 1 :]
            self._dropped = 0
        if len(line) > self._max:
            self._dropped += len(line) - self._max
            line = line[: self._max]
        text = line.decode("utf-8", errors="replace")
        if self._dropped:
            text += f" ... [line truncated, {self._dropped} more bytes]"
            self._dropped = 0
        self._emit(text)


class _Child(asyncio.SubprocessProtocol):
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
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.spawned_monotonic = time.monotonic()
        self.spawned_at = time.time()
        self.reason: _ExitReason = "crash"
        self._splitters = {
            1: _LineSplitter(self._on_line, max_line_bytes),
            2: _LineSplitter(self._on_line, max_line_bytes),
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
        self._logger.info("%s%s", _OUTPUT_PREFIX, text)
        self.tail.append(text[:_TAIL_LINE_CHARS])


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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a whole process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        # Some systems answer EPERM for a group made only of zombies; nothing left to kill.
        _log.debug("killpg(%d, %s): permission denied", pgid, sig.name)


def _describe_code(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class ComfyUIProcess:
    """Runs ComfyUI as a child process and keeps it alive.

    Readiness means ``GET {base_url}/system_stats`` answered 200. A child that dies, or that
    was ready and then stopped answering for `hang_timeout` s (killed with SIGKILL), is
    replaced after a capped exponential back-off (`restart_backoff_initial`, doubling, at
    most `restart_backoff_max`; reset once a child stayed up `stable_after` s). A child
    that never becomes ready is left to boot: ComfyUI may legitimately take minutes.
    Readiness stays true across short probe failures so ``/readyz`` does not flap while
    ComfyUI is busy; it drops the moment the child exits or is declared hung.
    """

    def __init__(
        self,
        *,
        command: Sequence[str],
        base_url: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        probe_interval: float = 0.25,
        probe_timeout: float = 2.0,
        restart_backoff_initial: float = 0.5,
        restart_backoff_max: float = 30.0,
        hang_timeout: float = 60.0,
        stable_after: float = 60.0,
        max_line_bytes: int = 64 * 1024,
    ) -> None:
        if not command:
            raise ValueError("command must not be empty")
        self._command = list(command)
        self._base_url = check_base_url(base_url)
        self._cwd = cwd
        self._env = env
        self._child_logger = logger if logger is not None else logging.getLogger("comfyui.child")
        self._probe_interval = probe_interval
        # A probe may not outlast the hang timeout, or a hang is noticed late.
        self._probe_timeout = min(probe_timeout, hang_timeout)
        self._backoff_initial = restart_backoff_initial
        self._backoff_max = restart_backoff_max
        self._hang_timeout = hang_timeout
        self._stable_after = stable_after
        self._max_line_bytes = max_line_bytes

        self._state: BackendState = "idle"
        self._ready = False
        self._child: _Child | None = None
        self._restarts = 0
        self._spawn_attempts = 0
        self._last_exit_code: int | None = None
        self._backoff = restart_backoff_initial

        self._session: aiohttp.ClientSession | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        # Requests to the monitor task; `_wake` interrupts its waits.
        self._wake = asyncio.Event()
        self._stopping = False
        self._starting = False  # start() is spawning the first child
        self._spawning = False  # a spawn is in flight
        self._stop_grace = 10.0
        self._restart_requested = False
        self._restart_grace = _RESTART_GRACE

        self._changed = StateNotifier()
        self._exit_listeners: Listeners[[int | None]] = Listeners("exit")
        self._ready_listeners: Listeners[[]] = Listeners("ready")

    # -- read-only surface -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Root URL of the child's HTTP API."""
        return self._base_url

    @property
    def ready(self) -> bool:
        """True while the current child answers ``/system_stats``."""
        return self._ready

    @property
    def state(self) -> BackendState:
        """One of "idle", "starting", "ready", "restarting", "stopping", "stopped"."""
        return self._state

    @property
    def pid(self) -> int | None:
        """PID of the live child, None between children and after stop."""
        child = self._child
        if child is None or child.exited.done():
            return None
        return child.pid

    @property
    def restarts(self) -> int:
        """Number of children spawned after the first one."""
        return self._restarts

    @property
    def last_exit_code(self) -> int | None:
        """Return code of the last child that exited (negative = signal), None if none yet."""
        return self._last_exit_code

    @property
    def started_at(self) -> float | None:
        """Unix time the live child was spawned, None when there is none."""
        child = self._child
        if child is None or child.exited.done():
            return None
        return child.spawned_at

    # -- listeners ---------------------------------------------------------------------

    def add_exit_listener(self, callback: ExitListener) -> RemoveListener:
        """Call `callback(returncode)` each time a child dies other than through stop().

        Fired on the loop before the replacement is spawned: after a crash, a kill from
        outside, a hang kill, or `restart()` (runs on that child are lost in every case).
        """
        return self._exit_listeners.add(callback)

    def add_ready_listener(self, callback: ReadyListener) -> RemoveListener:
        """Call `callback()` on the loop each time a child becomes ready."""
        return self._ready_listeners.add(callback)

    # -- control -----------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the child and the monitor; returns without waiting for readiness.

        Raises OSError (and ends in state "stopped") when the command cannot be spawned at
        all, e.g. a missing executable: a configuration error worth failing loudly on.
        Later spawn failures are retried with back-off like crashes.
        """
        if self._state != "idle":
            raise RuntimeError(f"start() called in state {self._state!r}")
        self._session = aiohttp.ClientSession()
        self._set_state("starting")
        self._starting = True
        try:
            await self._spawn()
            self._monitor = asyncio.create_task(self._supervise(), name="comfyui-supervisor")
        except BaseException:
            # Nothing to supervise: end up stopped, so waiters and restart() return.
            self._stopping = True
            await self._session.close()
            self._set_state("stopped")
            raise
        finally:
            self._starting = False
            self._changed.notify()

    async def restart(self) -> None:
        """Kill the current child (TERM, KILL after a short grace) and spawn a new one now.

        Returns once the replacement was spawned (not ready); skips any back-off delay.
        """
        if self._state == "idle":
            raise RuntimeError("restart() called before start()")
        if self._stopping:
            return
        # A spawn already in flight is not the replacement asked for here.
        target = self._spawn_attempts + (2 if self._spawning else 1)
        self._restart_requested = True
        self._wake.set()
        await self._changed.wait_for(lambda: self._spawn_attempts >= target or self._stopping, None)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop for good: TERM the child's group, KILL it after `grace` s, reap; idempotent."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._do_stop(grace), name="comfyui-stop")
        # Shielded: a caller that gives up waiting must not leave the child half-stopped.
        await asyncio.shield(self._stop_task)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for readiness; False soon after stop()."""
        await self._changed.wait_for(lambda: self._ready or self._stopping, timeout)
        return self._ready

    # -- internals ---------------------------------------------------------------------

    def _set_state(self, state: BackendState) -> None:
        # Once stop() began, the monitor's own transitions must not mask "stopping".
        if not self._stopping or state in ("stopping", "stopped"):
            self._state = state
        self._changed.notify()

    async def _do_stop(self, grace: float) -> None:
        self._stopping = True
        self._stop_grace = grace
        self._ready = False
        if self._state == "idle":
            self._set_state("stopped")
            return
        self._set_state("stopping")
        self._wake.set()
        # stop() racing start(): let the first spawn finish, the monitor then stops it.
        await self._changed.wait_for(lambda: not self._starting, None)
        if self._monitor is not None:
            await asyncio.gather(self._monitor, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._set_state("stopped")
        _log.info("ComfyUI supervisor stopped")

    async def _spawn(self) -> _Child:
        """Start one child in a new session; raise OSError when it can't be started."""
        env = dict(os.environ if self._env is None else self._env)
        # A Python child writes to a pipe block-buffered: lines would reach the log late
        # and the last ones before a SIGKILL would be lost.
        env.setdefault("PYTHONUNBUFFERED", "1")
        loop = asyncio.get_running_loop()
        self._spawning = True
        try:
            _, child = await loop.subprocess_exec(
                lambda: _Child(self._child_logger, self._max_line_bytes),
                *self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self._cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            # Counted (and waiters woken) only once the attempt is over: restart() waits
            # for this to know its replacement exists.
            self._spawning = False
            self._spawn_attempts += 1
            self._changed.notify()
        self._child = child
        _log.info("started ComfyUI (pid %d): %s", child.pid, " ".join(self._command))
        return child

    async def _supervise(self) -> None:
        """Monitor task: watch the child, handle stop/restart requests, respawn."""
        child = self._child
        while True:
            try:
                if child is not None:
                    await self._watch(child)
                    await self._after_exit(child)
                if self._stopping:
                    return
                delay = self._next_delay(child)
                if delay > 0:
                    _log.info("restarting ComfyUI in %.2f s", delay)
                    await self._sleep_or_wake(delay)
                    if self._stopping:
                        return
                # Clear before consuming the request flag: a request arriving later
                # re-sets the event and is seen on the next wait, never lost.
                self._wake.clear()
                self._restart_requested = False
                child = None
                self._set_state("restarting")
                try:
                    child = await self._spawn()
                except OSError as exc:
                    _log.error("could not start ComfyUI: %s", exc)
                    continue
                self._restarts += 1
                self._set_state("starting")
            except asyncio.CancelledError:
                # Cancelled without stop() (e.g. the loop is shutting down): never leave a
                # ComfyUI running unsupervised, holding the GPU and the port.
                current = self._child
                if current is not None and current.transport is not None:
                    if not current.exited.done():
                        _signal_group(current.pid, signal.SIGKILL)
                    current.transport.close()
                raise
            except Exception:
                # A bug here must not end supervision: log it and go round again, slowly,
                # without leaving a child behind that nobody watches.
                _log.exception("ComfyUI supervisor error")
                if child is not None:
                    await self._discard(child)
                child = None
                await self._sleep_or_wake(self._backoff_max)
                if self._stopping:
                    return

    async def _discard(self, child: _Child) -> None:
        """Kill and reap `child` no matter what; used only on the error path."""
        self._ready = False
        if child.transport is not None:
            _signal_group(child.pid, signal.SIGKILL)
            await child.exited
            child.transport.close()

    def _next_delay(self, child: _Child | None) -> float:
        """Back-off before the next spawn; `child` is the one that just ended (or None)."""
        if self._restart_requested:
            self._backoff = self._backoff_initial
            return 0.0
        if child is not None and time.monotonic() - child.spawned_monotonic >= self._stable_after:
            # It ran fine for a while: this is a new incident, not a crash loop.
            self._backoff = self._backoff_initial
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        return delay

    async def _sleep_or_wake(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _watch(self, child: _Child) -> None:
        """Return once `child` has exited, terminating it first if stop/restart asks."""
        probing = asyncio.create_task(self._probe_loop(child), name="comfyui-probe")
        try:
            while not child.exited.done():
                if self._stopping or self._restart_requested:
                    stopping = self._stopping
                    child.reason = "stop" if stopping else "restart"
                    grace = self._stop_grace if stopping else self._restart_grace
                    await self._terminate(child, grace)
                    break
                waker = asyncio.create_task(self._wake.wait())
                try:
                    waiters: set[asyncio.Future[Any]] = {child.exited, waker}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                # A wake that carried no stop/restart request must not spin this loop.
                if not (self._stopping or self._restart_requested):
                    self._wake.clear()
        finally:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)

    async def _terminate(self, child: _Child, grace: float) -> None:
        """TERM the child's group, KILL it after `grace` s, and wait until it is reaped."""
        if child.exited.done():
            return
        _log.info("stopping ComfyUI (pid %d): SIGTERM, SIGKILL after %.1f s", child.pid, grace)
        _signal_group(child.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(child.exited)
        except TimeoutError:
            _log.warning("ComfyUI (pid %d) ignored SIGTERM for %.1f s: SIGKILL", child.pid, grace)
            _signal_group(child.pid, signal.SIGKILL)
            await child.exited

    async def _after_exit(self, child: _Child) -> None:
        """Clean up after a reaped child, log why it ended, tell the exit listeners."""
        code = child.returncode
        self._last_exit_code = code
        self._ready = False
        self._set_state("stopping" if self._stopping else "restarting")
        # The child is reaped but its group may live on (grandchildren ComfyUI spawned,
        # or ones that outlived a TERM): they must not keep the GPU or the port.
        _signal_group(child.pid, signal.SIGKILL)
        try:
            # Let the last lines (often the traceback) arrive before closing the pipes.
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                await asyncio.shield(child.closed)
        except TimeoutError:
            _log.warning("ComfyUI (pid %d) output still open after exit; closing it", child.pid)
        assert child.transport is not None
        child.transport.close()

        uptime = time.monotonic() - child.spawned_monotonic
        what = _describe_code(code)
        if child.reason == "stop" or self._stopping:
            _log.info("ComfyUI (pid %d) stopped with %s", child.pid, what)
            return
        if child.reason == "restart":
            _log.info("ComfyUI (pid %d) ended with %s for a restart", child.pid, what)
        else:
            tail = "\n".join(child.tail) or "(no output)"
            _log.error(
                "ComfyUI (pid %d) %s with %s after %.1f s; last output:\n%s",
                child.pid,
                "was killed as hung" if child.reason == "hang" else "exited",
                what,
                uptime,
                tail,
            )
        self._exit_listeners.fire(code)

    async def _probe_loop(self, child: _Child) -> None:
        """Poll ``/system_stats``: mark the child ready, and kill it when it hangs."""
        assert self._session is not None
        last_ok: float | None = None
        while not child.exited.done():
            try:
                ok = await probe(self._session, self._base_url, self._probe_timeout)
            except Exception:
                # Never let an unexpected error end probing silently: readiness would freeze.
                _log.exception("readiness probe of %s failed unexpectedly", self._base_url)
                ok = False
            if child.exited.done() or self._stopping:
                return
            now = time.monotonic()
            if ok:
                last_ok = now
                if not self._ready:
                    self._ready = True
                    _log.info("ComfyUI (pid %d) is ready", child.pid)
                    self._set_state("ready")
                    self._ready_listeners.fire()
            elif last_ok is not None and now - last_ok >= self._hang_timeout:
                _log.error(
                    "ComfyUI (pid %d) has not answered /system_stats for %.1f s: killing it",
                    child.pid,
                    now - last_ok,
                )
                child.reason = "hang"
                self._ready = False
                self._set_state("restarting")
                _signal_group(child.pid, signal.SIGKILL)
                return
            await asyncio.sleep(self._probe_interval)
