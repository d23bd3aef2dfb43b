"""Prepare a workflow for ComfyUI: random seeds, and image inputs uploaded by content."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from typing import Any

from agent.fenced_http import FetchError
from agent.inputs import (
    ImageInput,
    InputKind,
    InputValueError,
    content_name,
    plan_image_inputs,
    sniff_image,
)
from agent.url_fetch import UrlFetcher
from agent.workflow import PreparationError, PreparedWorkflow, randomize_seeds
from comfyui.client import ComfyUIClient, ComfyUIError, ComfyUIUnavailable

UPLOAD_CONCURRENCY = 4


class WorkflowPreparer:
    """Turns inline and URL images into uploaded files and fills random seeds."""

    def __init__(
        self,
        client: ComfyUIClient,
        fetcher: UrlFetcher,
        *,
        image_inputs: frozenset[tuple[str, str]],
        max_input_bytes: int,
        rng: random.Random | None = None,
        remembered_uploads: int = 4096,
    ) -> None:
        self._client = client
        self._fetcher = fetcher
        self._specs = image_inputs
        self._max_bytes = max_input_bytes
        self._rng = rng or random.SystemRandom()
        # Names already uploaded to this ComfyUI: the same bytes are not sent twice.
        self._uploaded: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered_uploads

    def check(self, workflow: dict[str, dict[str, Any]]) -> None:
        """Refuse unusable inline images before a task exists (raises InputValueError)."""
        plan_image_inputs(workflow, self._specs, self._max_bytes)

    def forget_uploads(self) -> None:
        """ComfyUI was restarted (its input folder may be new): upload everything again."""
        self._uploaded.clear()

    async def __call__(self, workflow: dict[str, dict[str, Any]]) -> PreparedWorkflow:
        """The workflow to post, with images uploaded and seeds filled."""
        prepared, seeds = randomize_seeds(workflow, self._rng)
        try:
            plan = plan_image_inputs(prepared, self._specs, self._max_bytes)
        except InputValueError as exc:
            raise PreparationError(str(exc), exc.details(), exc.node_id, exc.class_type) from exc
        limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def supply(item: ImageInput) -> None:
            async with limit:
                name = await self._supply(item)
            prepared[item.node_id]["inputs"][item.input_name] = name

        await asyncio.gather(*(supply(item) for item in plan))
        return PreparedWorkflow(prepared, seeds)

    async def _supply(self, item: ImageInput) -> str:
        data, extension = item.data, item.extension
        if item.kind is InputKind.URL:
            try:
                fetched = await self._fetcher.fetch(item.value)
            except FetchError as exc:
                raise _failure(item, str(exc)) from exc
            sniffed = sniff_image(fetched.data)
            if sniffed is None:
                raise _failure(item, f"{item.value} did not return an image")
            data, extension = fetched.data, sniffed[1]
        assert data is not None and extension is not None
        name = content_name(data, extension)
        if name in self._uploaded:
            self._uploaded.move_to_end(name)
            return name
        try:
            await self._client.upload_image(data, name, overwrite=True)
        except ComfyUIUnavailable:
            raise  # ComfyUI down: worth a retry, not the input's fault
        except ComfyUIError as exc:
            raise _failure(item, f"ComfyUI refused the upload: {exc}") from exc
        self._uploaded[name] = None
        if len(self._uploaded) > self._remembered:
            self._uploaded.popitem(last=False)
        return name


def _failure(item: ImageInput, reason: str) -> PreparationError:
    error = item.error(reason)
    return PreparationError(str(error), error.details(), item.node_id, item.class_type)
