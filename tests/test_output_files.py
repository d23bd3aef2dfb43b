"""OutputFiles.view: output files read from ComfyUI's output directory, /view otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from agent.delivery.output_files import OutputFiles
from comfyui.client import ComfyUIClient
from store.records import OutputFile


class View:
    """Stands for ComfyUI's GET /view."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        self.asked.append((filename, subfolder, file_type))
        return b"from-view"


def files(directory: Path | None, view: View) -> OutputFiles:
    return OutputFiles(cast(ComfyUIClient, cast(Any, view)), directory)


async def test_local_output_files_are_read_from_disk(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"local")
    (tmp_path / "b.png").write_bytes(b"top")
    view = View()
    outputs = files(tmp_path, view)
    assert await outputs.view("a.png", "sub", "output") == b"local"
    assert await outputs.view("b.png") == b"top"
    assert view.asked == []


async def test_everything_else_goes_to_view(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "out" / "a.png").write_bytes(b"local")
    view = View()
    outputs = files(tmp_path / "out", view)
    asked = [
        ("missing.png", "", "output"),  # not (or not yet) on this machine
        ("a.png", "", "temp"),  # temp and input files: ComfyUI knows where they are
        ("sub", "", "output"),  # a directory
        ("../secret", "", "output"),  # names that would leave the directory
        ("secret", "..", "output"),
    ]
    for filename, subfolder, file_type in asked:
        assert await outputs.view(filename, subfolder, file_type) == b"from-view"
    assert view.asked == asked


@pytest.mark.parametrize("directory", [None])
async def test_without_an_output_directory_everything_goes_to_view(directory: None) -> None:
    view = View()
    assert await files(directory, view).view("a.png") == b"from-view"
    assert view.asked == [("a.png", "", "output")]


async def test_read_soon_takes_cached_files_at_once_and_counts_how(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"local")
    ways: list[str] = []
    view = View()
    outputs = OutputFiles(cast(ComfyUIClient, cast(Any, view)), tmp_path, on_read=ways.append)
    file = OutputFile(filename="a.png")
    # Before the directory was looked at (on a thread), the read goes to a thread.
    first = outputs.read_soon(file)
    assert first is not None
    assert await first == b"local"
    assert ways == ["thread"]
    second = outputs.read_soon(file)
    assert second is not None
    if outputs.cached is None or not outputs.cached.ready:
        pytest.skip("no cached reads here: not Linux >= 5.12, or the temp dir is not local")
    assert second.done()  # read on the loop: no thread to wait for
    assert await second == b"local"
    assert await outputs.view("a.png") == b"local"
    assert ways == ["thread", "cache", "cache"]
    missing = outputs.read_soon(OutputFile(filename="missing.png"))
    assert missing is not None and await missing is None
    assert ways[-1] == "thread"
    assert outputs.read_soon(OutputFile(filename="a.png", type="temp")) is None
    outputs.close()
    after = outputs.read_soon(file)
    assert after is not None and await after == b"local"
    assert ways[-1] == "thread"
    assert view.asked == []


async def test_start_prepares_the_cached_reads(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"local")
    ways: list[str] = []
    outputs = OutputFiles(cast(ComfyUIClient, None), tmp_path, on_read=ways.append)
    await outputs.start()
    if outputs.cached is None or not outputs.cached.ready:
        pytest.skip("no cached reads here: not Linux >= 5.12, or the temp dir is not local")
    assert await outputs.view("a.png") == b"local"
    assert ways == ["cache"]
    outputs.close()
    await OutputFiles(cast(ComfyUIClient, None), None).start()  # nothing to prepare
