"""Readiness probing of ComfyUI, and `AttachedComfyUI` for a server the agent did not start.

Also holds the two small helpers both backends share: an edge-triggered state-change
notifier (so waiters never poll) and a listener list that isolates failing callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, ParamSpec

import aiohttp
from yarl import URL

from .backend import BackendState, ExitListener, ReadyListener, RemoveListener

__all__ = [
    "AttachedComfyUI",
    "Listeners",
    "StateNotifier",
    "check_base_url",
    "probe",
]

_log = logging.getLogger(__name__)

_P = ParamSpec("_P")


async def probe(session: aiohttp.ClientSession, base_url: str, timeout: float) -> bool:
    """Return True when ``GET {base_url}/system_stats`` answers 200 within `timeout` s."""
    url = base_url.rstrip("/") + "/system_stats"
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            # Read the (small) body so the connection can be reused for the next probe.
            await resp.read()
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def check_base_url(base_url: str) -> str:
    """Validate an http(s) base URL and return it without a trailing slash."""
    url = URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"ComfyUI base URL must be http(s)://host[:port], got {base_url!r}")
    return base_url.rstrip("/")


class StateNotifier:
    """Wakes every waiter on each state change, so waiting never needs a polling loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake all current waiters; they re-check their predicate."""
        # Swap in a fresh event before setting the old one: a waiter that re-arms after
        # waking waits for the *next* change instead of spinning on a set event.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until `predicate()` is true or `timeout` s passed; return `predicate()`."""

        async def _wait() -> None:
            while True:
                # Take the event *before* testing, so a change in between is not missed.
                event = self._event
                if predicate():
                    return
                await event.wait()

        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await _wait()
        return predicate()


class Listeners(Generic[_P]):
    """Callbacks fired synchronously on the loop; one failing callback can't stop the rest."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._callbacks: list[Callable[_P, None]] = []

    def add(self, callback: Callable[_P, None]) -> RemoveListener:
        """Register `callback`; the returned function unregisters it."""
        self._callbacks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def fire(self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Call every registered callback with the given arguments."""
        for callback in list(self._callbacks):
            try:
                callback(*args, **kwargs)
            except Exception:
                # A buggy listener must not break supervision or the other listeners.
                _log.exception("%s listener %r failed", self._kind, callback)


class AttachedComfyUI:
    """A ComfyUI started by someone else: only probed, never spawned, stopped or restarted.

    Ready after the first 200 from ``/system_stats``; readiness drops again when probes
    keep failing for `unready_after` seconds (a short blip does not flap ``/readyz``).
    Exit listeners are accepted for interface parity but never called: there is no child.
    """

    def __init__(
        self,
        base_url: str,
        *,
        probe_interval: float = 0.25,
        probe_timeout: float = 2.0,
        unready_after: float = 10.0,
    ) -> None:
        self._base_url = check_base_url(base_url)
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._unready_after = unready_after
        self._state: BackendState = "idle"
        self._ready = False
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = StateNotifier()
        self._exit_listeners: Listeners[[int | None]] = Listeners("exit")
        self._ready_listeners: Listeners[[]] = Listeners("ready")

    @property
    def base_url(self) -> str:
        """Root URL of the attached ComfyUI."""
        return self._base_url

    @property
    def ready(self) -> bool:
        """True while the attached ComfyUI answers ``/system_stats``."""
        return self._ready

    @property
    def state(self) -> BackendState:
        """One of "idle", "starting", "ready", "stopping", "stopped"."""
        return self._state

    @property
    def restarts(self) -> int:
        """Always 0: an attached ComfyUI is never restarted by the agent."""
        return 0

    @property
    def pid(self) -> int | None:
        """Always None: there is no child process."""
        return None

    async def start(self) -> None:
        """Start probing in the background; returns at once."""
        if self._state != "idle":
            raise RuntimeError(f"start() called in state {self._state!r}")
        self._session = aiohttp.ClientSession()
        self._set_state("starting")
        self._task = asyncio.create_task(self._probe_loop(), name="comfyui-attach-probe")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop probing and close the HTTP session; idempotent (`grace` is unused)."""
        if self._state in ("stopping", "stopped"):
            await self._changed.wait_for(lambda: self._state == "stopped", None)
            return
        self._ready = False
        self._set_state("stopping")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._set_state("stopped")

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` s for readiness; False soon after stop()."""
        await self._changed.wait_for(
            lambda: self._ready or self._state in ("stopping", "stopped"), timeout
        )
        return self._ready

    def add_exit_listener(self, callback: ExitListener) -> RemoveListener:
        """Accepted for parity with the supervisor; never called (no child to exit)."""
        return self._exit_listeners.add(callback)

    def add_ready_listener(self, callback: ReadyListener) -> RemoveListener:
        """Call `callback()` each time the attached ComfyUI becomes reachable."""
        return self._ready_listeners.add(callback)

    def _set_state(self, state: BackendState) -> None:
        self._state = state
        self._changed.notify()

    async def _probe_loop(self) -> None:
        assert self._session is not None
        last_ok: float | None = None
        while True:
            try:
                ok = await probe(self._session, self._base_url, self._probe_timeout)
            except Exception:
                # Never let an unexpected error end probing silently: readiness would freeze.
                _log.exception("readiness probe of %s failed unexpectedly", self._base_url)
                ok = False
            now = time.monotonic()
            if ok:
                last_ok = now
                if not self._ready:
                    self._ready = True
                    _log.info("attached ComfyUI at %s is ready", self._base_url)
                    self._set_state("ready")
                    self._ready_listeners.fire()
            elif self._ready and last_ok is not None and now - last_ok >= self._unready_after:
                self._ready = False
                _log.warning(
                    "attached ComfyUI at %s has not answered for %.1f s; not ready",
                    self._base_url,
                    now - last_ok,
                )
                self._set_state("starting")
            await asyncio.sleep(self._probe_interval)
