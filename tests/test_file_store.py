"""FileStore specifics: atomic files under concurrent readers, other instances, sweeping."""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import store.file
import store.file_sweep
from store import FileStore, NodeProgress, StoreError, TaskRecord, TaskStatus
from store.file_spares import SPARE_PREFIX

REPOSITORY = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0  # an upper bound only
HOT = "hot-task"
WRITES = 300


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Callable[..., FileStore]]:
    """Open FileStores on tmp_path/tasks (each one stands for an instance); closed after."""
    opened: list[FileStore] = []

    def _open(**options: Any) -> FileStore:
        options = {"ttl": 60.0, "poll_interval": 0.02, "sweep_interval": 3600, **options}
        opened.append(FileStore(tmp_path / "tasks", **options))
        return opened[-1]

    yield _open
    for file_store in opened:
        await file_store.close()


def record(
    task_id: str = "task-1", status: TaskStatus = TaskStatus.RUNNING, **fields: Any
) -> TaskRecord:
    return TaskRecord(task_id=task_id, status=status, **fields)


def names(directory: Path) -> set[str]:
    """What is in the directory, but the store's own spare files (store.file_spares)."""
    return {path.name for path in directory.iterdir() if not path.name.startswith(SPARE_PREFIX)}


def age(path: Path, seconds: float) -> None:
    """Make the file look last written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


# --- many readers, one writer ------------------------------------------------------------


def hot_record(i: int) -> TaskRecord:
    """Version i of the hot record; its size varies from a few bytes to ~12 KB (several pages)."""
    size, nodes = (i * 7919) % 6_000, i % 13
    # Every other version terminal: those go into spare files (store.file_spares) when they
    # fit, the others are written plainly.
    return record(
        HOT,
        status=TaskStatus.SUCCEEDED if i % 2 else TaskStatus.RUNNING,
        progress={str(n): NodeProgress(max=nodes, value=n) for n in range(nodes)},
        outputs={"check": {"i": i, "nodes": nodes, "pad": "é" * size}},
    )


def check_hot(document: dict[str, Any]) -> int:
    """Raise AssertionError unless the document is one whole version; return its number."""
    check = document["outputs"]["check"]
    i = check["i"]
    assert len(check["pad"]) == (i * 7919) % 6_000
    assert check["nodes"] == i % 13 == len(document["progress"])
    return int(i)


# Runs in a separate interpreter, as another instance would: FileStore.load in a loop until
# the stop file appears; prints "ready" after its first read, then a JSON summary.
READER_PROCESS = """
import asyncio, json, os, sys
from store import FileStore

async def main(directory, task_id, stop):
    reader = FileStore(directory, ttl=None, sweep_interval=3600)
    reads, failures, errors = 0, 0, []
    while True:
        stopping = os.path.exists(stop)
        try:
            loaded = await reader.load(task_id)
            document = json.loads(loaded.to_json())
            check = document["outputs"]["check"]
            i = check["i"]
            assert len(check["pad"]) == (i * 7919) % 6000, "torn pad"
            assert check["nodes"] == i % 13 == len(document["progress"]), "torn progress"
        except Exception as exc:
            failures += 1
            if len(errors) < 10:
                errors.append(repr(exc)[:300])
        reads += 1
        if reads == 1:
            print("ready", flush=True)
        if stopping:
            break
        await asyncio.sleep(0.001)
    await reader.close()
    print(json.dumps({"reads": reads, "failures": failures, "errors": errors}))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_readers_never_see_a_torn_record(
    stores: Callable[..., FileStore], tmp_path: Path
) -> None:
    writer = stores(ttl=None)
    await writer.save(hot_record(0))
    path = writer.directory / f"{HOT}.json"
    done = asyncio.Event()
    stop_threads = threading.Event()
    errors: list[str] = []  # the first few, with the count of all in failures
    failures = collections.Counter[str]()

    def failed(reader: str, exc: Exception) -> None:
        failures[reader] += 1
        if len(errors) < 10:
            errors.append(f"{reader}: {exc!r}"[:300])

    async def store_reader() -> int:
        reader = stores(ttl=None)
        reads = 0
        while not done.is_set():
            try:
                loaded = await reader.load(HOT)
                assert loaded is not None
                check_hot(json.loads(loaded.to_json()))
            except Exception as exc:
                failed("store reader", exc)
            reads += 1
            # A breather: 20 readers flat out would queue every save behind 20 reads, and
            # torn files (if any) are still caught hundreds of times over.
            await asyncio.sleep(0.005)
        return reads

    def thread_reader(counts: list[int]) -> None:
        while not stop_threads.is_set():
            try:
                check_hot(json.loads(path.read_bytes()))
            except Exception as exc:
                failed("thread reader", exc)
            counts.append(1)
            time.sleep(0.001)  # a reader, not a CPU burner: the event loop needs the GIL

    stop_file = tmp_path / "stop"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        READER_PROCESS,
        str(writer.directory),
        HOT,
        str(stop_file),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,  # where `import store` finds this checkout
    )
    assert process.stdout is not None
    try:
        # Writes start only once the other process reads, so the two overlap.
        assert await asyncio.wait_for(process.stdout.readline(), TIMEOUT) == b"ready\n"
        thread_counts: list[list[int]] = [[], []]
        threads = [threading.Thread(target=thread_reader, args=(c,)) for c in thread_counts]
        for thread in threads:
            thread.start()
        readers = [asyncio.create_task(store_reader()) for _ in range(20)]
        try:
            for i in range(1, WRITES + 1):
                await writer.save(hot_record(i))
        finally:
            done.set()
            stop_threads.set()
            stop_file.touch()
            reads = await asyncio.gather(*readers)
            for thread in threads:
                await asyncio.to_thread(thread.join)
        summary = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert (failures, errors) == (collections.Counter(), [])
    assert (summary["failures"], summary["errors"]) == (0, [])
    assert min(reads) > 0 and all(counts for counts in thread_counts) and summary["reads"] > 1
    final = await writer.load(HOT)
    assert final is not None and check_hot(json.loads(final.to_json())) == WRITES
    assert names(writer.directory) == {f"{HOT}.json"}  # no temp file left behind


