"""Output files of a sync run are read as soon as ComfyUI reports them written (their
`executed` event), while the rest of the workflow still runs, and each only once."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

from agent.answer_json import Base64Text
from agent.results import EncodedFiles
from store.records import NodeProgress, OutputFile, TaskRecord, TaskStatus
from tests.agent_harness import running_agent
from tests.test_agent_api import post_run


class CountingSource:
    """A FileSource that hands out fixed bytes and counts what it was asked for."""

    def __init__(self, fail: set[str] | None = None, hold: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()
        self.hold = hold or set()

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        self.calls.append(filename)
        await asyncio.sleep(0)
        if filename in self.hold:
            await asyncio.Event().wait()
        if filename in self.fail:
            raise OSError(f"cannot read {filename}")
        return filename.encode()


def record_with(files: dict[str, list[str]]) -> TaskRecord:
    record = TaskRecord(task_id="t", status=TaskStatus.SUCCEEDED, instance="a")
    record.progress = {
        node_id: NodeProgress(images=[OutputFile(filename=name) for name in names])
        for node_id, names in files.items()
    }
    return record


async def test_a_file_started_early_is_read_once_and_answered_in_recorded_order() -> None:
    source = CountingSource()
    files = EncodedFiles(source)
    files.start(OutputFile(filename="b.png"))
    files.start(OutputFile(filename="b.png"))
    results = await files.of_record(record_with({"9": ["a.png", "b.png"], "3": []}))
    encoded = [Base64Text.encode(name) for name in (b"a.png", b"b.png")]
    assert results == {"9": encoded}
    assert sorted(source.calls) == ["a.png", "b.png"]


async def test_files_nobody_needs_any_more_are_dropped_without_errors() -> None:
    source = CountingSource(fail={"bad.png"}, hold={"slow.png"})
    files = EncodedFiles(source)
    failed = files.start(OutputFile(filename="bad.png"))
    pending = files.start(OutputFile(filename="slow.png"))
    await asyncio.wait([failed])
    files.close()
    await asyncio.sleep(0)
    assert pending.cancelled() and isinstance(failed.exception(), OSError)


def branching_prompt(marker: str) -> dict[str, Any]:
    """One SaveImage right after the EmptyImage, another behind a 0.4 s SlowCounter."""
    color = uuid.uuid4().int % 0xFFFFFF
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SlowCounter", "inputs": {"image": ["1", 0], "steps": 20}},
        "8": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": f"early_{marker}"},
        },
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": f"late_{marker}"},
        },
    }


async def test_a_sync_run_reads_each_output_once_and_early_ones_before_it_ends(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path) as agent:
        services = agent.services
        assert services.output_files is not None
        files = services.output_files
        original_view, original_read_soon = files.view, files.read_soon
        reads: list[tuple[str, bool]] = []

        def note(filename: str) -> None:
            running = any(not h.ended.is_set() for h in services.runner.active.values())
            reads.append((filename, running))

        async def view(filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
            note(filename)
            return await original_view(filename, subfolder, file_type)

        def read_soon(file: OutputFile) -> asyncio.Future[bytes | None] | None:
            note(file.filename)
            return original_read_soon(file)

        files.view = view  # type: ignore[method-assign]
        files.read_soon = read_soon  # type: ignore[method-assign]
        marker = uuid.uuid4().hex[:6]
        status, _, body = await post_run(agent, branching_prompt(marker))
    assert status == 200, body
    names = [name for name, _ in reads]
    assert len(names) == len(set(names)) == 2, reads
    assert dict(reads)[next(n for n in names if n.startswith(f"early_{marker}"))] is True
    for node_id in ("8", "9"):
        (encoded,) = body[node_id]["results"]
        assert base64.b64decode(encoded).startswith(b"\x89PNG")
