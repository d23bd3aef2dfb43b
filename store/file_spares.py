"""Spare files for the file store's durable writes: created and flushed ahead of time.

A final record must be on disk before its answer is sent. Written the plain way (create a
temp file, write, fsync, rename) that costs a file creation and a journal commit on the
answer's path, and on a busy disk (ComfyUI saving images next to it) the commit is the
slow part. A spare is a temp file of SPARE_SIZE spaces, created and fsynced in the
background, so its blocks and size are already on disk: a record written over it, padded
with spaces to the same size (JSON allows trailing whitespace), needs only fdatasync of
its data blocks, no metadata, before it is renamed into place. Records larger than a
spare, or written while none is ready, take the plain way.

Spares are ordinary temp files (``.spare.<random>.tmp``): a crashed instance's are swept
like any other, and one handed out after the sweeper took it fails to open and falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from store.file_io import FILE_MODE, TEMP_SUFFIX, unlink

log = logging.getLogger("store.file")

# One 8 KiB spare holds the final record of a workflow of a few dozen nodes.
SPARE_SIZE = 8192
# Spares are made only after the store wrote nothing for this long: a final write is
# followed by its answer, which a spare's flush on a thread would slow (GIL, disk).
QUIET = 0.005
SPARE_PREFIX = ".spare."


class SpareFiles:
    """A few spare files kept ready in one directory, refilled in the background."""

    def __init__(
        self,
        directory: Path,
        *,
        keep: int = 2,
        max_age: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        quiet: float = QUIET,
    ) -> None:
        self._dir = directory
        self._keep = keep
        self._quiet = quiet
        self._last_write = -math.inf
        # Spares are made while the store writes nothing else (see writing()): in a burst
        # of final writes, flushing spares too would double the flushes the burst waits for.
        self._writes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Older spares are dropped before the sweeper (temp_max_age) could remove them.
        self._max_age = max_age
        self._clock = clock
        self._ready: deque[tuple[Path, float]] = deque()
        self._refill: asyncio.Task[None] | None = None
        self._closed = False
        self._failed = False

    def take(self) -> Path | None:
        """A spare to write a record into (it is then the caller's), or None if none is ready."""
        now = self._clock()
        spare = None
        while self._ready:
            path, made = self._ready.popleft()
            if now - made <= self._max_age:
                spare = path
                break
            self._discard(path)
        self.refill()
        return spare

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around each of the store's writes: spares are made only between them."""
        self._writes += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._writes -= 1
            self._last_write = self._clock()
            if not self._writes:
                self._idle.set()

    def refill(self) -> None:
        """Make spares in the background until `keep` are ready (no-op while one is made)."""
        if self._closed or self._failed or len(self._ready) >= self._keep:
            return
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._make_spares(), name="file store spares")

    async def close(self) -> None:
        """Stop refilling and delete the spares not handed out."""
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.wait([self._refill])
        paths = [path for path, _ in self._ready]
        self._ready.clear()
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    async def _make_spares(self) -> None:
        while not self._closed and len(self._ready) < self._keep:
            await self._idle.wait()
            wait = self._last_write + self._quiet - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # look again: another write may have come meanwhile
            making = asyncio.get_running_loop().run_in_executor(None, make_spare, self._dir)
            try:
                path = await asyncio.shield(making)
            except asyncio.CancelledError:
                # close() came while a thread makes a spare, which it finishes regardless:
                # remove the spare once made, so that close leaves none behind.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(unlink, await making)
                raise
            except OSError as exc:
                # No spares then: every write takes the plain way (and says why once).
                log.warning("file store %s: no spare files (%s); writing plainly", self._dir, exc)
                self._failed = True
                return
            if self._closed:
                await asyncio.to_thread(unlink, path)
                return
            self._ready.append((path, self._clock()))

    def _discard(self, path: Path) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(unlink, path))
        task.add_done_callback(lambda done: done.exception())


def make_spare(directory: Path) -> Path:
    """Create a spare: SPARE_SIZE spaces, flushed with its metadata."""
    path = directory / f"{SPARE_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, FILE_MODE)
    with contextlib.suppress(OSError):  # see file_io.write_new
        os.fchmod(fd, FILE_MODE)
    _fill(fd, path, b"", os.fsync)
    return path


def write_spare(spare: Path | None, data: bytes) -> Path | None:
    """Write data over a spare, padded to its size, and flush it: the spare, or None when
    there is none or it cannot be used (data too large, or swept), to write plainly."""
    if spare is None:
        return None
    if len(data) > SPARE_SIZE:
        unlink(spare)
        return None
    try:
        fd = os.open(spare, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    # Same size, blocks allocated and flushed when the spare was made: data only.
    _fill(fd, spare, data, os.fdatasync)
    return spare


def _fill(fd: int, path: Path, data: bytes, flush: Callable[[int], None]) -> None:
    """Write data padded to SPARE_SIZE at the start of fd, flush and close it; on failure
    the file is removed."""
    try:
        view = memoryview(data.ljust(SPARE_SIZE))
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        flush(fd)
    except BaseException:
        os.close(fd)
        unlink(path)
        raise
    os.close(fd)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        unlink(path)
