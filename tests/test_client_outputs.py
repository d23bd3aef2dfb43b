"""Output files of a run and their local names: agent/client/outputs.py."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.client.outputs import (
    OutputFile,
    candidate_names,
    local_name,
    output_files,
    save_new_file,
)


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("ComfyUI_00001_.png", "ComfyUI_00001_.png"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path.png", "path.png"),
        ("sub\\dir\\a.png", "a.png"),
        ("..", "output"),
        (".", "output"),
        ("", "output"),
        ("dir/", "output"),
        ("a\x00b.png", "ab.png"),
        (" spaced.png ", "spaced.png"),
    ],
)
def test_local_names_are_plain_names_in_the_folder(filename: str, name: str) -> None:
    assert local_name(filename) == name


@given(st.text())
def test_any_name_stays_inside_the_folder(filename: str) -> None:
    name = local_name(filename)
    assert name and "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..")
    assert (Path("/out") / name).parent == Path("/out")


def test_candidates_add_a_counter_before_the_extension() -> None:
    names = list(itertools.islice(candidate_names("ComfyUI_00001_.png"), 4))
    assert names == [
        "ComfyUI_00001_.png",
        "ComfyUI_00001_-1.png",
        "ComfyUI_00001_-2.png",
        "ComfyUI_00001_-3.png",
    ]
    assert list(itertools.islice(candidate_names("clip"), 2)) == ["clip", "clip-1"]
    assert list(itertools.islice(candidate_names(".png"), 2)) == [".png", ".png-1"]
    assert list(itertools.islice(candidate_names("a.tar.gz"), 2)) == ["a.tar.gz", "a.tar-1.gz"]


@given(st.text(), st.integers(1, 30))
def test_candidates_are_distinct(filename: str, count: int) -> None:
    names = list(itertools.islice(candidate_names(filename), count))
    assert len(set(names)) == count
    assert names[0] == local_name(filename)


def test_saving_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "new" / "outputs"
    first = save_new_file(out, "a.png", b"one")
    second = save_new_file(out, "a.png", b"two")
    (out / "a-2.png").write_bytes(b"someone else's")
    third = save_new_file(out, "a.png", b"three")
    assert [first.name, second.name, third.name] == ["a.png", "a-1.png", "a-3.png"]
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]
    assert (out / "a-2.png").read_bytes() == b"someone else's"
    assert save_new_file(out, "../escape.png", b"x") == out / "escape.png"


def test_output_files_of_a_final_map_in_node_order() -> None:
    png = b"\x89PNG fake"
    progress = {
        "10": {"images": [{"filename": "v.mp4", "subfolder": "video", "type": "output"}]},
        "9": {
            "images": [
                {"filename": "a.png", "subfolder": "", "type": "output"},
                {"filename": "b.png", "subfolder": "", "type": "temp"},
            ],
            "results": [base64.b64encode(png).decode(), "%%not base64%%"],
        },
        "1": {"images": None},
        "2": {"images": [{"subfolder": ""}, "junk"]},
        "3": "junk",
    }
    assert output_files(progress) == [
        OutputFile("9", "a.png", "", "output", png),
        OutputFile("9", "b.png", "", "temp", None),
        OutputFile("10", "v.mp4", "video", "output", None),
    ]
    assert output_files({}) == []
