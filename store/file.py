"""Task store in a directory shared by every instance (a NAS mount): one JSON file per task.

Layout: ``<dir>/<task_id>.json`` holds the record; writers create ``.<task_id>.<random>.tmp``
next to it, fsync it (terminal records only: see save) and rename it over the record, so
a reader on any machine sees either the old or the new record, never part of one. Terminal
records go into spare files made ahead of time when one is ready (store.file_spares), so
such a record may end in spaces. Names
that are not ``<valid id>.json`` are never read as tasks (temp files start with a dot,
which no valid id does).

A ``<valid id>.json`` that does not hold that task's record (a foreign or damaged file)
makes load() and watch() raise StoreError naming the path, rather than pass for "unknown
task"; the sweeper leaves such files alone (with a warning) and the owner's next save
replaces them. The sweeper deletes records the TTL rule no longer keeps (terminal ones
finished more than ttl ago, unfinished ones whose lease ran out more than ttl ago) and temp
files older than temp_max_age (a crashed writer's); instances may sweep at once.
The sweeper is store.file_sweep; parsing, reads and the polling watch are store.file_watch.

Claims, their fencing tokens and cancel requests live in ``<dir>/.claims/`` (a name no
task file can have; store.file_claims). The sweeper also removes old temp files there,
expired cancel requests, and the claims of tasks it swept. ``<task_id>.<name>.mark``
holds ``{"expires_at"}``: a once-marker (mark_once), created exclusively like a new claim
and swept once expired.

Fencing: a save carrying a claim token renames its record into place only while the token
is current, and a final record so written ends the claim (store.file_fenced). NFS has no
compare-and-swap, so the check and the rename are two steps; store.file_claims says what
that window allows. On Redis, both are one atomic script.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path

from store import file_claims
from store.base import StoreError, validate_marker_name, validate_task_id
from store.common import EndedClaims, Watchers, cancel_ttl, check_claim, check_ttl, is_expired
from store.file_claims import CANCEL_SUFFIX, CLAIMS_DIR
from store.file_fenced import write_fenced
from store.file_io import Signature, make_directory, write_atomically
from store.file_spares import SpareFiles, write_spare
from store.file_sweep import MARK_SUFFIX, SUFFIX, DirectorySweeper
from store.file_watch import parse_record, read_path, stat_path, watch_file
from store.records import TaskRecord

__all__ = ["MARK_SUFFIX", "SUFFIX", "FileStore"]


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
        self._claims = self._dir / CLAIMS_DIR
        self._sweeping = DirectorySweeper(
            self._dir, self._claims, ttl=self._ttl, temp_max_age=temp_max_age
        )
        self._claims_ready = False
        self._watchers = Watchers()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        # Files for terminal records, made ahead of time (store.file_spares).
        self._spares = SpareFiles(self._dir, max_age=temp_max_age / 2)
        self._ended_claims = EndedClaims()

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
                self._sweeping.run(self._sweep_interval), name=f"FileStore sweeper {self._dir}"
            )
            self._spares.refill()
            self._started = True

    async def save(self, task: TaskRecord, *, token: int | None = None) -> None:
        """Write the record atomically (fenced by token), and wake its watchers."""
        task_id = validate_task_id(task.task_id)
        data = task.to_json().encode()
        # Only terminal records wait for the disk: they are the answer. Progress records are
        # superseded within the flush interval and a crash ends the run's lease anyway.
        sync = task.status.is_terminal
        try:
            with self._spares.writing():
                after_claim = await self._write(task_id, data, sync, token)
        except OSError as exc:
            raise StoreError(f"cannot write task {task_id} in {self._dir}: {exc}") from exc
        if after_claim and token is not None and task.status.is_terminal:
            self._ended_claims.ended(task_id, token)
        self._watchers.notify(task_id)

    async def _write(self, task_id: str, data: bytes, sync: bool, token: int | None) -> bool:
        # Only terminal records wait for the disk, written over a spare when one is ready.
        if token is None:
            await self.start()
            spare = self._spares.take() if sync else None
            await asyncio.to_thread(_write_plain, self._dir, task_id, data, sync, spare)
            return False
        await self._start_claims()
        spare = self._spares.take() if sync else None
        return await asyncio.to_thread(
            write_fenced,
            self._dir,
            self._claims,
            task_id,
            data,
            SUFFIX,
            token,
            sync=sync,
            spare=spare,
        )

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record; None when unknown or expired, StoreError when not a task record."""
        found = await self.load_versioned(task_id)
        return None if found is None else found[0]

    async def load_versioned(self, task_id: str) -> tuple[TaskRecord, Signature] | None:
        """load(), with the file's signature: version() answers the same until it changes."""
        path = self._path(task_id)
        await self.start()
        found = await read_path(path)
        if found is None:
            return None
        record = parse_record(task_id, path, found[0])
        return None if is_expired(record, self._ttl, time.time()) else (record, found[1])

    async def version(self, task_id: str) -> Signature | None:
        """The record file's signature (one stat, no read); None when there is none."""
        path = self._path(task_id)
        await self.start()
        return await stat_path(path)

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and on every change seen, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        path = self._path(task_id)
        self._check_open()
        return watch_file(
            task_id,
            path,
            self._watchers,
            ttl=self._ttl,
            poll_interval=self._poll_interval,
            start=self.start,
            check_open=self._check_open,
        )

    async def claim(self, task_id: str, owner: str, lease: float) -> int | None:
        """Take the right to run task_id for lease s: a new token, or None if held by another."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        await self._start_claims()
        self._ended_claims.changed(task_id)
        record = self._path(task_id)
        try:
            return await asyncio.to_thread(
                file_claims.claim, self._claims, task_id, owner, lease, record
            )
        except OSError as exc:
            raise StoreError(f"cannot claim task {task_id} in {self._claims}: {exc}") from exc

    async def renew(self, task_id: str, owner: str, token: int, lease: float) -> bool:
        """Extend the claim holding token; False once a newer claim superseded it."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        await self._start_claims()
        self._ended_claims.changed(task_id)
        try:
            return await asyncio.to_thread(
                file_claims.renew, self._claims, task_id, owner, token, lease
            )
        except OSError as exc:
            raise StoreError(f"cannot renew task {task_id} in {self._claims}: {exc}") from exc

    async def release(self, task_id: str, token: int) -> None:
        """End the claim holding token; no effect once a newer claim superseded it."""
        validate_task_id(task_id)
        if self._ended_claims.release(task_id, token):
            return  # its final record, written after the claim, ended it (store.file_fenced)
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
        found = await read_path(path)
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
        return await asyncio.to_thread(self._sweeping.sweep, time.time())

    async def close(self) -> None:
        """Stop the sweeper; running watch() iterators raise StoreError (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._sweeping.stop()
        self._watchers.notify_all()
        await self._spares.close()
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

    def _path(self, task_id: str) -> Path:
        return self._dir / (validate_task_id(task_id) + SUFFIX)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"file store {self._dir} is closed")


def _write_plain(
    directory: Path, task_id: str, data: bytes, sync: bool, spare: Path | None
) -> None:
    written = write_spare(spare, data)
    write_atomically(directory, task_id, data, SUFFIX, sync=sync, written=written)
