"""Task store in a directory shared by every instance (a NAS mount): one JSON file per task.

Layout: ``<dir>/<task_id>.json`` holds the record; writers create ``.<task_id>.<random>.tmp``
next to it, fsync it and rename it over the record, so a reader on any machine sees either
the old or the new record, never part of one. Names that are not ``<valid id>.json`` are
never read as tasks (temp files start with a dot, which no valid id does).

A ``<valid id>.json`` that does not hold that task's record (a foreign or damaged file)
makes load() and watch() raise StoreError naming the path, rather than pass for "unknown
task"; the sweeper leaves such files alone (with a warning) and the owner's next save
replaces them. The sweeper deletes records the TTL rule no longer keeps (terminal ones
finished more than ttl ago, unfinished ones whose lease ran out more than ttl ago) and temp
files older than temp_max_age (a crashed writer's); instances may sweep at once.

Claims and cancel requests live in ``<dir>/.claims/`` (a name no task file can have):

- ``<task_id>.claim`` holds ``{"owner", "expires_at", "token"}``. A new claim is written to a
  temp file and hard-linked to its name, which fails when the name exists: exactly one of
  several instances creating it at once wins, and nobody ever sees a half-written claim
  (this is NFS's classic exclusive create; where hard links are refused, O_CREAT|O_EXCL is
  used instead and a claim file too young to be complete counts as held). The owner renews
  by writing a temp file and renaming it over the claim. An expired claim is taken over the
  same way, then read back: the taker whose token is there won. Remaining race: two
  instances that both judged the same claim expired can both rename, and if one reads back
  before the other renames, both believe they won; a renewal racing the lease's own expiry
  is the same case. The window is one rename wide and opens only when a lease has already
  run out, i.e. when the owner is dead or frozen. Leases use the wall clock of every
  instance, so their clocks must agree (NTP) to well within a lease.
- ``<task_id>.cancel`` holds ``{"requested_at", "expires_at"}`` (written atomically); it is
  removed by every new claim and by the sweeper once expired or when its task expires.
- ``<task_id>.<name>.mark`` holds ``{"expires_at"}``: a once-marker (mark_once), created
  exclusively like a new claim; swept once expired.

The sweeper also removes claims that expired more than CLAIM_SWEEP_GRACE ago and old temp
files there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from store.base import InvalidTaskId, StoreError, validate_marker_name, validate_task_id
from store.common import Watchers, cancel_ttl, check_claim, check_ttl, is_expired
from store.records import TaskRecord

logger = logging.getLogger(__name__)

DIR_MODE = 0o755
FILE_MODE = 0o644
SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
CLAIMS_DIR = ".claims"
CLAIM_SUFFIX = ".claim"
CANCEL_SUFFIX = ".cancel"
MARK_SUFFIX = ".mark"
# An expired claim is swept only this long after it expired, so a sweep never races the
# owner's own late renewal (which would then recreate it anyway).
CLAIM_SWEEP_GRACE = 60.0
# Where claims must be created with O_EXCL (no hard links), the file exists empty for a
# moment: an unreadable claim this young is taken as held, an older one as garbage.
UNREADABLE_CLAIM_GRACE = 10.0
# Rounds of claim() against claims that vanish between its steps (released or swept).
_CLAIM_ROUNDS = 5
# Errors that mean "this file system has no hard links", not "the link failed".
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})

# NFS answers ESTALE when the file a path named was replaced between lookup and open;
# reading again resolves the new file.
_STALE_RETRIES = 5


class Signature(NamedTuple):
    """What tells one version of a task file from the next without reading it."""

    inode: int
    size: int
    mtime_ns: int


class Claim(NamedTuple):
    """The content of a claim file."""

    owner: str
    expires_at: float
    token: str


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
                await asyncio.to_thread(_make_directory, self._dir)
            except OSError as exc:
                raise StoreError(f"cannot create task directory {self._dir}: {exc}") from exc
            self._check_open()
            self._sweeper = asyncio.create_task(
                self._sweep_forever(), name=f"FileStore sweeper {self._dir}"
            )
            self._started = True

    async def save(self, task: TaskRecord) -> None:
        """Write the record atomically, replacing any earlier version, and wake its watchers."""
        task_id = validate_task_id(task.task_id)
        await self.start()
        data = task.to_json().encode()
        try:
            await asyncio.to_thread(_write_atomically, self._dir, task_id, data)
        except OSError as exc:
            raise StoreError(f"cannot write task {task_id} in {self._dir}: {exc}") from exc
        self._watchers.notify(task_id)

    async def load(self, task_id: str) -> TaskRecord | None:
        """Read the record; None when unknown or expired, StoreError when not a task record."""
        path = self._path(task_id)
        await self.start()
        found = await self._read(path)
        if found is None:
            return None
        record = _parse(task_id, path, found[0])
        return None if is_expired(record, self._ttl, time.time()) else record

    def watch(self, task_id: str) -> AsyncGenerator[TaskRecord, None]:
        """Yield the record now (if any) and on every change seen, until it is terminal."""
        # Checked here, not in the generator, so a bad id fails at the call.
        path = self._path(task_id)
        self._check_open()
        return self._watch(task_id, path)

    async def claim(self, task_id: str, owner: str, lease: float) -> bool:
        """Take or renew the right to run task_id for lease s; False if another owner holds it."""
        validate_task_id(task_id)
        check_claim(owner, lease)
        await self._start_claims()
        try:
            return await asyncio.to_thread(_claim, self._claims, task_id, owner, lease)
        except OSError as exc:
            raise StoreError(f"cannot claim task {task_id} in {self._claims}: {exc}") from exc

    async def release(self, task_id: str, owner: str) -> None:
        """Drop owner's claim on task_id; no effect when another owner holds it."""
        validate_task_id(task_id)
        await self.start()
        try:
            await asyncio.to_thread(_release, self._claims, task_id, owner)
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
                _write_atomically, self._claims, task_id, data.encode(), CANCEL_SUFFIX
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
        expiry = _cancel_expiry(found[0])
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
            return await asyncio.to_thread(_create_exclusively, self._claims, task_id, path, data)
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
            await asyncio.to_thread(_make_directory, self._claims)
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
            return await asyncio.to_thread(_stat_signature, path)
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {exc}") from exc

    async def _read(self, path: Path) -> tuple[bytes, Signature] | None:
        try:
            return await asyncio.to_thread(_read_file, path)
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
                if _is_temp_name(name):
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
                if _is_temp_name(name):
                    removed += self._sweep_temp(path, now)
                elif _task_id_of(name, CLAIM_SUFFIX) is not None:
                    removed += _sweep_claim(path, now)
                elif _task_id_of(name, CANCEL_SUFFIX) is not None:
                    removed += _sweep_cancel(path, now)
                elif _task_id_of(name, MARK_SUFFIX) is not None:
                    removed += _sweep_cancel(path, now)  # the same {"expires_at"} content
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot sweep %s: %s", path, exc)
        return removed

    def _sweep_temp(self, path: Path, now: float) -> int:
        # A writer keeps its temp file for milliseconds; an old one is a crashed writer's.
        if now - path.stat().st_mtime <= self._temp_max_age:
            return 0
        return 1 if _unlink(path) else 0

    def _sweep_task(self, task_id: str, path: Path, now: float) -> int:
        if self._ttl is None:
            return 0
        # A record's finished_at is no later than its file's last write, and an owner writes
        # a lease that has not run out yet, so a file written within ttl cannot hold an
        # expired record: skip reading it (keeps NAS traffic low). A lease that had already
        # run out when written (a reader's doing) is swept a little late; load() hides it.
        if now - path.stat().st_mtime <= self._ttl:
            return 0
        found = _read_file(path)
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
        if _stat_signature(path) != signature:
            return 0
        if not _unlink(path):
            return 0
        # Its cancel request can concern no run any more.
        return 1 + _unlink(self._claims / (task_id + CANCEL_SUFFIX))

    def _path(self, task_id: str) -> Path:
        return self._dir / (validate_task_id(task_id) + SUFFIX)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"file store {self._dir} is closed")


