"""Watching one live ComfyUI child: ready once `/system_stats` answers, hung when it stops.

Readiness stays true across short probe failures so `/readyz` does not flap while ComfyUI
is busy; a child that answered before and then stays silent for `hang_timeout` s is hung.
A child that never answered is left to boot: ComfyUI may legitimately take minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .child import ChildProcess

_log = logging.getLogger("comfyui.supervisor")


async def watch_health(
    child: ChildProcess,
    *,
    base_url: str,
    probe: Callable[[], Awaitable[bool]],
    interval: float,
    hang_timeout: float,
    stopping: Callable[[], bool],
    on_answer: Callable[[], None],
    on_hang: Callable[[float], None],
) -> None:
    """Probe until the child exits: `on_answer()` after each answer, `on_hang(silent_s)` once
    (then return) when it stopped answering; the caller kills a hung child."""
    last_ok: float | None = None
    while not child.exited.done():
        try:
            ok = await probe()
        except Exception:
            # Never let an unexpected error end probing silently: readiness would freeze.
            _log.exception("readiness probe of %s failed unexpectedly", base_url)
            ok = False
        if child.exited.done() or stopping():
            return
        now = time.monotonic()
        if ok:
            last_ok = now
            on_answer()
        elif last_ok is not None and now - last_ok >= hang_timeout:
            on_hang(now - last_ok)
            return
        await asyncio.sleep(interval)
