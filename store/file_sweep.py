"""The file store's sweeper: deletes what the TTL rule no longer keeps (see store.file).

Several instances may sweep the same directory at once: every deletion tolerates a file
another one removed (or a writer replaced) first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from store.base import InvalidTaskId, StoreError, validate_task_id
from store.common import is_expired
from store.file_claims import (
    CANCEL_SUFFIX,
    CLAIM_SUFFIX,
    cancel_expiry,
    is_marker_name,
    parse_claim,
)
from store.file_io import FilePath, is_temp_name, read_file, stat_signature, unlink
from store.file_watch import parse_record

logger = logging.getLogger("store.file")

SUFFIX = ".json"
MARK_SUFFIX = ".mark"
# An expired claim (of a task whose record is gone) is swept only this long after it
# expired, so a sweep never races the owner's own late renewal.
CLAIM_SWEEP_GRACE = 60.0


class DirectorySweeper:
    """Sweeps one file store's directory and its claims directory."""

    def __init__(
        self, directory: Path, claims: Path, *, ttl: float | None, temp_max_age: float
    ) -> None:
        self._dir = directory
        self._claims = claims
        self._ttl = ttl
        self._temp_max_age = temp_max_age
        # Set on close: a sweep running in a worker thread cannot be cancelled, so it
        # checks this between files instead.
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Make a sweep running in a worker thread stop at its next file."""
        self._stopping.set()

    async def run(self, interval: float) -> None:
        """Sweep every interval s (with jitter) until cancelled; failures are logged."""
        while True:
            # Jitter so that instances started together do not all sweep at once.
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                removed = await asyncio.to_thread(self.sweep, time.time())
            except Exception:
                # A NAS hiccup must not end sweeping for the life of the instance.
                logger.exception("sweeping %s failed", self._dir)
            else:
                if removed:
                    logger.debug("swept %d files from %s", removed, self._dir)

    def sweep(self, now: float) -> int:
        """Delete expired tasks, claims, cancel requests and stale temp files; count them."""

        def task_file(name: str, path: str) -> int:
            if is_temp_name(name):
                return self._sweep_temp(path, now)
            if (task_id := task_id_of(name)) is not None:
                return self._sweep_task(task_id, path, now)
            return 0

        def claims_file(name: str, path: str) -> int:
            if is_temp_name(name) or is_marker_name(name):
                return self._sweep_temp(path, now)
            if (task_id := task_id_of(name, CLAIM_SUFFIX)) is not None:
                # An I/O error (a NAS hiccup) raises here: it must not read as "gone".
                kept = stat_signature(os.path.join(self._dir, task_id + SUFFIX)) is not None
                return sweep_claim(path, now, kept)
            # A once-marker has the same {"expires_at"} content as a cancel request.
            if any(task_id_of(name, suffix) is not None for suffix in (CANCEL_SUFFIX, MARK_SUFFIX)):
                return sweep_cancel(path, now)
            return 0

        return self._sweep_each(self._dir, task_file) + self._sweep_each(self._claims, claims_file)

    def _sweep_each(self, directory: Path, sweep_one: Callable[[str, str], int]) -> int:
        """sweep_one every file in directory (until stopped); count what it removed."""
        # Plain string paths: a pathlib.Path interns each name it is made of (Python 3.11),
        # which grew the interpreter's table of interned strings for good by several MiB
        # after one sweep of a directory of 100,000 tasks.
        try:
            with os.scandir(directory) as scan:
                names = [entry.name for entry in scan]
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            if self._stopping.is_set():
                break
            path = os.path.join(directory, name)
            try:
                removed += sweep_one(name, path)
            except FileNotFoundError:
                # Another instance swept (or a writer replaced) it first.
                continue
            except OSError as exc:
                logger.warning("cannot sweep %s: %s", path, exc)
        return removed

    def _sweep_temp(self, path: str, now: float) -> int:
        # A writer keeps its temp file for milliseconds; an old one is a crashed writer's.
        if now - os.stat(path).st_mtime <= self._temp_max_age:
            return 0
        return 1 if unlink(path) else 0

    def _sweep_task(self, task_id: str, path: str, now: float) -> int:
        if self._ttl is None:
            return 0
        # A record's finished_at is no later than its file's last write, and an owner writes
        # a lease that has not run out yet, so a file written within ttl cannot hold an
        # expired record: skip reading it (keeps NAS traffic low). A lease that had already
        # run out when written (a reader's doing) is swept a little late; load() hides it.
        if now - os.stat(path).st_mtime <= self._ttl:
            return 0
        found = read_file(path)
        if found is None:
            return 0
        data, signature = found
        try:
            record = parse_record(task_id, path, data)
        except StoreError as exc:
            # Not ours to delete: leave foreign files for a human.
            logger.warning("sweeper leaves %s alone: %s", path, exc)
            return 0
        if not is_expired(record, self._ttl, now):
            return 0
        # Delete only the version we judged; a newer write has a new inode.
        if stat_signature(path) != signature:
            return 0
        if not unlink(path):
            return 0
        # Its cancel request can concern no run any more.
        return 1 + unlink(os.path.join(self._claims, task_id + CANCEL_SUFFIX))


def task_id_of(name: str, suffix: str = SUFFIX) -> str | None:
    """The task id of a file name ending in suffix; None for any other name."""
    if not name.endswith(suffix):
        return None
    try:
        return validate_task_id(name[: -len(suffix)])
    except InvalidTaskId:
        return None


def sweep_claim(path: FilePath, now: float, task_kept: bool) -> int:
    """Remove a claim long expired whose task is gone (the fence goes with the task)."""
    if task_kept:
        return 0
    return _remove_expired(path, now, _claim_expiry, CLAIM_SWEEP_GRACE, "a claim")


def sweep_cancel(path: FilePath, now: float) -> int:
    """Remove an expired cancel request; 1 when removed."""
    return _remove_expired(path, now, cancel_expiry, 0.0, "a cancel request")


def _claim_expiry(data: bytes) -> float | None:
    claim = parse_claim(data)
    return None if claim is None else claim.expires_at


def _remove_expired(
    path: FilePath, now: float, expiry_of: Callable[[bytes], float | None], grace: float, kind: str
) -> int:
    """Remove the file once it expired more than grace s ago and nobody changed it since."""
    found = read_file(path)
    if found is None:
        return 0
    expiry = expiry_of(found[0])
    if expiry is None:
        logger.warning("sweeper leaves %s alone: not %s", path, kind)
        return 0
    if now - expiry <= grace or stat_signature(path) != found[1]:
        return 0
    return 1 if unlink(path) else 0
