"""The monitor task of the supervisor: keeps one ComfyUI child alive, one at a time.

It watches the live child (probing its health), ends it when a stop or restart is asked
for, and after every end waits out the back-off (`comfyui.restart_policy`) and spawns the
next one (`comfyui.child`). All process control happens in this one task; requests only set
a flag and wake it, so transitions never race each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from .backend import BackendState
from .child import ChildProcess, describe_code, spawn_child
from .health_watch import watch_health
from .readiness import probe
from .restart_policy import RestartBackoff

_log = logging.getLogger("comfyui.supervisor")

# Grace for the TERM sent by restart(): a quick replacement matters more than a tidy exit.
RESTART_GRACE = 5.0


class MonitorOwner(Protocol):
    """What the monitor reports to (the supervisor's public face)."""

    @property
    def stopping(self) -> bool:
        """True once stop() began: no more restarts."""
        ...

    def set_state(self, state: BackendState) -> None:
        """Enter `state` and wake waiters."""
        ...

    def notify(self) -> None:
        """Wake waiters without a state change."""
        ...

    def child_exited(self, code: int | None) -> None:
        """A child died other than through stop() (runs on it are lost)."""
        ...

    def child_ready(self) -> None:
        """A child became ready."""
        ...


@dataclass(frozen=True)
class ChildSpec:
    """How to start a child and how to watch it."""

    command: Sequence[str]
    base_url: str
    cwd: str | None
    env: Mapping[str, str] | None
    logger: logging.Logger
    max_line_bytes: int
    probe_interval: float
    probe_timeout: float
    hang_timeout: float


class ChildMonitor:
    """The child, its restarts, and the requests (stop, restart) made to the monitor task."""

    def __init__(
        self,
        spec: ChildSpec,
        backoff: RestartBackoff,
        owner: MonitorOwner,
        session: Callable[[], aiohttp.ClientSession | None],
    ) -> None:
        self._spec = spec
        self._backoff = backoff
        self._owner = owner
        self._session = session
        self.child: ChildProcess | None = None
        self.ready = False
        self.restarts = 0
        self.spawn_attempts = 0
        self.spawning = False  # a spawn is in flight
        self.last_exit_code: int | None = None
        # Requests to the monitor task; `wake` interrupts its waits.
        self.wake = asyncio.Event()
        self.restart_requested = False
        self.stop_grace = 10.0
        self.restart_grace = RESTART_GRACE

    def request_restart(self) -> int:
        """Ask for a replacement now; the spawn count at which it will exist."""
        # A spawn already in flight is not the replacement asked for here.
        target = self.spawn_attempts + (2 if self.spawning else 1)
        self.restart_requested = True
        self.wake.set()
        return target

    def request_stop(self, grace: float) -> None:
        """Ask the monitor to end the child (TERM, KILL after `grace`) and stop."""
        self.stop_grace = grace
        self.ready = False
        self.wake.set()

    async def spawn(self) -> ChildProcess:
        """Start one child in a new session; raise OSError when it can't be started."""
        spec = self._spec
        self.spawning = True
        try:
            child = await spawn_child(
                spec.command,
                cwd=spec.cwd,
                env=spec.env,
                logger=spec.logger,
                max_line_bytes=spec.max_line_bytes,
            )
        finally:
            # Counted (and waiters woken) only once the attempt is over: restart() waits
            # for this to know its replacement exists.
            self.spawning = False
            self.spawn_attempts += 1
            self._owner.notify()
        self.child = child
        _log.info("started ComfyUI (pid %d): %s", child.pid, " ".join(spec.command))
        return child

    async def run(self) -> None:
        """Monitor task: watch the child, handle stop/restart requests, respawn."""
        owner = self._owner
        child = self.child
        while True:
            try:
                if child is not None:
                    await self._watch(child)
                    await self._after_exit(child)
                if owner.stopping:
                    return
                delay = self._next_delay(child)
                if delay > 0:
                    _log.info("restarting ComfyUI in %.2f s", delay)
                    await self._sleep_or_wake(delay)
                    if owner.stopping:
                        return
                # Clear before consuming the request flag: a request arriving later
                # re-sets the event and is seen on the next wait, never lost.
                self.wake.clear()
                self.restart_requested = False
                child = None
                owner.set_state("restarting")
                try:
                    child = await self.spawn()
                except OSError as exc:
                    _log.error("could not start ComfyUI: %s", exc)
                    continue
                self.restarts += 1
                owner.set_state("starting")
            except asyncio.CancelledError:
                # Cancelled without stop() (e.g. the loop is shutting down): never leave a
                # ComfyUI running unsupervised, holding the GPU and the port.
                current = self.child
                if current is not None and current.transport is not None:
                    if not current.exited.done():
                        current.kill_group()
                    current.transport.close()
                raise
            except Exception:
                # A bug here must not end supervision: log it and go round again, slowly,
                # without leaving a child behind that nobody watches.
                _log.exception("ComfyUI supervisor error")
                if child is not None:
                    self.ready = False
                    await child.kill_and_reap()
                child = None
                await self._sleep_or_wake(self._backoff.maximum)
                if owner.stopping:
                    return

    def _next_delay(self, child: ChildProcess | None) -> float:
        """Back-off before the next spawn; `child` is the one that just ended (or None)."""
        uptime = child.uptime if child is not None else None
        return self._backoff.next_delay(requested=self.restart_requested, uptime=uptime)

    async def _sleep_or_wake(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.wake.wait()

    async def _watch(self, child: ChildProcess) -> None:
        """Return once `child` has exited, terminating it first if stop/restart asks."""
        probing = asyncio.create_task(self._probe_loop(child), name="comfyui-probe")
        try:
            while not child.exited.done():
                stopping = self._owner.stopping
                if stopping or self.restart_requested:
                    child.reason = "stop" if stopping else "restart"
                    await child.terminate(self.stop_grace if stopping else self.restart_grace)
                    break
                waker = asyncio.create_task(self.wake.wait())
                try:
                    waiters: set[asyncio.Future[Any]] = {child.exited, waker}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                # A wake that carried no stop/restart request must not spin this loop.
                if not (self._owner.stopping or self.restart_requested):
                    self.wake.clear()
        finally:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)

    async def _after_exit(self, child: ChildProcess) -> None:
        """Clean up after a reaped child, log why it ended, tell the exit listeners."""
        owner = self._owner
        code = child.returncode
        self.last_exit_code = code
        self.ready = False
        owner.set_state("stopping" if owner.stopping else "restarting")
        await child.release()

        what = describe_code(code)
        if child.reason == "stop" or owner.stopping:
            _log.info("ComfyUI (pid %d) stopped with %s", child.pid, what)
            return
        if child.reason == "restart":
            _log.info("ComfyUI (pid %d) ended with %s for a restart", child.pid, what)
        else:
            _log.error(
                "ComfyUI (pid %d) %s with %s after %.1f s; last output:\n%s",
                child.pid,
                "was killed as hung" if child.reason == "hang" else "exited",
                what,
                child.uptime,
                "\n".join(child.tail) or "(no output)",
            )
        owner.child_exited(code)

    async def _probe_loop(self, child: ChildProcess) -> None:
        """Poll ``/system_stats``: mark the child ready, and kill it when it hangs."""
        session = self._session()
        assert session is not None
        spec = self._spec

        def answered() -> None:
            if not self.ready:
                self.ready = True
                _log.info("ComfyUI (pid %d) is ready", child.pid)
                self._owner.set_state("ready")
                self._owner.child_ready()

        def hung(silent: float) -> None:
            _log.error(
                "ComfyUI (pid %d) has not answered /system_stats for %.1f s: killing it",
                child.pid,
                silent,
            )
            child.reason = "hang"
            self.ready = False
            self._owner.set_state("restarting")
            child.kill_group()

        await watch_health(
            child,
            base_url=spec.base_url,
            probe=lambda: probe(session, spec.base_url, spec.probe_timeout),
            interval=spec.probe_interval,
            hang_timeout=spec.hang_timeout,
            stopping=lambda: self._owner.stopping,
            on_answer=answered,
            on_hang=hung,
        )
