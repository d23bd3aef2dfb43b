"""Inline output files into sync answers: base64 (standard alphabet, padded) per node."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

from agent.answer_json import Base64Text
from agent.delivery.image_format import ImageFormat
from store.records import OutputFile, TaskRecord


@runtime_checkable
class ReadsAhead(Protocol):
    """A FileSource that can start reading a file at once (on a thread), not on its turn."""

    def read_soon(self, file: OutputFile) -> asyncio.Future[bytes | bytearray | None] | None:
        """The file's bytes being read already; None when it must be viewed instead."""
        ...


class FileSource(Protocol):
    """Hands out output files by ComfyUI's (filename, subfolder, type): /view or the disk."""

    async def view(
        self, filename: str, subfolder: str = "", file_type: str = "output"
    ) -> bytes | bytearray:
        """The file's bytes."""
        ...


class EncodedFiles:
    """Output files read and base64-encoded, each once, starting as soon as it is known.

    A run's files can be started while ComfyUI is still busy (its `executed` event names
    them once they are written), so the answer need not wait for them after the end.
    """

    def __init__(
        self,
        source: FileSource,
        *,
        concurrency: int = 4,
        image_format: ImageFormat | None = None,
    ) -> None:
        self._source = source
        self._limit = asyncio.Semaphore(concurrency)
        self._image_format = image_format
        self._jobs: dict[tuple[str, str, str], asyncio.Future[Base64Text]] = {}

    def start(self, file: OutputFile) -> asyncio.Future[Base64Text]:
        """Begin reading file (once); its base64 is the future's result."""
        key = (file.filename, file.subfolder, file.type)
        job = self._jobs.get(key)
        if job is None:
            # Started on a thread right now: the run that reported the file is still busy
            # on the event loop (its end arrives right behind its last file).
            early = self._source.read_soon(file) if isinstance(self._source, ReadsAhead) else None
            job = asyncio.ensure_future(self._encode(*key, early))
            self._jobs[key] = job
        return job

    async def of_record(self, record: TaskRecord) -> dict[str, list[Base64Text]]:
        """Node id -> base64 of each of its output files, in the order they were recorded."""
        results: dict[str, list[Base64Text]] = {}
        for node_id, node in record.progress.items():
            if node.images:
                jobs = [self.start(file) for file in node.images]
                results[node_id] = list(await asyncio.gather(*jobs))
        return results

    def close(self) -> None:
        """Drop what was started and is not needed any more (the run failed, say)."""
        for job in self._jobs.values():
            if not job.done():
                job.cancel()
            elif not job.cancelled():
                job.exception()  # retrieved: a failed read nobody awaits is not an error

    async def _encode(
        self,
        filename: str,
        subfolder: str,
        file_type: str,
        early: asyncio.Future[bytes | bytearray | None] | None,
    ) -> Base64Text:
        data = await early if early is not None else None
        if data is None:
            async with self._limit:
                data = await self._source.view(filename, subfolder, file_type)
        image_format = self._image_format
        if image_format is not None and image_format.applies_to(filename):
            converted = await asyncio.to_thread(image_format.convert_bytes, data)
            data = converted if converted is not None else data
        return Base64Text.encode(data)


async def fetch_results(
    client: FileSource,
    record: TaskRecord,
    *,
    concurrency: int = 4,
    image_format: ImageFormat | None = None,
    started: EncodedFiles | None = None,
) -> dict[str, list[Base64Text]]:
    """Node id -> base64 of each of its output files, in the order they were recorded.

    With image_format, still images are converted (a copy; the file stays as it is).
    started: the files of this record already being read (the run's own, see EncodedFiles).
    """
    if started is not None:
        return await started.of_record(record)
    files = EncodedFiles(client, concurrency=concurrency, image_format=image_format)
    try:
        return await files.of_record(record)
    finally:
        files.close()


def progress_with_results(
    record: TaskRecord, results: dict[str, list[Base64Text]] | None
) -> dict[str, dict[str, Any]]:
    """The progress map, with `results` on nodes that have files (the Go agent's answer)."""
    progress = record.progress_map()
    for node_id, encoded in (results or {}).items():
        if node_id in progress:
            progress[node_id]["results"] = encoded
    return progress
