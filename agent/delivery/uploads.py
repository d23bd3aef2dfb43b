"""Upload every output file of a task to an output store: bounded parallelism, retries."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.delivery.image_format import ImageFormat
from agent.delivery.metrics import DeliveryMetrics
from agent.delivery.output_files import OutputFiles
from agent.delivery.output_store import OutputStore, OutputStoreError
from comfyui.client import ComfyUIError
from store.records import OutputFile, TaskRecord

log = logging.getLogger("agent.uploads")


class UploadFailed(Exception):
    """An output file could not be uploaded after every attempt."""

    def __init__(self, file_name: str, reason: str) -> None:
        super().__init__(f"upload of {file_name} failed: {reason}")
        self.file_name = file_name
        self.reason = reason


@dataclass
class Uploader:
    """Uploads tasks' output files; `concurrency` files at once, `attempts` tries each."""

    files: OutputFiles
    metrics: DeliveryMetrics
    concurrency: int = 4
    attempts: int = 4
    backoff: float = 0.5
    sleep: Callable[[float], Any] = asyncio.sleep

    async def upload_task(
        self,
        store: OutputStore,
        record: TaskRecord,
        *,
        image_format: ImageFormat | None = None,
        presign: float = 0,
    ) -> dict[str, list[str]]:
        """Node id -> URL of each of its files (same order as `images`); UploadFailed if any fails.

        URLs are `s3://bucket/key`, or presigned GET URLs valid for `presign` s when > 0.
        """
        limit = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()

        async def one(file: OutputFile) -> str:
            async with limit:
                key = await self._upload_one(store, record, file, image_format)
            if presign > 0:
                return await store.presign(key, presign)
            return store.uri(key)

        nodes = [(node_id, node.images) for node_id, node in record.progress.items() if node.images]
        jobs = [asyncio.gather(*(one(file) for file in images)) for _, images in nodes]
        try:
            results = await asyncio.gather(*jobs)
        except OutputStoreError as exc:  # signing failed
            raise UploadFailed("(presigning)", str(exc)) from None
        self.metrics.upload_seconds.observe(time.monotonic() - started)
        return {node_id: list(urls) for (node_id, _), urls in zip(nodes, results, strict=True)}

    async def _upload_one(
        self,
        store: OutputStore,
        record: TaskRecord,
        file: OutputFile,
        image_format: ImageFormat | None,
    ) -> str:
        """Upload one file (with retries); its key."""
        shown = f"{file.subfolder}/{file.filename}" if file.subfolder else file.filename
        extra = {"task_id": record.task_id, "prompt_id": record.prompt_id}
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.files.staged(file, image_format) as local:
                    name = f"{file.subfolder}/{local.name}" if file.subfolder else local.name
                    key = store.key_for(record.task_id, name)
                    size = (await asyncio.to_thread(local.path.stat)).st_size
                    await store.upload(key, local.path, local.content_type)
            except (OutputStoreError, ComfyUIError, OSError) as exc:
                retryable = getattr(exc, "retryable", True)
                if not retryable or attempt == self.attempts:
                    self.metrics.uploads["failed"] += 1
                    raise UploadFailed(shown, str(exc)) from None
                self.metrics.uploads["retried"] += 1
                log.warning(
                    "task %s: upload of %s, attempt %d/%d failed: %s; retrying",
                    record.task_id, shown, attempt, self.attempts, exc, extra=extra,
                )  # fmt: skip
                await self.sleep(random.uniform(delay / 2, delay))
                delay *= 2
                continue
            self.metrics.uploads["uploaded"] += 1
            self.metrics.upload_bytes += size
            log.info(
                "task %s: uploaded %s (%d bytes) to %s",
                record.task_id, shown, size, store.uri(key), extra=extra,
            )  # fmt: skip
            return key
        raise AssertionError("unreachable")  # the loop returns or raises