# --- other instances ---------------------------------------------------------------------


async def test_another_instance_sees_saves_through_watch(stores: Callable[..., FileStore]) -> None:
    owner, other = stores(), stores(poll_interval=0.01)
    watch = other.watch("task-1")
    pending = asyncio.ensure_future(anext(watch))
    await owner.save(record(status=TaskStatus.QUEUED))
    assert (await asyncio.wait_for(pending, TIMEOUT)).status is TaskStatus.QUEUED
    for value in range(1, 4):
        await owner.save(record(progress={"7": NodeProgress(max=3, value=value)}))
        seen = await asyncio.wait_for(anext(watch), TIMEOUT)
        assert seen.progress["7"].value == value
    await owner.save(record(status=TaskStatus.SUCCEEDED, finished_at=time.time()))
    assert (await asyncio.wait_for(anext(watch), TIMEOUT)).status is TaskStatus.SUCCEEDED
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(watch), TIMEOUT)


async def test_saves_of_the_same_store_are_pushed_not_polled(
    stores: Callable[..., FileStore],
) -> None:
    # With an hour between polls, only the in-process wake-up can deliver these in time.
    local = stores(poll_interval=3600)
    await local.save(record(status=TaskStatus.QUEUED))
    watch = local.watch("task-1")
    assert (await asyncio.wait_for(anext(watch), TIMEOUT)).status is TaskStatus.QUEUED
    for value in range(1, 4):
        await local.save(record(progress={"7": NodeProgress(max=3, value=value)}))
        seen = await asyncio.wait_for(anext(watch), TIMEOUT)
        assert seen.progress["7"].value == value
    await watch.aclose()
    assert len(local._watchers) == 0


async def test_identical_rewrite_is_not_a_change(stores: Callable[..., FileStore]) -> None:
    owner = stores()
    same = record()
    await owner.save(same)
    watch = owner.watch("task-1")
    await asyncio.wait_for(anext(watch), TIMEOUT)
    await owner.save(same)
    await owner.save(record(instance="changed"))
    assert (await asyncio.wait_for(anext(watch), TIMEOUT)).instance == "changed"
    await watch.aclose()


# --- files and names ---------------------------------------------------------------------


async def test_temp_and_foreign_files_are_never_tasks(stores: Callable[..., FileStore]) -> None:
    file_store = stores()
    await file_store.start()
    directory = file_store.directory
    # A writer's temp file with a whole record in it, and files of other sorts.
    (directory / ".task-1.0123abcd.tmp").write_text(record().to_json())
    (directory / "task-1.json.tmp").write_text(record().to_json())
    (directory / "notes.txt").write_text("hello")
    (directory / "bad name.json").write_text("{}")
    (directory / ".hidden.json").write_text("{}")
    assert await file_store.load("task-1") is None
    watch = file_store.watch("task-1")
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.1)  # several polls
    assert not pending.done()
    pending.cancel()
    assert await file_store.sweep() == 0  # young temp file, foreign names: all left alone
    assert len(names(directory)) == 5


async def test_saved_file_is_json_at_the_expected_path(stores: Callable[..., FileStore]) -> None:
    file_store = stores()
    await file_store.save(record(instance="i-1"))
    path = file_store.directory / "task-1.json"
    assert json.loads(path.read_text())["instance"] == "i-1"
    assert names(file_store.directory) == {"task-1.json"}


async def test_directory_and_file_modes_ignore_the_umask(
    stores: Callable[..., FileStore], tmp_path: Path
) -> None:
    old = os.umask(0o077)
    try:
        file_store = FileStore(tmp_path / "deep" / "er" / "tasks", ttl=None)
        try:
            await file_store.save(record())
        finally:
            await file_store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(file_store.directory.stat().st_mode) == 0o755
    assert stat.S_IMODE((file_store.directory / "task-1.json").stat().st_mode) == 0o644


async def test_existing_directory_mode_is_left_alone(
    stores: Callable[..., FileStore], tmp_path: Path
) -> None:
    (tmp_path / "tasks").mkdir(mode=0o700)
    await stores().start()
    assert stat.S_IMODE((tmp_path / "tasks").stat().st_mode) == 0o700


async def test_failed_write_keeps_the_old_record_and_no_temp_file(
    stores: Callable[..., FileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    file_store = stores()
    await file_store.save(record(instance="old"))

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="No space left"):
        # A terminal record: the one write that waits for the disk.
        await file_store.save(record(instance="new", status=TaskStatus.SUCCEEDED))
    monkeypatch.undo()
    loaded = await file_store.load("task-1")
    assert loaded is not None and loaded.instance == "old"
    assert names(file_store.directory) == {"task-1.json"}


# --- corrupted and foreign task files ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not a task record"),
        (b"", "is not a task record"),
        (b'{"hello": "world"}', "task_id"),
        (b'{"task_id": "someone-else"}', "holds task 'someone-else'"),
        (b'{"task_id": "task-1", "status": "exploded"}', "status"),
    ],
)
async def test_corrupt_file_raises_store_error_and_is_not_swept(
    stores: Callable[..., FileStore],
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    message: str,
) -> None:
    file_store = stores()
    await file_store.start()
    path = file_store.directory / "task-1.json"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=message) as raised:
        await file_store.load("task-1")
    assert str(path) in str(raised.value)
    with pytest.raises(StoreError, match=message):
        await asyncio.wait_for(anext(file_store.watch("task-1")), TIMEOUT)
    age(path, 10_000)
    with caplog.at_level(logging.WARNING, logger="store.file"):
        assert await file_store.sweep() == 0
    assert path.read_bytes() == content
    assert "sweeper leaves" in caplog.text
    # The owner's next save repairs it.
    repaired = record(instance="owner")
    await file_store.save(repaired)
    assert await file_store.load("task-1") == repaired


# --- sweeping ----------------------------------------------------------------------------


async def save_aged(
    file_store: FileStore, task_id: str, status: TaskStatus, finished_ago: float | None
) -> Path:
    """Save a record that finished finished_ago seconds ago, its file as old as that."""
    now = time.time()
    finished_at = None if finished_ago is None else now - finished_ago
    await file_store.save(record(task_id, status, updated_at=now - 20_000, finished_at=finished_at))
    path = file_store.directory / f"{task_id}.json"
    age(path, 20_000 if finished_ago is None else finished_ago)
    return path


async def test_sweep_removes_expired_records_and_old_temp_files(
    stores: Callable[..., FileStore],
) -> None:
    file_store = stores(ttl=60)
    directory = file_store.directory
    await save_aged(file_store, "old-done", TaskStatus.SUCCEEDED, 120)
    await save_aged(file_store, "old-failed", TaskStatus.FAILED, 61)
    await save_aged(file_store, "old-running", TaskStatus.RUNNING, None)
    await save_aged(file_store, "new-done", TaskStatus.SUCCEEDED, 5)
    # Finished long ago, but written just now: the file's age spares it from a read...
    await file_store.save(record("rewritten", TaskStatus.SUCCEEDED, finished_at=time.time() - 120))
    old_temp, new_temp = directory / ".x.1111.tmp", directory / ".x.2222.tmp"
    old_temp.write_text("{")
    new_temp.write_text("{")
    age(old_temp, 3601)

    assert await file_store.sweep() == 3
    assert names(directory) == {
        "old-running.json",
        "new-done.json",
        "rewritten.json",
        new_temp.name,
    }
    # ...and load() hides it all the same.
    assert await file_store.load("rewritten") is None
    assert await file_store.sweep() == 0


async def test_no_ttl_sweeps_only_temp_files(stores: Callable[..., FileStore]) -> None:
    file_store = stores(ttl=None)
    await save_aged(file_store, "old-done", TaskStatus.SUCCEEDED, 1e6)
    temp = file_store.directory / ".x.1111.tmp"
    temp.write_text("{")
    age(temp, 7200)
    assert await file_store.sweep() == 1
    assert names(file_store.directory) == {"old-done.json"}


