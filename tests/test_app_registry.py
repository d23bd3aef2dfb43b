"""The apps directory: loading, re-reading on change, broken files (agent/apps/registry.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.apps.parse import AppProblem
from agent.apps.registry import AppRegistry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "apps"


def app_object(title: str = "Cats", **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}},
        "params": [{"type": "number", "id": "1", "key": "width", "min": 1}],
        **extra,
    }


def write(path: Path, document: Any) -> None:
    path.write_text(document if isinstance(document, str) else json.dumps(document))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_no_directory_means_no_apps() -> None:
    assert await AppRegistry(None).apps() == {}


async def test_missing_directory_is_no_apps_until_it_appears(tmp_path: Path) -> None:
    directory = tmp_path / "apps"
    registry = AppRegistry(directory, rescan=0)
    assert await registry.apps() == {}
    directory.mkdir()
    write(directory / "cats.json", app_object())
    assert list(await registry.apps()) == ["cats"]


async def test_files_load_in_name_order_and_others_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "b.json", app_object())
    write(tmp_path / "a.json", [app_object(), app_object()])
    write(tmp_path / ".a.json.swp.json", app_object())  # an editor's temp copy
    write(tmp_path / "notes.txt", "not an app")
    (tmp_path / "dir.json").mkdir()
    registry = AppRegistry(tmp_path, rescan=0)
    assert list(await registry.apps()) == ["a-1", "a-2", "b"]
    assert registry.problems == []


async def test_added_changed_and_removed_files_are_seen_without_restart(tmp_path: Path) -> None:
    clock = Clock()
    registry = AppRegistry(tmp_path, rescan=2.0, clock=clock)
    assert await registry.apps() == {}
    write(tmp_path / "cats.json", app_object("One"))
    assert await registry.apps() == {}  # scanned less than 2 s ago
    clock.now = 2.0
    apps = await registry.apps()
    assert apps["cats"].title == "One"
    write(tmp_path / "cats.json", app_object("Two, longer"))
    clock.now = 4.0
    assert (await registry.get("cats")).title == "Two, longer"  # type: ignore[union-attr]
    (tmp_path / "cats.json").unlink()
    clock.now = 6.0
    assert await registry.get("cats") is None


async def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "cats.json"
    write(path, app_object("Same"))
    registry = AppRegistry(tmp_path, rescan=0)
    first = await registry.get("cats")
    second = await registry.get("cats")
    assert first is second  # the parsed object is reused
    stat = path.stat()
    write(path, app_object("Diff"))  # same size, same mtime: taken as unchanged
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (await registry.get("cats")) is first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert (await registry.get("cats")).title == "Diff"  # type: ignore[union-attr]


async def test_broken_file_is_skipped_logged_once_and_counted(tmp_path: Path, caplog: Any) -> None:
    seen: list[AppProblem] = []
    write(tmp_path / "good.json", app_object())
    write(tmp_path / "bad.json", "{oops")
    registry = AppRegistry(tmp_path, rescan=0, on_problem=seen.append)
    assert list(await registry.apps()) == ["good"]
    await registry.apps()
    assert len(seen) == 1
    assert seen[0].source == "bad.json"
    assert "bad.json" in caplog.text and "not valid JSON" in caplog.text
    assert len(registry.problems) == 1
    write(tmp_path / "bad.json", app_object())
    os.utime(tmp_path / "bad.json", ns=(1, 10**18))
    assert sorted(await registry.apps()) == ["bad", "good"]
    assert registry.problems == []


async def test_duplicate_ids_keep_the_first_file(tmp_path: Path) -> None:
    seen: list[AppProblem] = []
    write(tmp_path / "a.json", app_object("A", id="same"))
    write(tmp_path / "b.json", app_object("B", id="same"))
    registry = AppRegistry(tmp_path, rescan=0, on_problem=seen.append)
    apps = await registry.apps()
    assert apps["same"].title == "A"
    assert [p.source for p in seen] == ["b.json"]
    assert "already used by a.json" in seen[0].message


async def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    write(path, app_object())
    path.chmod(0)
    write(tmp_path / "ok.json", app_object())
    registry = AppRegistry(tmp_path, rescan=0)
    try:
        apps = await registry.apps()
    finally:
        path.chmod(0o644)
    assert "ok" in apps
    if os.geteuid() != 0:  # root reads anything
        assert registry.problems and registry.problems[0].source == "secret.json"


async def test_the_example_apps_load_without_problems() -> None:
    registry = AppRegistry(EXAMPLES, rescan=0)
    apps = await registry.apps()
    assert registry.problems == []
    assert set(apps) == {"txt2img", "img2img"}
    assert {"6.text", "3.steps", "3.sampler_name", "3.seed"} <= set(apps["txt2img"].parameters)
    assert apps["img2img"].parameters["10.image"].type == "image"
