"""Output files read from ComfyUI's output directory, with /view as the fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyui.output_files import LocalOutputs, local_path, output_directory


def test_output_directory_of_a_command() -> None:
    cwd = Path("/srv/app")
    main = ["python", "/c/main.py", "--port", "9001"]
    assert output_directory(main, cwd) == Path("/c/output")
    assert output_directory(["python", "main.py"], "/c") == Path("/c/output")
    assert output_directory([*main, "--output-directory", "/o"], cwd) == Path("/o")
    assert output_directory([*main, "--output-directory=rel"], cwd) == Path("/srv/app/rel")
    assert output_directory([*main, "--base-directory", "/b"], cwd) == Path("/b/output")
    # --output-directory wins over --base-directory, whatever the order.
    both = [*main, "--output-directory", "/o", "--base-directory", "/b"]
    assert output_directory(both, cwd) == Path("/o")
    assert output_directory(["comfy", "launch"], cwd) is None


def test_only_plain_output_files_are_read_locally(tmp_path: Path) -> None:
    assert local_path(tmp_path, "a.png", "", "output") == tmp_path / "a.png"
    assert local_path(tmp_path, "a.png", "sub/dir", "output") == tmp_path / "sub/dir/a.png"
    assert local_path(tmp_path, "a.png", "", "temp") is None
    assert local_path(tmp_path, "a.png", "", "input") is None
    assert local_path(tmp_path, "../a.png", "", "output") is None
    assert local_path(tmp_path, "/etc/passwd", "", "output") is None
    assert local_path(tmp_path, "", "", "output") is None
    assert local_path(tmp_path, "a.png", "../x", "output") is None
    assert local_path(tmp_path, "a.png", "/etc", "output") is None


@given(filename=st.text(max_size=20), subfolder=st.text(max_size=20))
def test_no_name_leaves_the_directory(filename: str, subfolder: str) -> None:
    root = Path("/srv/out")
    try:
        path = local_path(root, filename, subfolder, "output")
    except ValueError:  # NUL characters: os.path refuses them, as ComfyUI's /view does
        return
    if path is not None:
        assert str(path).startswith("/srv/out/") or path.parent == root


class Fallback:
    """Stands for ComfyUI's /view."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        self.asked.append((filename, subfolder, file_type))
        return b"from-view"


async def test_local_files_are_read_and_others_asked_for(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"local")
    fallback = Fallback()
    outputs = LocalOutputs(tmp_path, fallback)
    assert await outputs.view("a.png", "sub", "output") == b"local"
    assert fallback.asked == []
    assert await outputs.view("missing.png", "", "output") == b"from-view"
    assert await outputs.view("a.png", "sub", "temp") == b"from-view"
    assert await outputs.view("sub", "", "output") == b"from-view"  # a directory
    assert fallback.asked == [
        ("missing.png", "", "output"),
        ("a.png", "sub", "temp"),
        ("sub", "", "output"),
    ]


@pytest.mark.parametrize("name", ["../secret", "..", "/etc/hostname"])
async def test_escaping_names_go_to_view(tmp_path: Path, name: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    fallback = Fallback()
    assert await LocalOutputs(tmp_path / "out", fallback).view(name) == b"from-view"
