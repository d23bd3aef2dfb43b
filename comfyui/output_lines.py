"""Pure: a child's output bytes into log lines, bounded in memory whatever the child writes."""

from __future__ import annotations

from collections.abc import Callable


class LineSplitter:
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
