"""The surface the agent needs from "a ComfyUI": a supervised child or an attached server.

Both `comfyui.supervisor.ComfyUIProcess` (agent starts and restarts the child) and
`comfyui.readiness.AttachedComfyUI` (agent attaches to a ComfyUI someone else runs) satisfy
`ComfyUIBackend`, so the app wires whichever the configuration asks for and never cares.

States (`BackendState`):

- ``"idle"``: created, `start()` not called yet.
- ``"starting"``: waiting for ComfyUI to answer ``GET /system_stats`` with 200 (child
  spawned and booting; for an attached server: not reachable yet, or not any more).
- ``"ready"``: ComfyUI answers; runs may be submitted.
- ``"restarting"``: (supervisor only) the child exited or was killed (crash, hang,
  `restart()`); a new one is spawned after the back-off delay.
- ``"stopping"``: `stop()` is in progress; no more restarts.
- ``"stopped"``: `stop()` finished (or `start()` failed); terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

BackendState = Literal["idle", "starting", "ready", "restarting", "stopping", "stopped"]

# Called with the child's return code (negative = killed by that signal); None when unknown.
ExitListener = Callable[[int | None], None]
ReadyListener = Callable[[], None]
# Returned by the add_*_listener methods; calling it unregisters the listener.
RemoveListener = Callable[[], None]


@runtime_checkable
class ComfyUIBackend(Protocol):
    """A ComfyUI the agent can wait for and run workflows on."""

    @property
    def base_url(self) -> str:
        """Root URL of ComfyUI's HTTP API, e.g. ``http://127.0.0.1:9001``."""
        ...

    @property
    def ready(self) -> bool:
        """True while ComfyUI answers ``/system_stats``."""
        ...

    @property
    def state(self) -> BackendState:
        """Current lifecycle state (see module docstring)."""
        ...

    @property
    def restarts(self) -> int:
        """How many times a new child was spawned after the first (0 when attached)."""
        ...

    @property
    def pid(self) -> int | None:
        """PID of the running child, None when there is none (always None when attached)."""
        ...

    async def start(self) -> None:
        """Begin: spawn the child / start probing; returns without waiting for readiness."""
        ...

    async def stop(self, grace: float = 10.0) -> None:
        """End for good: stop the child (TERM, then KILL after `grace`) and probing."""
        ...

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for readiness; False at once-ish when stopping/stopped."""
        ...

    def add_exit_listener(self, callback: ExitListener) -> RemoveListener:
        """Call `callback(returncode)` on the loop each time the child dies (before restart)."""
        ...

    def add_ready_listener(self, callback: ReadyListener) -> RemoveListener:
        """Call `callback()` on the loop each time ComfyUI becomes ready."""
        ...
