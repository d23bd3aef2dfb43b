"""Inline output files into sync answers: base64 (standard alphabet, padded) per node."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Protocol

from agent.delivery.image_format import ImageFormat
from store.records import TaskRecord


class FileSource(Protocol):
    """Hands out output files by ComfyUI's (filename, subfolder, type): /view or the disk."""

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        """The file's bytes."""
        ...


async def fetch_results(
    client: FileSource,
    record: TaskRecord,
    *,
    concurrency: int = 4,
    image_format: ImageFormat | None = None,
) -> dict[str, list[str]]:
    """Node id -> base64 of each of its output files, in the order they were recorded.

    With image_format, still images are converted (a copy; the file stays as it is).
    """
    limit = asyncio.Semaphore(concurrency)

    async def fetch(filename: str, subfolder: str, file_type: str) -> str:
        async with limit:
            data = await client.view(filename, subfolder, file_type)
        if image_format is not None and image_format.applies_to(filename):
            converted = await asyncio.to_thread(image_format.convert_bytes, data)
            data = converted if converted is not None else data
        return base64.b64encode(data).decode("ascii")

    results: dict[str, list[str]] = {}
    for node_id, node in record.progress.items():
        if not node.images:
            continue
        jobs = [fetch(f.filename, f.subfolder, f.type) for f in node.images]
        results[node_id] = list(await asyncio.gather(*jobs))
    return results


def progress_with_results(
    record: TaskRecord, results: dict[str, list[str]] | None
) -> dict[str, dict[str, Any]]:
    """The progress map, with `results` on nodes that have files (the Go agent's answer)."""
    progress = record.progress_map()
    for node_id, encoded in (results or {}).items():
        if node_id in progress:
            progress[node_id]["results"] = encoded
    return progress