def _make_directory(directory: Path) -> None:
    if directory.is_dir():
        # Someone else's (or an earlier instance's) directory: leave its mode alone.
        return
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; instances running as other users must read.
    # Some NAS mounts refuse chmod; the directory is still usable by us then.
    with contextlib.suppress(OSError):
        directory.chmod(DIR_MODE)


def _write_atomically(directory: Path, task_id: str, data: bytes, suffix: str = SUFFIX) -> None:
    temp = _write_temp(directory, task_id, data)
    try:
        os.replace(temp, directory / (task_id + suffix))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _write_temp(directory: Path, task_id: str, data: bytes) -> Path:
    temp = directory / f".{task_id}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
    _write_new(temp, data)
    return temp


def _write_new(path: Path, data: bytes) -> None:
    """Create path (it must not exist) holding data, flushed to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            # As for the directory: the umask must not hide records from other instances.
            with contextlib.suppress(OSError):
                os.fchmod(file.fileno(), FILE_MODE)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


# --- claims (run in worker threads) --------------------------------------------------------


def _claim(claims: Path, task_id: str, owner: str, lease: float) -> bool:
    path = claims / (task_id + CLAIM_SUFFIX)
    for _ in range(_CLAIM_ROUNDS):
        now = time.time()
        mine = Claim(owner, now + lease, secrets.token_hex(8))
        data = _claim_bytes(mine)
        if _create_exclusively(claims, task_id, path, data):
            _unlink(claims / (task_id + CANCEL_SUFFIX))
            return True
        found = _read_file(path)
        if found is None:
            continue  # released or swept since: try to create it again
        current = _parse_claim(found[0])
        if current is None:
            if now - found[1].mtime_ns / 1e9 <= UNREADABLE_CLAIM_GRACE:
                return False  # being created with O_EXCL right now
        elif current.expires_at > now:
            if current.owner != owner:
                return False
            # A renewal: the cancel request (if any) still stands.
            _write_atomically(claims, task_id, data, CLAIM_SUFFIX)
            return True
        # Expired (or garbage): take it over, unless it changed since we judged it.
        if _stat_signature(path) != found[1]:
            continue
        _write_atomically(claims, task_id, data, CLAIM_SUFFIX)
        confirmed = _read_file(path)
        if confirmed is None or _parse_claim(confirmed[0]) != mine:
            return False  # another instance took it over at the same moment, and won
        _unlink(claims / (task_id + CANCEL_SUFFIX))
        return True
    return False


def _create_exclusively(claims: Path, task_id: str, path: Path, data: bytes) -> bool:
    temp = _write_temp(claims, task_id, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        # Over NFS the link may have been made and only the reply lost (the retried call
        # then finds the name taken): the temp file's link count tells.
        return os.stat(temp).st_nlink == 2
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        try:
            _write_new(path, data)
        except FileExistsError:
            return False
        return True
    else:
        return True
    finally:
        _unlink(temp)


def _release(claims: Path, task_id: str, owner: str) -> None:
    path = claims / (task_id + CLAIM_SUFFIX)
    found = _read_file(path)
    if found is None:
        return
    current = _parse_claim(found[0])
    # Delete only the version we judged, so a takeover just now is not undone.
    if current is not None and current.owner == owner and _stat_signature(path) == found[1]:
        _unlink(path)


def _sweep_claim(path: Path, now: float) -> int:
    found = _read_file(path)
    if found is None:
        return 0
    current = _parse_claim(found[0])
    if current is None:
        logger.warning("sweeper leaves %s alone: not a claim", path)
        return 0
    if now - current.expires_at <= CLAIM_SWEEP_GRACE or _stat_signature(path) != found[1]:
        return 0
    return 1 if _unlink(path) else 0


def _sweep_cancel(path: Path, now: float) -> int:
    found = _read_file(path)
    if found is None:
        return 0
    expiry = _cancel_expiry(found[0])
    if expiry is None:
        logger.warning("sweeper leaves %s alone: not a cancel request", path)
        return 0
    if now <= expiry or _stat_signature(path) != found[1]:
        return 0
    return 1 if _unlink(path) else 0


def _claim_bytes(claim: Claim) -> bytes:
    return json.dumps(claim._asdict()).encode()


def _parse_claim(data: bytes) -> Claim | None:
    try:
        document = json.loads(data)
        claim = Claim(document["owner"], float(document["expires_at"]), document["token"])
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(claim.owner, str) and isinstance(claim.token, str)):
        return None
    return claim


def _cancel_expiry(data: bytes) -> float | None:
    try:
        return float(json.loads(data)["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None


def _read_file(path: Path) -> tuple[bytes, Signature] | None:
    for attempt in range(_STALE_RETRIES):
        try:
            with open(path, "rb") as file:
                # fstat of the open file: the signature belongs to exactly these bytes.
                signature = _signature(os.fstat(file.fileno()))
                return file.read(), signature
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == _STALE_RETRIES - 1:
                raise
    return None


def _stat_signature(path: Path) -> Signature | None:
    for attempt in range(_STALE_RETRIES):
        try:
            return _signature(os.stat(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == _STALE_RETRIES - 1:
                raise
    return None


def _signature(stat: os.stat_result) -> Signature:
    return Signature(stat.st_ino, stat.st_size, stat.st_mtime_ns)


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


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        # Another instance removed it first: the outcome we wanted, but not our doing.
        return False
    return True


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _task_id_of(name: str, suffix: str = SUFFIX) -> str | None:
    if not name.endswith(suffix):
        return None
    try:
        return validate_task_id(name[: -len(suffix)])
    except InvalidTaskId:
        return None
