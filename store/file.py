"""Task store in a directory shared by every instance (a NAS mount): one JSON file per task.

Layout: ``<dir>/<task_id>.json`` holds the record; writers create ``.<task_id>.<random>.tmp``
next to it, fsync it (terminal records only: see save) and rename it over the record, so
a reader on any machine sees either the old or the new record, never part of one. Names
that are not ``<valid id>.json`` are never read as tasks (temp files start with a dot,
which no valid id does).

A ``<valid id>.json`` that does not hold that task's record (a foreign or damaged file)
makes load() and watch() raise StoreError naming the path, rather than pass for "unknown
task"; the sweeper leaves such files alone (with a warning) and the owner's next save
replaces them. The sweeper deletes records the TTL rule no longer keeps (terminal ones
finished more than ttl ago, unfinished ones whose lease ran out more than ttl ago) and temp
files older than temp_max_age (a crashed writer's); instances may sweep at once.

Claims, their fencing tokens and cancel requests live in ``<dir>/.claims/`` (a name no
task file can have; store.file_claims). The sweeper also removes old temp files there,
expired cancel requests, and the claims of tasks it swept. ``<task_id>.<name>.mark``
holds ``{"expires_at"}``: a once-marker (mark_once), created exclusively like a new claim
and swept once expired.

Fencing, and what NFS can and cannot promise: a save carrying a claim token writes its temp
file, then reads the task's claim and renames the record into place only while the token is
current. NFS promises atomic rename, exclusive create and close-to-open consistency (a file
opened after another client closed or renamed it shows that client's bytes); it offers no
compare-and-swap on content and no dependable lock. So the token check and the rename are
two steps: an owner frozen exactly between them for a whole lease, while another instance
takes the task over, lands one stale write on waking. Claim take-overs themselves are
serialised per claim version by exclusively created markers (store.file_claims, with the
details). On Redis, both are one atomic script.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path

from pydantic import ValidationError

from store import file_claims
from store.base import InvalidTaskId, StoreError, validate_marker_name, validate_task_id
from store.common import Watchers, cancel_ttl, check_claim, check_ttl, is_expired
from store.file_claims import CANCEL_SUFFIX, CLAIM_SUFFIX, CLAIMS_DIR
from store.file_io import (
    Signature,
    is_temp_name,
    make_directory,
    read_file,
    stat_signature,
    unlink,
    write_atomically,
)
from store.records import TaskRecord

logger = logging.getLogger(__name__)

SUFFIX = ".json"
MARK_SUFFIX = ".mark"


class FileStore:
    """Task records as JSON files in a directory that many instances share."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        ttl: float | None,
        poll_interval: float = 0.1,
        sweep_interval: float = 60.0,
        temp_max_age: float = 3600.0,
    ) -> None:
        if poll_interval <= 0 or sweep_interval <= 0 or temp_max_age <= 0:
            raise ValueError("poll_interval, sweep_interval and temp_max_age must be > 0")
        self._dir = Path(directory)
        self._ttl = check_ttl(ttl)
        self._poll_interval = poll_interval
        self._sweep_interval = sweep_interval
        self._temp_max_age = temp_max_age
        self._claims = self._dir / CLAIMS_DIR
        self._claims_ready = False
        self._watchers = Watchers()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        # Set on close: a sweep running in a worker thread cannot be cancelled, so it
        # checks this between files instead.
        self._stopping = threading.Event()

    @property
    def directory(self) -> Path:
        """The directory holding the task files."""
        return self._dir

    async def start(self) -> None:
        """Create the directory and start the sweeper; idempotent, and implied by first use."""
        self._check_open()
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            try:
                await asyncio.to_thread(make_directory, self._dir)
            except OSError as exc:
                raise StoreError(f"cannot create task directory {self._dir}: {exc}") from exc
            self._check_open()
            self._sweeper = asyncio.create_task(
                self._sweep_forever(), name=f"FileStore sweeper {self._dir}"
            )
            self._started = True

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Write the record atomically (fenced by token), and wake its watchers."""
        task_id = validate_task_id(task.task_id)
        data = task.to_json().encode()
        # Only terminal records wait for the disk: they are the answer. Progress records are
        # superseded within the flush interval and a crash ends the run's lease anyway.
        sync = task.status.is_terminal
        try:
            if token is None:
                await self.start()
                await asyncio.to_thread(
                    write_atomically, self._dir, task_id, data, SUFFIX, sync=sync
                )
            else:
                await self._start_claims()
                await asyncio.to_thread(
                    file_claims.write_fenced,
                    self._dir,
                    self._claims,
                    task_id,
                    data,
                    SUFFIX,
                    token,
                    sync=sync,
                )
        except OSError as exc:
            raise StoreError(f"cannot write task {task_id} in {self._dir}: {exc}") from exc
        self._watchers.notify(task_id)

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record; None when unknown or expired, StoreError when not a task record."""
        found = await self.load_versioned(task_id)
        return None if found is None else found[0]

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, Signature] | None:
        """load(), with the file's signature: version() answers the same until it changes."""
        path = self._path(task_id)
        await self.start()
        found = await self._read(path)
        if found is None:
            return None
        record = _parse(task_id, path, found[0])
        return None if is_expired(record, self._ttl, time.time()) else (record, found[1])

    async def version(self, task_id: str) -> Signature | None:
        """The record file's signature (one stat, no read); None when there is none."""
        path = self._path(task_id)
        await self.start()
        return await self._stat(path)

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and on every change seen, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        path = self._path(task_id)
        self._check_open()
        return self._watch(task_id, path)

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for lease s: a new token, or None if held by another."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        await self._start_claims()
        try:
            return await asyncio.to_thread(file_claims.claim, self._claims, task_id, owner, lease)
        except OSError as exc:
            raise StoreError(f"cannot claim task {task_id} in {self._claims}: {exc}") from exc

    async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
        """Extend the claim holding token; False once a newer claim superseded it."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        await self._start_claims()
        try:
            return await asyncio.to_thread(
                file_claims.renew, self._claims, task_id, owner, token, lease
            )
        except OSError as exc:
            raise StoreError(f"cannot renew task {task_id} in {self._claims}: {exc}") from exc

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token; no effect once a newer claim superseded it."""
        validate_task_id(task_id)
        await self.start()
        try:
            await asyncio.to_thread(file_claims.release, self._claims, task_id, token)
        except OSError as exc:
            raise StoreError(f"cannot release task {task_id} in {self._claims}: {exc}") from exc

    async def request_cancel(self, task_id: str) -> None:
        """Ask the runner of task_id to interrupt it; the request is kept for the task TTL."""
        validate_task_id(task_id)
        await self._start_claims()
        now = time.time()
        data = json.dumps({"requested_at": now, "expires_at": now + cancel_ttl(self._ttl)})
        try:
            await asyncio.to_thread(
                write_atomically, self._claims, task_id, data.encode(), CANCEL_SUFFIX
            )
        except OSError as exc:
            raise StoreError(f"cannot ask to cancel {task_id} in {self._claims}: {exc}") from exc

    async def cancel_requested(self, task_id: str) -> bool:
        """True when an interrupt of task_id was requested since it was last claimed anew."""
        validate_task_id(task_id)
        await self.start()
        path = self._claims / (task_id + CANCEL_SUFFIX)
        found = await self._read(path)
        if found is None:
            return False
        expiry = file_claims.cancel_expiry(found[0])
        # A marker we cannot read still says someone asked: err on the side of stopping.
        return expiry is None or expiry > time.time()

    async def mark_once(self, task_id: str, name: str) -> bool:
        """Create marker name of task_id exclusively; True when this call created it."""
        validate_task_id(task_id)
        validate_marker_name(name)
        await self._start_claims()
        data = json.dumps({"expires_at": time.time() + cancel_ttl(self._ttl)}).encode()
        path = self._claims / f"{task_id}.{name}{MARK_SUFFIX}"
        try:
            return await asyncio.to_thread(
                file_claims.create_exclusively, self._claims, task_id, path, data
            )
        except OSError as exc:
            raise StoreError(f"cannot mark task {task_id} in {self._claims}: {exc}") from exc

    async def sweep(self) -> int:
        """Delete expired tasks, claims, cancel requests and stale temp files once; count them."""
        self._check_open()
        return await asyncio.to_thread(self._sweep_directory, time.time())

    async def close(self) -> None:
        """Stop the sweeper; running watch() iterators raise StoreError (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._watchers.notify_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
            # wait() rather than await: it does not re-raise the sweeper's CancelledError.
            await asyncio.wait([self._sweeper])

    async def _start_claims(self) -> None:
        await self.start()
        if self._claims_ready:
            return
        try:
            await asyncio.to_thread(make_directory, self._claims)
        except OSError as exc:
            raise StoreError(f"cannot create claims directory {self._claims}: {exc}") from exc
        self._claims_ready = True

    async def _watch(self, task_id: str, path: Path) -> AsyncGenerator[TaskRecord, None]:
        await self.start()
        loop = asyncio.get_running_loop()
        event = self._watchers.add(task_id)
        try:
            seen_signature: Signature | None = None
            seen_data: bytes | None = None
            while True:
                # Cleared before looking, so a save by this store while we look (or while
                # the consumer holds the previous record) still wakes us at once.
                event.clear()
                self._check_open()
                signature = await self._stat(path)
                if signature is not None and signature != seen_signature:
                    found = await self._read(path)
                    if found is not None:
                        data, seen_signature = found
                        # Another instance may rewrite an identical record: not a change.
                        if data != seen_data:
                            seen_data = data
                            record = _parse(task_id, path, data)
                            if not is_expired(record, self._ttl, time.time()):
                                yield record
                                if record.status.is_terminal:
                                    return
                # Saves by other instances are only seen by polling; a timer on the same
                # event (rather than wait_for) keeps the wait free of extra tasks.
                timer = loop.call_later(self._poll_interval, event.set)
                try:
                    await event.wait()
                finally:
                    timer.cancel()
        finally:
            self._watchers.remove(task_id, event)

    async def _stat(self, path: Path) -> Signature | None:
        try:
            return await asyncio.to_thread(stat_signature, path)
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {exc}") from exc

    async def _read(self, path: Path) -> tuple[bytes, Signature] | None:
        try:
            return await asyncio.to_thread(read_file, path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    async def _sweep_forever(self) -> None:
        while True:
            # Jitter so that instances started together do not all sweep at once.
            await asyncio.sleep(self._sweep_interval * random.uniform(0.8, 1.2))
            try:
                removed = await asyncio.to_thread(self._sweep_directory, time.time())
            except Exception:
                # A NAS hiccup must not end sweeping for the life of the instance.
                logger.exception("sweeping %s failed", self._dir)
            else:
                if removed:
                    logger.debug("swept %d files from %s", removed, self._dir)

    def _sweep_directory(self, now: float) -> int:
        try:
            with os.scandir(self._dir) as scan:
                names = [entry.name for entry in scan]
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            if self._stopping.is_set():
                break
            path = self._dir / name
            try:
                if is_temp_name(name):
                    removed += self._sweep_temp(path, now)
                elif (task_id := _task_id_of(name)) is not None:
                    removed += self._sweep_task(task_id, path, now)
            except FileNotFoundError:
                # Another instance swept (or a writer replaced) it first.
                continue
            except OSError as exc:
                logger.warning("cannot sweep %s: %s", path, exc)
        return removed + self._sweep_claims(now)

    def _sweep_claims(self, now: float) -> int:
        try:
            with os.scandir(self._claims) as scan:
                names = [entry.name for entry in scan]
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            if self._stopping.is_set():
                break
            path = self._claims / name
            try:
                if is_temp_name(name) or file_claims.is_marker_name(name):
                    removed += self._sweep_temp(path, now)
                elif (task_id := _task_id_of(name, CLAIM_SUFFIX)) is not None:
                    kept = (self._dir / (task_id + SUFFIX)).exists()
                    removed += file_claims.sweep_claim(path, now, kept)
                elif _task_id_of(name, CANCEL_SUFFIX) is not None:
                    removed += file_claims.sweep_cancel(path, now)
                elif _task_id_of(name, MARK_SUFFIX) is not None:
                    # A once-marker has the same {"expires_at"} content as a cancel request.
                    removed += file_claims.sweep_cancel(path, now)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot sweep %s: %s", path, exc)
        return removed

    def _sweep_temp(self, path: Path, now: float) -> int:
        # A writer keeps its temp file for milliseconds; an old one is a crashed writer's.
        if now - path.stat().st_mtime <= self._temp_max_age:
            return 0
        return 1 if unlink(path) else 0

    def _sweep_task(self, task_id: str, path: Path, now: float) -> int:
        if self._ttl is None:
            return 0
        # A record's finished_at is no later than its file's last write, and an owner writes
        # a lease that has not run out yet, so a file written within ttl cannot hold an
        # expired record: skip reading it (keeps NAS traffic low). A lease that had already
        # run out when written (a reader's doing) is swept a little late; load() hides it.
        if now - path.stat().st_mtime <= self._ttl:
            return 0
        found = read_file(path)
        if found is None:
            return 0
        data, signature = found
        try:
            record = _parse(task_id, path, data)
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
        return 1 + unlink(self._claims / (task_id + CANCEL_SUFFIX))

    def _path(self, task_id: str) -> Path:
        return self._dir / (validate_task_id(task_id) + SUFFIX)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"file store {self._dir} is closed")


def _parse(task_id: str, path: Path, data: bytes) -> TaskRecord:
    try:
        record = TaskRecord.from_json(data)
    except ValidationError as exc:
        raise StoreError(
            f"{path} is not a task record ({exc.error_count()} errors: {_first_error(exc)})"
        ) from exc
    if record.task_id != task_id:
        raise StoreError(f"{path} holds task {record.task_id!r}, not {task_id!r}")
    return record


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"


def _task_id_of(name: str, suffix: str = SUFFIX) -> str | None:
    if not name.endswith(suffix):
        return None
    try:
        return validate_task_id(name[: -len(suffix)])
    except InvalidTaskId:
        return None
