"""Pure: how long to wait before spawning the next ComfyUI child (capped exponential back-off)."""

from __future__ import annotations


class RestartBackoff:
    """Delays between children: `initial`, doubling up to `maximum`.

    The delay starts over after a child that stayed up `stable_after` s (a new incident,
    not a crash loop) and when a restart was asked for (a replacement is wanted now).
    """

    def __init__(self, initial: float, maximum: float, stable_after: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self._next = initial

    def next_delay(self, *, requested: bool, uptime: float | None) -> float:
        """The wait before the next spawn; `uptime` of the child that just ended, if any."""
        if requested:
            self._next = self.initial
            return 0.0
        if uptime is not None and uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay
