"""Files that several machines share (a NAS mount): atomic writes and reads that survive
NFS quirks. Every write goes to a temp file that is fsynced and renamed over its name, so a
reader on any machine sees either the old or the new content, never part of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeAlias

DIR_MODE = 0o755
FILE_MODE = 0o644
TEMP_SUFFIX = ".tmp"

# NFS answers ESTALE when the file a path named was replaced between lookup and open;
# reading again resolves the new file.
_STALE_RETRIES = 5
# Files are read and written with os-level calls, not Python file objects: those add an
# isatty ioctl, lseeks and fstats, and each call hands the GIL back and forth with the
# event loop. A final record's write and its claim read take half the system calls.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


# A path as os calls take it: the sweeper passes plain strings (see store.file_sweep).
FilePath: TypeAlias = str | os.PathLike[str]


class Signature(NamedTuple):
    """What tells one version of a file from the next without reading it."""

    inode: int
    size: int
    mtime_ns: int


def make_directory(directory: Path) -> None:
    """Create directory (and parents) readable by other users; leave an existing one alone."""
    if directory.is_dir():
        # Someone else's (or an earlier instance's) directory: leave its mode alone.
        return
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; instances running as other users must read.
    # Some NAS mounts refuse chmod; the directory is still usable by us then.
    with contextlib.suppress(OSError):
        directory.chmod(DIR_MODE)


def write_atomically(
    directory: Path,
    name: str,
    data: bytes,
    suffix: str,
    before_rename: Callable[[], None] | None = None,
    *,
    sync: bool = True,
    written: Path | None = None,
) -> None:
    """Replace directory/(name + suffix) with data, atomically for readers.

    before_rename runs once the data is written, right before the rename; raising there
    writes nothing. sync False skips the fsync (data superseded soon, e.g. progress).
    written: a temp file in directory that already holds data, flushed (a spare of
    store.file_spares); it is renamed instead of writing a new one.
    """
    temp = written if written is not None else write_temp(directory, name, data, sync=sync)
    try:
        if before_rename is not None:
            before_rename()
        os.replace(temp, directory / (name + suffix))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_temp(directory: Path, name: str, data: bytes, *, sync: bool = True) -> Path:
    """A new temp file next to name's file, holding data (a dot name: never read)."""
    temp = directory / f".{name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
    write_new(temp, data, sync=sync)
    return temp


def write_new(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Create path (it must not exist) holding data, flushed to disk unless sync is False."""
    fd = os.open(path, _CREATE_FLAGS, FILE_MODE)
    try:
        try:
            # As for the directory: the umask must not hide records from other instances.
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def read_file(path: FilePath) -> tuple[bytes, Signature] | None:
    """The file's bytes and the signature of exactly those bytes; None when it is missing."""
    for attempt in range(_STALE_RETRIES):
        try:
            return _read_once(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == _STALE_RETRIES - 1:
                raise
    return None


def _read_once(path: FilePath) -> tuple[bytes, Signature]:
    fd = os.open(path, _READ_FLAGS)
    try:
        # fstat of the open file: the signature belongs to exactly these bytes.
        found = signature(os.fstat(fd))
        data = os.read(fd, found.size + 1)
        if len(data) != found.size:  # a short read, or it grew since: read to the end
            chunks = [data]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data, found
    finally:
        os.close(fd)


def stat_signature(path: FilePath) -> Signature | None:
    """The signature of the file at path now; None when it is missing."""
    for attempt in range(_STALE_RETRIES):
        try:
            return signature(os.stat(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == _STALE_RETRIES - 1:
                raise
    return None


def signature(stat: os.stat_result) -> Signature:
    """The signature of a stat result."""
    return Signature(stat.st_ino, stat.st_size, stat.st_mtime_ns)


def unlink(path: FilePath) -> bool:
    """Remove path; False when it was gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        # Another instance removed it first: the outcome we wanted, but not our doing.
        return False
    return True


def is_temp_name(name: str) -> bool:
    """True for the names write_temp makes."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)
