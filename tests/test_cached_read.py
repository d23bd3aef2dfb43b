"""CachedReader: files under a directory read on the loop only when the kernel can hand
them over without blocking, and never a file the thread path would refuse."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.delivery import cached_read
from agent.delivery.cached_read import CachedReader
from agent.delivery.output_files import OutputFiles
from comfyui.client import ComfyUIClient
from store.records import OutputFile


def _ready_reader(directory: Path, **kwargs: Any) -> CachedReader:
    reader = CachedReader(str(directory), **kwargs)
    reader.prepare()
    if not reader.ready:
        pytest.skip("no cached reads here: not Linux >= 5.12, or the temp dir is not local")
    return reader


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output directory with files, a subfolder, and links that stay in or lead out."""
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "a.png").write_bytes(b"top")
    (root / "empty.png").write_bytes(b"")
    (root / "sub" / "b.png").write_bytes(b"nested")
    (root / "inside").symlink_to("sub/b.png")
    (root / "outside").symlink_to("../secret.txt")
    (root / "absolute").symlink_to(tmp_path / "secret.txt")
    (root / "sublink").symlink_to("sub")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture
def reader(out: Path) -> Iterator[CachedReader]:
    found = _ready_reader(out)
    yield found
    found.close()


def test_reads_files_and_perhaps_links_that_stay_inside(reader: CachedReader) -> None:
    assert reader.read("a.png") == b"top"
    assert reader.read("empty.png") == b""
    assert reader.read("sub/b.png") == b"nested"
    assert reader.read("sub/../a.png") == b"top"
    # Following a link may need more than the kernel's lookup cache: then the thread reads.
    assert reader.read("inside") in (b"nested", None)
    assert reader.read("sublink/b.png") in (b"nested", None)


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",  # leaves the directory
        "sub/../../secret.txt",
        "outside",  # a link that leads out
        "absolute",
        "/etc/hostname",  # absolute names
        "missing.png",
        "sub",  # not a file
        "fifo",  # not a regular file: and the open must not wait for a writer
        "",
        "a.png\0.txt",
    ],
)
def test_refuses_what_it_must_not_or_cannot_read(reader: CachedReader, name: str) -> None:
    assert reader.read(name) is None


def test_files_over_the_limit_are_left_to_the_thread(out: Path) -> None:
    (out / "big.png").write_bytes(b"x" * 101)
    reader = _ready_reader(out, max_bytes=100)
    assert reader.read("a.png") == b"top"
    assert reader.read("big.png") is None


def test_a_file_not_in_the_page_cache_is_left_to_the_thread(
    reader: CachedReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_cached(fd: int, buffers: list[memoryview], offset: int, flags: int) -> int:
        assert flags & os.RWF_NOWAIT
        raise BlockingIOError(errno.EAGAIN, "not cached")

    monkeypatch.setattr(cached_read.os, "preadv", not_cached)
    assert reader.read("a.png") is None


def test_a_file_that_grew_since_its_size_was_read_is_not_taken_half_read(
    reader: CachedReader, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fstat = os.fstat

    def shrunk(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[6] -= 1  # st_size, as if it was taken before the last byte came
        return os.stat_result(fields)

    monkeypatch.setattr(cached_read.os, "fstat", shrunk)
    assert reader.read("a.png") is None


def test_not_local_file_systems_are_never_read_on_the_loop(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cached_read, "LOCAL_FILESYSTEMS", frozenset())
    reader = CachedReader(str(out))
    reader.prepare()
    assert not reader.ready
    assert reader.read("a.png") is None


def test_a_directory_made_later_is_prepared_on_a_later_call(tmp_path: Path) -> None:
    reader = CachedReader(str(tmp_path / "later"))
    reader.prepare()
    assert not reader.ready
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "a.png").write_bytes(b"late")
    reader.prepare()
    if not reader.ready:
        pytest.skip("no cached reads here")
    assert reader.read("a.png") == b"late"
    reader.close()
    assert not reader.ready
    assert reader.read("a.png") is None
    reader.prepare()  # closed for good
    assert not reader.ready


def test_a_kernel_without_openat2_stops_the_cached_reads(
    reader: CachedReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoOpenat2:
        def syscall(self, *args: Any) -> int:
            ctypes.set_errno(errno.ENOSYS)
            return -1

    monkeypatch.setattr(reader, "_libc", NoOpenat2())
    assert reader.read("a.png") is None
    assert not reader.ready


_PARTS = st.sampled_from(
    ["a.png", "sub", "b.png", "..", ".", "inside", "outside", "absolute", "sublink", "fifo"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PARTS, min_size=1, max_size=4), leading_slash=st.booleans())
def test_never_reads_what_the_thread_path_refuses(
    reader: CachedReader, out: Path, parts: list[str], leading_slash: bool
) -> None:
    name = ("/" if leading_slash else "") + "/".join(parts)
    subfolder, _, filename = name.rpartition("/")
    slow = OutputFiles(cast(ComfyUIClient, None), out)
    path = slow.in_output_dir(OutputFile(filename=filename, subfolder=subfolder))
    fast = reader.read(name)
    if fast is not None:
        assert path is not None and path.read_bytes() == fast
