"""Supervision of the ComfyUI child process: the backend the agent sees.

`ComfyUIProcess` is the public face (state, readiness, listeners, start/restart/stop);
the monitor task in `comfyui.child_monitor` keeps one child alive, `comfyui.child` spawns
and ends each child, `comfyui.restart_policy` paces the restarts and
`comfyui.health_watch` tells ready from hung.

State names: see `comfyui.backend` ("idle", "starting", "ready", "restarting", "stopping",
"stopped").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import aiohttp

from .backend import BackendState, ExitListener, ReadyListener, RemoveListener
from .child_monitor import ChildMonitor, ChildSpec
from .readiness import Listeners, StateNotifier, check_base_url
from .restart_policy import RestartBackoff

__all__ = ["ComfyUIProcess"]

_log = logging.getLogger(__name__)


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
        self._base_url = check_base_url(base_url)
        self._child_logger = logger if logger is not None else logging.getLogger("comfyui.child")
        spec = ChildSpec(
            command=list(command),
            base_url=self._base_url,
            cwd=cwd,
            env=env,
            logger=self._child_logger,
            max_line_bytes=max_line_bytes,
            probe_interval=probe_interval,
            # A probe may not outlast the hang timeout, or a hang is noticed late.
            probe_timeout=min(probe_timeout, hang_timeout),
            hang_timeout=hang_timeout,
        )
        backoff = RestartBackoff(restart_backoff_initial, restart_backoff_max, stable_after)
        self._children = ChildMonitor(spec, backoff, self, lambda: self._session)

        self._state: BackendState = "idle"
        self._session: aiohttp.ClientSession | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._starting = False  # start() is spawning the first child

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
        return self._children.ready

    @property
    def state(self) -> BackendState:
        """One of "idle", "starting", "ready", "restarting", "stopping", "stopped"."""
        return self._state

    @property
    def pid(self) -> int | None:
        """PID of the live child, None between children and after stop."""
        child = self._children.child
        if child is None or child.exited.done():
            return None
        return child.pid

    @property
    def restarts(self) -> int:
        """Number of children spawned after the first one."""
        return self._children.restarts

    @property
    def last_exit_code(self) -> int | None:
        """Return code of the last child that exited (negative = signal), None if none yet."""
        return self._children.last_exit_code

    @property
    def started_at(self) -> float | None:
        """Unix time the live child was spawned, None when there is none."""
        child = self._children.child
        if child is None or child.exited.done():
            return None
        return child.spawned_at

    @property
    def stopping(self) -> bool:
        """True once stop() began: no more restarts."""
        return self._stopping

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
        self.set_state("starting")
        self._starting = True
        try:
            await self._children.spawn()
            self._monitor = asyncio.create_task(self._children.run(), name="comfyui-supervisor")
        except BaseException:
            # Nothing to supervise: end up stopped, so waiters and restart() return.
            self._stopping = True
            await self._session.close()
            self.set_state("stopped")
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
        target = self._children.request_restart()
        children = self._children
        await self._changed.wait_for(
            lambda: children.spawn_attempts >= target or self._stopping, None
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop for good: TERM the child's group, KILL it after `grace` s, reap; idempotent."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._do_stop(grace), name="comfyui-stop")
        # Shielded: a caller that gives up waiting must not leave the child half-stopped.
        await asyncio.shield(self._stop_task)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for readiness; False soon after stop()."""
        await self._changed.wait_for(lambda: self._children.ready or self._stopping, timeout)
        return self._children.ready

    # -- what the monitor reports (MonitorOwner) ---------------------------------------

    def set_state(self, state: BackendState) -> None:
        """Enter `state` and wake waiters."""
        # Once stop() began, the monitor's own transitions must not mask "stopping".
        if not self._stopping or state in ("stopping", "stopped"):
            self._state = state
        self._changed.notify()

    def notify(self) -> None:
        """Wake waiters without a state change."""
        self._changed.notify()

    def child_exited(self, code: int | None) -> None:
        """Tell the exit listeners."""
        self._exit_listeners.fire(code)

    def child_ready(self) -> None:
        """Tell the ready listeners."""
        self._ready_listeners.fire()

    # -- internals ---------------------------------------------------------------------

    async def _do_stop(self, grace: float) -> None:
        self._stopping = True
        self._children.request_stop(grace)
        if self._state == "idle":
            self.set_state("stopped")
            return
        self.set_state("stopping")
        # stop() racing start(): let the first spawn finish, the monitor then stops it.
        await self._changed.wait_for(lambda: not self._starting, None)
        if self._monitor is not None:
            await asyncio.gather(self._monitor, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self.set_state("stopped")
        _log.info("ComfyUI supervisor stopped")