async def test_sweep_survives_files_vanishing_under_it(
    stores: Callable[..., FileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    file_store = stores(ttl=60)
    for n in range(6):
        await save_aged(file_store, f"done-{n}", TaskStatus.SUCCEEDED, 120)
    temp = file_store.directory / ".x.1111.tmp"
    temp.write_text("{")
    age(temp, 7200)
    real_read, real_unlink = store.file_sweep.read_file, os.unlink

    def read_after_another_sweeper(path: str) -> Any:
        if os.path.basename(path) == "done-0.json":
            real_unlink(path)  # another instance wins between stat and read
        return real_read(path)

    def unlink_after_another_sweeper(path: str) -> None:
        if os.path.basename(path) in ("done-1.json", temp.name):
            real_unlink(path)  # another instance wins between read and unlink
        real_unlink(path)

    monkeypatch.setattr(store.file_sweep, "read_file", read_after_another_sweeper)
    monkeypatch.setattr(os, "unlink", unlink_after_another_sweeper)
    assert await file_store.sweep() == 4
    monkeypatch.undo()
    assert names(file_store.directory) == set()


async def test_sweep_keeps_a_claim_when_its_task_file_cannot_be_checked(
    stores: Callable[..., FileStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A long-expired claim goes only with its task; a NAS error while checking for the task
    # must not read as "gone", or the task's fencing token would go with it.
    file_store = stores(ttl=60)
    assert await file_store.claim("kept", "a", 30)
    await file_store.save(record("kept"))
    claim = file_store.directory / ".claims" / "kept.claim"
    claim.write_text(json.dumps({"owner": "a", "token": 7, "nonce": "n", "expires_at": 1.0}))
    task_file = str(file_store.directory / "kept.json")
    real_stat = os.stat

    def failing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == task_file:
            raise OSError(errno.EIO, "Input/output error", task_file)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    with caplog.at_level(logging.WARNING, logger="store.file"):
        assert await file_store.sweep() == 0
    monkeypatch.undo()
    assert claim.exists()
    assert "cannot sweep" in caplog.text


async def test_two_instances_sweeping_at_once(stores: Callable[..., FileStore]) -> None:
    first, second = stores(ttl=60), stores(ttl=60)
    for n in range(100):
        await save_aged(first, f"done-{n}", TaskStatus.SUCCEEDED, 120)
    removed = await asyncio.gather(first.sweep(), second.sweep(), first.sweep())
    assert sum(removed) == 100
    assert names(first.directory) == set()


async def test_sweep_keeps_a_record_rewritten_while_it_judged_it(
    stores: Callable[..., FileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    file_store = stores(ttl=60)
    path = await save_aged(file_store, "task-1", TaskStatus.FAILED, 120)
    real_read = store.file_sweep.read_file
    fresh = record(instance="retried").to_json().encode()

    def read_then_rewritten(read_path: str) -> Any:
        found = real_read(read_path)
        store.file.write_atomically(Path(read_path).parent, "task-1", fresh, ".json")
        return found

    monkeypatch.setattr(store.file_sweep, "read_file", read_then_rewritten)
    assert await file_store.sweep() == 0
    assert path.read_bytes() == fresh


async def test_background_sweeper_runs_and_stops_on_close(
    stores: Callable[..., FileStore],
) -> None:
    file_store = stores(ttl=60, sweep_interval=0.02)
    path = await save_aged(file_store, "old-done", TaskStatus.SUCCEEDED, 120)
    await wait_until(lambda: not path.exists())
    sweeper = file_store._sweeper
    assert sweeper is not None
    await file_store.close()
    assert sweeper.done()
    path = await save_aged(stores(ttl=None), "again", TaskStatus.SUCCEEDED, 120)
    await asyncio.sleep(0.1)  # five sweep intervals of the closed store
    assert path.exists()


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_constructor_does_no_io(tmp_path: Path) -> None:
    FileStore(tmp_path / "never", ttl=None)
    assert not (tmp_path / "never").exists()


async def test_only_terminal_records_wait_for_the_disk(
    stores: Callable[..., FileStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    file_store = stores()
    synced: list[int] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def counting(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            # Spares are made (and flushed) ahead of time, away from the records' path.
            made = real is real_fsync and f"/{SPARE_PREFIX}" in os.readlink(f"/proc/self/fd/{fd}")
            if not made:
                synced.append(fd)
            real(fd)

        return sync

    token = await file_store.claim("task-1", "me", 30)
    assert token is not None
    monkeypatch.setattr(os, "fsync", counting(real_fsync))
    monkeypatch.setattr(os, "fdatasync", counting(real_fdatasync))
    await file_store.save(record(status=TaskStatus.QUEUED), token=token)
    await file_store.save(record(status=TaskStatus.RUNNING), token=token)
    assert synced == []  # progress is superseded soon; a crash ends the lease anyway
    await file_store.save(record(status=TaskStatus.SUCCEEDED), token=token)
    assert len(synced) == 1
    loaded = await file_store.load("task-1")
    assert loaded is not None and loaded.status is TaskStatus.SUCCEEDED
