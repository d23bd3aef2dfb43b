"""Posting a run's prompt to ComfyUI, again when it provably never got there.

A prompt whose POST /prompt got no answer may or may not be in ComfyUI's queue. It
provably is not when no connection could be made (nothing was sent), or when the child
that might have received it is gone (it died, its in-memory queue with it: the exit of a
child and the reset of our connection arrive in either order, so the child gets a moment
to be seen dead). Such a prompt is posted again, under the same prompt id, once the child
is ready again, within --ready-timeout of the first failure. Anything else (an answer,
however bad, or a reset while the same child lives) may have reached ComfyUI: it is not
posted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from comfyui.client import ComfyUIClient, ComfyUIUnavailable, NotConnected
from comfyui.event_stream import EventStream

log = logging.getLogger("agent.submission")

# How long a reset connection waits for the child's death to become visible.
DEATH_SETTLE = 1.0
_SETTLE_STEP = 0.02


class ChildBackend(Protocol):
    """What resubmission needs to know of ComfyUI: readiness, and which child answers."""

    @property
    def pid(self) -> int | None:
        """PID of the live child; None between children (always None when attached)."""
        ...

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until ComfyUI answers; False on timeout."""
        ...


async def never_reached(
    exc: ComfyUIUnavailable,
    backend: ChildBackend,
    pid_before: int | None,
    *,
    settle: float = DEATH_SETTLE,
) -> bool:
    """True when the failed POST provably left nothing in any live ComfyUI's queue."""
    if isinstance(exc, NotConnected):
        return True
    if not isinstance(exc.__cause__, aiohttp.ClientError | TimeoutError):
        return False  # ComfyUI answered (a 5xx): it saw the request
    if pid_before is None:
        return False  # attached to a ComfyUI we cannot see die
    deadline = time.monotonic() + settle
    while backend.pid == pid_before:
        if time.monotonic() >= deadline:
            return False  # the same child lives: it may have queued the prompt
        await asyncio.sleep(_SETTLE_STEP)
    return True


async def submit_prompt(
    client: ComfyUIClient,
    backend: ChildBackend,
    events: EventStream,
    workflow: dict[str, dict[str, Any]],
    prompt_id: str,
    *,
    ready_timeout: float,
    connect_timeout: float,
    stop: asyncio.Event | None = None,
    log_extra: dict[str, str | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """POST the prompt, again after a child restart while it provably never arrived.

    Returns how many times it was posted again; raises the last ComfyUIUnavailable when
    it may have arrived, or ComfyUI was not ready again within ready_timeout, or `stop`
    was set while waiting for it (never while a POST is on its way).
    """
    resubmitted = 0
    deadline: float | None = None
    while True:
        pid = backend.pid
        try:
            await client.submit(workflow, prompt_id=prompt_id, client_id=events.client_id)
            return resubmitted
        except ComfyUIUnavailable as exc:
            if not await never_reached(exc, backend, pid):
                raise
            now = clock()
            if deadline is None:
                deadline = now + ready_timeout
            if now >= deadline or not await _ready_again(backend, deadline - now, stop):
                raise
            log.warning(
                "prompt %s never reached ComfyUI (%s); posting it again now that ComfyUI is ready",
                prompt_id,
                exc,
                extra=log_extra,
            )
            # The event websocket reconnects to the new child; events of this prompt
            # are routed by its id, which stays the same.
            await events.wait_connected(connect_timeout)
            resubmitted += 1


async def _ready_again(backend: ChildBackend, timeout: float, stop: asyncio.Event | None) -> bool:
    ready = asyncio.ensure_future(backend.wait_ready(timeout))
    if stop is None:
        return await ready
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (ready, stopped):
            if not waiter.done():
                waiter.cancel()
    return not stop.is_set() and ready.done() and not ready.cancelled() and ready.result()
