"""Reads a file that is still in the kernel's caches without blocking, so the event loop
can take a just-written output at once instead of handing the read to a thread.

A thread hand-off costs a sync run about 0.3 ms on a busy machine: the worker has to be
scheduled and to take the GIL while the loop is handling ComfyUI's last messages. An
output ComfyUI has just written is in the page cache, and its path in the dentry cache, so
the read can be done on the loop with two guarantees from the kernel rather than a guess:

- `openat2` with RESOLVE_CACHED fails with EAGAIN instead of doing any I/O or network
  revalidation for the lookup (an NFS or FUSE directory always does), and with
  RESOLVE_BENEATH refuses a path that leaves the directory (`..`, absolute or escaping
  symlinks), the check `OutputFiles.in_output_dir` makes on the slow path;
- `preadv` with RWF_NOWAIT fails with EAGAIN instead of waiting for the disk.

It is used only on a local disk file system (the type is checked once, on a thread): on a
network or FUSE one, opening a file can wait for a server even when the lookup was cached.
Anything else (not Linux, an older kernel without openat2, a file not cached, too large,
not a regular file, any error) gives None, and the caller reads on a thread as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading

# From linux/openat2.h. The syscall number is 437 on every architecture but alpha.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_RESOLVE_CACHED = 0x20
_O_PATH = getattr(os, "O_PATH", 0)
# statfs(2) f_type of the file systems on local disks (or memory), from linux/magic.h.
LOCAL_FILESYSTEMS = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0xF2F52010,  # f2fs
        0x2FC12FC1,  # zfs
        0x01021994,  # tmpfs
        0x794C7630,  # overlayfs (a container's own disk)
    }
)


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


class CachedReader:
    """Reads files under one directory from the kernel's caches only (see module doc)."""

    def __init__(self, directory: str, *, max_bytes: int = 4 << 20) -> None:
        self._directory = directory
        # Copying a large file would hold the loop longer than the hand-off it saves.
        self.max_bytes = max_bytes
        self._libc = _load_libc()
        self._lock = threading.Lock()
        self._checked = False
        self._dir_fd: int | None = None

    @property
    def ready(self) -> bool:
        """Whether reads are tried at all (prepare() found a local file system)."""
        return self._dir_fd is not None

    def prepare(self) -> None:
        """Check the directory's file system and open it; blocking, so call it on a thread.

        Does nothing once done; a directory that is not there yet is checked again on the
        next call (ComfyUI makes its output directory when it starts).
        """
        if self._checked or self._libc is None:
            return
        try:
            kind = _filesystem_type(self._libc, self._directory)
            dir_fd = os.open(self._directory, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        # The lock is held for the assignments only, never across I/O: close() takes it on
        # the event loop.
        with self._lock:
            taken = not self._checked and kind in LOCAL_FILESYSTEMS
            if taken:
                self._dir_fd = dir_fd
            self._checked = True
        if not taken:  # not local, closed meanwhile, or prepared by another thread
            os.close(dir_fd)

    def close(self) -> None:
        """Stop reading this way and close the directory."""
        with self._lock:
            dir_fd, self._dir_fd = self._dir_fd, None
            self._checked = True
        if dir_fd is not None:
            os.close(dir_fd)

    def read(self, relative: str) -> bytearray | None:
        """The bytes of directory/relative if they can be had without blocking, else None.

        A bytearray, the buffer the kernel copied the file into: making bytes of it would
        copy it again, at the cost of a read of the whole file on a thread.
        """
        dir_fd, libc = self._dir_fd, self._libc
        if dir_fd is None or libc is None or not relative or "\0" in relative:
            return None
        how = _OpenHow(
            # O_NONBLOCK: a FIFO put there must not hold the open until a writer comes.
            os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC,
            0,
            _RESOLVE_BENEATH | _RESOLVE_CACHED | _RESOLVE_NO_MAGICLINKS,
        )
        path = os.fsencode(relative)
        fd = int(libc.syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how)))
        if fd < 0:
            if ctypes.get_errno() == errno.ENOSYS:  # an old kernel, or seccomp: never again
                self.close()
            return None
        try:
            return _read_cached(fd, self.max_bytes)
        finally:
            os.close(fd)


def _read_cached(fd: int, max_bytes: int) -> bytearray | None:
    """The whole regular file behind fd from the page cache, or None."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        return None
    size = info.st_size
    buffer = bytearray(size + 1)  # one byte more: a file that grew is not taken half-read
    view = memoryview(buffer)
    done = 0
    try:
        while done <= size:
            count = os.preadv(fd, [view[done:]], done, os.RWF_NOWAIT)
            if count == 0:
                break
            done += count
    except OSError:  # EAGAIN (not cached), EOPNOTSUPP (no RWF_NOWAIT here), or worse
        return None
    finally:
        view.release()
    if done != size:
        return None
    del buffer[size:]  # one byte less: no copy
    return buffer


def _filesystem_type(libc: ctypes.CDLL, path: str) -> int:
    """statfs(2)'s f_type of the file system path is on."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes; f_type first
    if libc.statfs(os.fsencode(path), buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def _load_libc() -> ctypes.CDLL | None:
    """The C library, where this way of reading can work at all (Linux), else None."""
    if not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "preadv") or not _O_PATH:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        libc.statfs.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
